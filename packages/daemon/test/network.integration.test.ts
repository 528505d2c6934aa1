// User-mode networking with real microVMs: every guest has the same address,
// gateway and DNS. The daemon runs in a network namespace this test makes
// (test-networks.ts), so the guest's traffic goes to a public-range address
// served from a second one, never to an outside address. Egress off really
// blocks (the server sees no request), and the setting holds across runtime
// switches, warm-pool claims, cold boots, pause/resume and fork.
import { afterAll, beforeAll, describe, expect } from 'vitest';
import { eventually, it, TestDaemon } from './fixture.js';
import { HOST_UPLINK, HTTP_PORT, OUTSIDE, removeDaemonNamespaces, TestNetworks } from './test-networks.js';

describe.skipIf(process.getuid?.() !== 0)('user-mode networking (real QEMU microVM, root, test network namespaces)', () => {
  const networks = new TestNetworks('user-net', 8081);
  const server = networks.outside;
  const daemon = new TestDaemon({}, networks.launchPrefix);
  const url = `http://${OUTSIDE}:${HTTP_PORT}/`;
  beforeAll(async () => {
    await networks.create();
    await daemon.start();
  });
  afterAll(async () => {
    try {
      await daemon.destroy();
      removeDaemonNamespaces(daemon.stateDir);
    } finally {
      networks.destroy();
    }
  });

  const exec = async (id: string, cmd: string[]) => {
    const res = await daemon.request('POST', `/v1/sandboxes/${id}/exec`, { cmd });
    expect(res.status, res.text).toBe(200);
    return res.body as { exitCode: number; stdout: string; stderr: string };
  };
  const create = async (body: object) => {
    const res = await daemon.request('POST', '/v1/sandboxes', body);
    expect(res.status, res.text).toBe(201);
    return res.body as { id: string; network: { internet: boolean; guestAddress: string } };
  };
  const setNetwork = async (id: string, body: object) => {
    const res = await daemon.request('POST', `/v1/sandboxes/${id}/network`, body);
    expect(res.status, res.text).toBe(200);
    return res.body as { network: { internet: boolean } };
  };
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
  const becomesReachable = (id: string) => eventually(async () => ((await reachesOutside(id)) ? true : undefined), 30_000, `${id} reaching the outside server`);

  it('gives the guest its address, gateway and DNS, and reaches the internet through the gateway', async () => {
    expect((await daemon.request('GET', '/v1/info')).body.network).toBe('user');
    const sandbox = await create({});
    expect(sandbox.network).toMatchObject({ mode: 'user', internet: true, guestAddress: '10.0.2.15/24', gateway: '10.0.2.2', dns: '10.0.2.3' });
    expect((await exec(sandbox.id, ['cat', '/etc/resolv.conf'])).stdout).toBe('nameserver 10.0.2.3\n');
    expect((await exec(sandbox.id, ['ip', '-4', '-o', 'addr', 'show', 'scope', 'global'])).stdout).toContain('inet 10.0.2.15/24');
    expect((await exec(sandbox.id, ['ip', 'route', 'show', 'default'])).stdout).toContain('default via 10.0.2.2');
    expect(await reachesOutside(sandbox.id)).toBe(true);
    // slirp's connections leave the daemon's namespace masqueraded to the host's address.
    expect(new Set(server.lines)).toEqual(new Set([HOST_UPLINK]));
    await daemon.request('DELETE', `/v1/sandboxes/${sandbox.id}`);
  });

  it('switches egress off and on at runtime, and the guest cannot raise a link the host holds down', async () => {
    const sandbox = await create({});
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
    expect((await daemon.request('GET', `/v1/sandboxes/${sandbox.id}`)).body.network.internet).toBe(false);

    expect((await setNetwork(sandbox.id, { internet: true })).network.internet).toBe(true);
    await becomesReachable(sandbox.id);
    expect((await setNetwork(sandbox.id, { internet: false })).network.internet).toBe(false);
    expect(await reachesOutside(sandbox.id)).toBe(false);
    await daemon.request('DELETE', `/v1/sandboxes/${sandbox.id}`);
  });

  it('creates sandboxes without internet from the warm pool and cold, each with the same guest address', async () => {
    const pooled = await create({ internet: false });
    expect(pooled.network.internet).toBe(false);
    // Other resources than the template's make a cold boot, with the NIC configured by the guest's init.
    const cold = await create({ internet: false, memoryMiB: 384 });
    const open = await create({});
    for (const sandbox of [pooled, cold]) expect(await reachesOutside(sandbox.id), sandbox.id).toBe(false);
    expect(await reachesOutside(open.id)).toBe(true);
    await setNetwork(cold.id, { internet: true });
    await becomesReachable(cold.id);

    const addresses = await Promise.all([pooled, cold, open].map(async (s) => (await exec(s.id, ['ip', '-4', '-o', 'addr', 'show', 'scope', 'global'])).stdout));
    for (const text of addresses) expect(text).toContain('inet 10.0.2.15/24');

    const listed = (await daemon.request('GET', '/v1/sandboxes')).body.sandboxes as { id: string; network: { internet: boolean } }[];
    expect(listed.find((s) => s.id === pooled.id)?.network.internet).toBe(false);
    expect(listed.find((s) => s.id === open.id)?.network.internet).toBe(true);
    for (const sandbox of [pooled, cold, open]) await daemon.request('DELETE', `/v1/sandboxes/${sandbox.id}`);
  });

  it('keeps the setting across pause and resume and in forks, and applies a change made while paused', async () => {
    const sandbox = await create({ internet: false });
    expect((await daemon.request('POST', `/v1/sandboxes/${sandbox.id}/pause`)).status).toBe(200);
    expect((await daemon.request('POST', `/v1/sandboxes/${sandbox.id}/resume`)).status).toBe(200);
    expect(await reachesOutside(sandbox.id)).toBe(false);

    const forked = await daemon.request('POST', `/v1/sandboxes/${sandbox.id}/fork`, { count: 1 });
    expect(forked.status, forked.text).toBe(201);
    const fork = forked.body.sandboxes[0] as { id: string; network: { internet: boolean } };
    expect(fork.network.internet).toBe(false);
    expect(await reachesOutside(fork.id)).toBe(false);
    await setNetwork(fork.id, { internet: true });
    await becomesReachable(fork.id);
    expect(await reachesOutside(sandbox.id)).toBe(false);

    // Switched on while paused: the saved device state still has the link down; resume applies the new setting.
    expect((await daemon.request('POST', `/v1/sandboxes/${sandbox.id}/pause`)).status).toBe(200);
    expect((await setNetwork(sandbox.id, { internet: true })).network.internet).toBe(true);
    expect((await daemon.request('POST', `/v1/sandboxes/${sandbox.id}/resume`)).status).toBe(200);
    expect(await reachesOutside(sandbox.id)).toBe(true);
    for (const id of [sandbox.id, fork.id]) await daemon.request('DELETE', `/v1/sandboxes/${id}`);
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
