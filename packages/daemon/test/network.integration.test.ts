// User-mode networking with real microVMs: every guest has the same address,
// gateway and DNS. The daemon runs in a network namespace this test makes
// (test-networks.ts), so the guest's traffic goes to a public-range address
// served from a second one, never to an outside address. Egress off really
// blocks (the server sees no request), and the setting holds across runtime
// switches, warm-pool claims, cold boots, pause/resume and fork.
import type { SetNetworkRequest } from '@capsule/protocol';
import { describe, expect } from 'vitest';
import { eventually, sandboxTest } from './fixture.js';
import { daemonInTestNetworks, HOST_UPLINK, HTTP_PORT, OUTSIDE } from './test-networks.js';

describe.skipIf(process.getuid?.() !== 0)('user-mode networking (real QEMU microVM, root, test network namespaces)', () => {
  const { networks, daemon } = daemonInTestNetworks('user-net', 8081);
  const server = networks.outside;
  const it = sandboxTest(daemon);
  const url = `http://${OUTSIDE}:${HTTP_PORT}/`;

  const exec = (id: string, cmd: string[]) => daemon.api.exec(id, cmd);
  const setNetwork = (id: string, body: SetNetworkRequest) => daemon.api.setNetwork(id, body);
  /** Whether the guest got the server's answer; a blocked request must also never reach the server. */
  const reachesOutside = async (id: string): Promise<boolean> => {
    const before = server.lines.length;
    const result = await exec(id, ['curl', '-sS', '--max-time', '4', url]);
    if (result.exitCode === 0) {
      expect(result.stdout).toBe('outside');
      return true;
    }
    expect(server.lines.length, 'a request the guest could not complete reached the server').toBe(before);
    return false;
  };
  // Switching a network on reaches the guest asynchronously (its driver raises the carrier, then it
  // resolves the gateway again after the failed attempts of the off period): the server must become
  // reachable within a bound.
  const becomesReachable = (id: string) =>
    eventually(async () => ((await reachesOutside(id)) ? true : undefined), 30_000, `${id} reaching the outside server`);

  it('gives the guest its address, gateway and DNS, and reaches the internet through the gateway', async ({ sandbox }) => {
    expect((await daemon.api.info()).network).toBe('user');
    expect(sandbox.network).toMatchObject({
      mode: 'user',
      internet: true,
      guestAddress: '10.0.2.15/24',
      gateway: '10.0.2.2',
      dns: '10.0.2.3',
    });
    expect((await exec(sandbox.id, ['cat', '/etc/resolv.conf'])).stdout).toBe('nameserver 10.0.2.3\n');
    expect((await exec(sandbox.id, ['ip', '-4', '-o', 'addr', 'show', 'scope', 'global'])).stdout).toContain('inet 10.0.2.15/24');
    expect((await exec(sandbox.id, ['ip', 'route', 'show', 'default'])).stdout).toContain('default via 10.0.2.2');
    expect(await reachesOutside(sandbox.id)).toBe(true);
    // slirp's connections leave the daemon's namespace masqueraded to the host's address.
    expect(new Set(server.lines)).toEqual(new Set([HOST_UPLINK]));
  });

  it('switches egress off and on at runtime, and the guest cannot raise a link the host holds down', async ({ sandbox }) => {
    expect(await reachesOutside(sandbox.id)).toBe(true);

    expect((await setNetwork(sandbox.id, { internet: false })).network.internet).toBe(false);
    expect(await reachesOutside(sandbox.id)).toBe(false);
    // The guest sees its link down, and bouncing it from inside changes nothing.
    const nic = (await exec(sandbox.id, ['sh', '-c', "ip -o link | awk -F': ' '/52:54:00:c0:ff:ee/ {print $2}'"])).stdout.trim();
    expect(nic).not.toBe('');
    expect((await exec(sandbox.id, ['cat', `/sys/class/net/${nic}/carrier`])).stdout.trim()).toBe('0');
    // Taking the link down drops the guest's default route; it puts it back, as its own init would.
    await exec(sandbox.id, ['sh', '-c', `ip link set ${nic} down; ip link set ${nic} up; ip route replace default via 10.0.2.2`]);
    expect(await reachesOutside(sandbox.id)).toBe(false);
    expect((await daemon.api.sandbox(sandbox.id)).network.internet).toBe(false);

    expect((await setNetwork(sandbox.id, { internet: true })).network.internet).toBe(true);
    await becomesReachable(sandbox.id);
    expect((await setNetwork(sandbox.id, { internet: false })).network.internet).toBe(false);
    expect(await reachesOutside(sandbox.id)).toBe(false);
  });

  it('creates sandboxes without internet from the warm pool and cold, each with the same guest address', async ({ newSandbox }) => {
    const pooled = await newSandbox({ internet: false });
    expect(pooled.network.internet).toBe(false);
    // Other resources than the template's make a cold boot, with the NIC configured by the guest's init.
    const cold = await newSandbox({ internet: false, memoryMiB: 384 });
    const open = await newSandbox();
    for (const sandbox of [pooled, cold]) expect(await reachesOutside(sandbox.id), sandbox.id).toBe(false);
    expect(await reachesOutside(open.id)).toBe(true);
    await setNetwork(cold.id, { internet: true });
    await becomesReachable(cold.id);

    const addresses = await Promise.all(
      [pooled, cold, open].map(async (s) => (await exec(s.id, ['ip', '-4', '-o', 'addr', 'show', 'scope', 'global'])).stdout),
    );
    for (const text of addresses) expect(text).toContain('inet 10.0.2.15/24');

    const listed = await daemon.api.sandboxes();
    expect(listed.find((s) => s.id === pooled.id)?.network.internet).toBe(false);
    expect(listed.find((s) => s.id === open.id)?.network.internet).toBe(true);
  });

  it('keeps the setting across pause and resume and in forks, and applies a change made while paused', async ({ newSandbox }) => {
    const sandbox = await newSandbox({ internet: false });
    await daemon.api.pause(sandbox.id);
    await daemon.api.resume(sandbox.id);
    expect(await reachesOutside(sandbox.id)).toBe(false);

    const [fork] = await daemon.api.fork(sandbox.id);
    if (!fork) throw new Error('a fork of one answered no sandbox');
    expect(fork.network.internet).toBe(false);
    expect(await reachesOutside(fork.id)).toBe(false);
    await setNetwork(fork.id, { internet: true });
    await becomesReachable(fork.id);
    expect(await reachesOutside(sandbox.id)).toBe(false);

    // Switched on while paused: the saved device state still has the link down; resume applies the new setting.
    await daemon.api.pause(sandbox.id);
    expect((await setNetwork(sandbox.id, { internet: true })).network.internet).toBe(true);
    await daemon.api.resume(sandbox.id);
    expect(await reachesOutside(sandbox.id)).toBe(true);
    await daemon.api.removeSandbox(fork.id);
  });

  it("takes e2b's allow_internet_access, and refuses egress lists user mode cannot enforce", async () => {
    const created = await daemon.request('POST', '/sandboxes', { templateID: 'base', allow_internet_access: false });
    expect(created.status, created.text).toBe(201);
    const id = created.body.sandboxID as string;
    expect((await daemon.request('GET', `/sandboxes/${id}`)).body.allowInternetAccess).toBe(false);
    expect(await reachesOutside(id)).toBe(false);
    expect((await daemon.request('PUT', `/sandboxes/${id}/network`, { allow_internet_access: true })).status).toBe(204);
    expect((await daemon.request('GET', `/sandboxes/${id}`)).body.allowInternetAccess).toBe(true);
    expect(await reachesOutside(id)).toBe(true);

    const lists = await daemon.request('POST', '/v1/sandboxes', { egress: { deny: ['0.0.0.0/0'] } });
    expect(lists.status).toBe(400);
    expect(lists.body.error).toMatchObject({ code: 'invalid_argument', hint: expect.stringContaining('CAPSULE_NETWORK=tap') });
    const update = await daemon.request('POST', `/v1/sandboxes/${id}/network`, { egress: { allow: ['not-a-network'] } });
    expect(update.status).toBe(400);
    expect((await daemon.request('POST', '/v1/sandboxes/sb_nope/network', { internet: true })).body.error.code).toBe('sandbox_not_found');
    await daemon.request('DELETE', `/v1/sandboxes/${id}`);
  });
});
