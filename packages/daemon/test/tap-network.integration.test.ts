// TAP networking with real microVMs, inside network namespaces this test
// creates (test-networks.ts): the daemon runs in a "host" namespace whose only uplink leads to
// an "outside" namespace (TEST-NET addresses 198.51.100.0/24 and
// 203.0.113.2), so no packet ever leaves this machine. Each sandbox gets its
// own namespace, NAT and egress lists, and its NIC's bytes are counted; nothing of it
// remains after delete, nor after a kill -9 of the daemon and a restart.
import fs from 'node:fs';
import type { SandboxMetrics, SetNetworkRequest } from '@capsule/protocol';
import parsePrometheusTextFormat from 'parse-prometheus-text-format';
import { describe, expect } from 'vitest';
import { stateTag } from '../src/network/tap-network.js';
import { eventually, sandboxTest } from './fixture.js';
import { daemonInTestNetworks, HOST_UPLINK, HTTP_PORT, OUTSIDE, run, SECOND_OUTSIDE } from './test-networks.js';

const canRun = process.getuid?.() === 0 && fs.existsSync('/dev/net/tun') && fs.existsSync('/usr/sbin/nft');

describe.skipIf(!canRun)('TAP networking in test network namespaces (real QEMU microVM, root)', () => {
  const { networks, daemon } = daemonInTestNetworks('tap-net', HTTP_PORT, { CAPSULE_NETWORK: 'tap', CAPSULE_METRICS_INTERVAL_MS: '500' });
  const { outside, hostService } = networks;
  const it = sandboxTest(daemon);
  /** Every name the daemon gives its namespaces, links and tables carries this tag of its state folder. */
  const tag = stateTag(daemon.stateDir);

  /** The namespaces this test's daemon made. */
  function sandboxNamespaces(): string[] {
    return fs.existsSync('/run/netns') ? fs.readdirSync('/run/netns').filter((n) => n.startsWith(`capsule-${tag}-`)) : [];
  }

  const exec = (id: string, cmd: string[]) => daemon.api.exec(id, cmd);
  const setNetwork = (id: string, body: SetNetworkRequest) => daemon.api.setNetwork(id, body);
  /** The answer of the server at `address`, or undefined when the guest cannot reach it. */
  const fetchFrom = async (id: string, address: string): Promise<string | undefined> => {
    const result = await exec(id, ['curl', '-sS', '--max-time', '4', `http://${address}:${HTTP_PORT}/`]);
    return result.exitCode === 0 ? result.stdout : undefined;
  };
  /** Sandbox `id`'s NIC bytes in a scrape of /metrics (parsed by Prometheus' text-format rules). */
  const scrapedTraffic = async (id: string) => {
    const families = parsePrometheusTextFormat((await daemon.request('GET', '/metrics')).text);
    const value = (name: string) => Number(families.find((f) => f.name === name)?.metrics.find((m) => m.labels?.sandbox === id)?.value);
    return { received: value('capsule_sandbox_network_receive_bytes_total'), sent: value('capsule_sandbox_network_transmit_bytes_total') };
  };
  /** `fetchFrom` of each of `addresses` at once: a blocked one waits out curl's whole --max-time. */
  const fetchEach = (id: string, ...addresses: string[]) => Promise.all(addresses.map((address) => fetchFrom(id, address)));

  it('gives each sandbox its own namespace and link addresses, NATs it out, and keeps it off the host', async ({ newSandbox }) => {
    expect((await daemon.api.info()).network).toBe('tap');
    const [a, b] = await Promise.all([newSandbox(), newSandbox()]);
    expect(sandboxNamespaces()).toEqual(expect.arrayContaining([`capsule-${tag}-${a.id}`, `capsule-${tag}-${b.id}`]));
    const addresses = await Promise.all([a, b].map((sandbox) => exec(sandbox.id, ['ip', '-4', '-o', 'addr', 'show', 'scope', 'global'])));
    for (const [i, sandbox] of [a, b].entries()) {
      expect(sandbox.network).toMatchObject({ mode: 'tap', internet: true, guestAddress: '10.0.2.15/24' });
      expect(sandbox.network.hostAddress).toMatch(/^10\.201\.\d+\.\d+$/);
      expect(addresses[i]!.stdout).toContain('inet 10.0.2.15/24');
    }
    expect(a.network.hostAddress).not.toBe(b.network.hostAddress);
    expect((await exec(a.id, ['cat', '/etc/resolv.conf'])).stdout).toBe('nameserver 10.0.2.3\n');

    const before = outside.lines.length;
    const trafficBefore = await scrapedTraffic(a.id);
    expect(await Promise.all([fetchFrom(a.id, OUTSIDE), fetchFrom(b.id, SECOND_OUTSIDE)])).toEqual(['outside', 'outside']);
    // The download is counted on the host, at a's tap: at least a TCP handshake, a request and an answer each way
    // (eventually: a scrape reads the sampler's newest point, up to an interval old).
    const trafficAfter = await eventually(
      async () => {
        const traffic = await scrapedTraffic(a.id);
        return traffic.received - trafficBefore.received > 200 ? traffic : undefined;
      },
      10_000,
      'the download in /metrics',
    );
    expect(trafficAfter.sent - trafficBefore.sent).toBeGreaterThan(150);
    // The history gets the same counters on its next point.
    const point = await eventually(
      async () => {
        const { points } = (await daemon.request<SandboxMetrics>('GET', `/v1/sandboxes/${a.id}/metrics`)).body;
        const newest = points.at(-1);
        return (newest?.networkReceivedBytes ?? 0) >= trafficAfter.received ? newest : undefined;
      },
      10_000,
      'a history point with the download',
    );
    expect(point.networkTransmittedBytes).toBeGreaterThanOrEqual(trafficAfter.sent);
    // Both leave through the host's uplink, masqueraded to its address.
    expect(outside.lines.slice(before)).toEqual([HOST_UPLINK, HOST_UPLINK]);
    // The host's own services and the other sandbox's link are not reachable.
    expect(await fetchEach(a.id, HOST_UPLINK, b.network.hostAddress!)).toEqual([undefined, undefined]);
    expect(hostService.lines).toEqual([]);

    for (const sandbox of [a, b]) await daemon.api.removeSandbox(sandbox.id);
    expect(sandboxNamespaces().filter((n) => n.endsWith(a.id) || n.endsWith(b.id))).toEqual([]);
  });

  it('enforces egress allow and deny lists, and the internet switch, at create, at runtime and in forks', async ({ newSandbox }) => {
    const sandbox = await newSandbox({ egress: { deny: ['0.0.0.0/0'], allow: [`${SECOND_OUTSIDE.replace(/\d+$/, '0')}/24`] } });
    expect(sandbox.network).toMatchObject({ deny: ['0.0.0.0/0'], allow: ['203.0.113.0/24'] });
    expect(await fetchEach(sandbox.id, SECOND_OUTSIDE, OUTSIDE)).toEqual(['outside', undefined]);

    await setNetwork(sandbox.id, { egress: { deny: [SECOND_OUTSIDE] } });
    expect(await fetchEach(sandbox.id, SECOND_OUTSIDE, OUTSIDE)).toEqual([undefined, 'outside']);

    expect((await setNetwork(sandbox.id, { internet: false })).network.internet).toBe(false);
    expect(await fetchFrom(sandbox.id, OUTSIDE)).toBeUndefined();
    await setNetwork(sandbox.id, { internet: true });
    expect(await fetchFrom(sandbox.id, OUTSIDE)).toBe('outside');

    // A fork gets its own namespace and addresses, with the source's lists.
    const [fork] = await daemon.api.fork(sandbox.id);
    if (!fork) throw new Error('a fork of one answered no sandbox');
    expect(fork.network).toMatchObject({ deny: ['203.0.113.2/32'], allow: [] });
    expect(fork.network.hostAddress).not.toBe(sandbox.network.hostAddress);
    expect(sandboxNamespaces()).toContain(`capsule-${tag}-${fork.id}`);
    expect(await fetchEach(fork.id, SECOND_OUTSIDE, OUTSIDE)).toEqual([undefined, 'outside']);

    const bad = await daemon.request('POST', `/v1/sandboxes/${sandbox.id}/network`, { egress: { allow: ['10.0.0.0/33'] } });
    expect(bad.body.error.code).toBe('invalid_argument');
    await daemon.api.removeSandbox(fork.id);
  });

  it('leaves no namespace, link or rule behind after a kill -9 of the daemon and a restart', async ({ newSandbox }) => {
    const [crashed, paused] = await Promise.all([newSandbox(), newSandbox({ egress: { deny: [SECOND_OUTSIDE] } })]);
    await daemon.api.pause(paused.id);
    // The paused sandbox keeps its namespace and addresses.
    expect(sandboxNamespaces()).toContain(`capsule-${tag}-${paused.id}`);

    await daemon.kill9();
    process.kill(crashed.pid!, 'SIGKILL');
    // Left by a crash between creating a namespace or link and recording it.
    run('ip', 'netns', 'add', `capsule-${tag}-sb_leftover`);
    run('ip', '-n', networks.hostNs, 'link', 'add', `cs${tag}zz`, 'type', 'veth', 'peer', 'name', `cs${tag}zy`);
    await daemon.start();

    expect((await daemon.api.sandbox(crashed.id)).state).toBe('error');
    const names = sandboxNamespaces();
    expect(names).not.toContain(`capsule-${tag}-${crashed.id}`);
    expect(names).not.toContain(`capsule-${tag}-sb_leftover`);
    expect(networks.inHost('ip', '-o', 'link')).not.toContain(`cs${tag}zz`);

    const resumed = await daemon.api.resume(paused.id);
    expect(resumed.network.hostAddress).toBe(paused.network.hostAddress);
    expect(await fetchEach(paused.id, OUTSIDE, SECOND_OUTSIDE)).toEqual(['outside', undefined]);
    await daemon.api.removeSandbox(paused.id);

    // With every sandbox gone and the daemon stopped (its warm-pool VM goes too), nothing is left.
    await daemon.stop();
    expect(sandboxNamespaces()).toEqual([]);
    expect(
      networks
        .inHost('ip', '-o', 'link')
        .split('\n')
        .filter((l) => l.includes(`cs${tag}`)),
    ).toEqual([]);
    expect(networks.inHost('nft', 'list', 'tables')).not.toContain(`capsule_${tag}`);
    // Forwarding, off in the test's namespace before, is off again.
    expect(networks.inHost('sysctl', '-n', 'net.ipv4.ip_forward').trim()).toBe('0');
    expect(daemon.qemuPids()).toEqual([]);
  });
});
