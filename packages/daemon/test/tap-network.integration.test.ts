// TAP networking with real microVMs, inside network namespaces this test
// creates: the daemon runs in a "host" namespace whose only uplink leads to
// an "outside" namespace (TEST-NET addresses 198.51.100.0/24 and
// 203.0.113.2), so no packet ever leaves this machine. Each sandbox gets its
// own namespace, NAT and egress lists; nothing of it remains after delete, nor
// after a kill -9 of the daemon and a restart.
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import { afterAll, beforeAll, describe, expect } from 'vitest';
import { it, TestDaemon } from './fixture.js';

const HOST_NS = `captest-host-${process.pid}`;
const OUTSIDE_NS = `captest-out-${process.pid}`;
const OUTSIDE = '198.51.100.2';
const OTHER_OUTSIDE = '203.0.113.2';
const HOST_UPLINK = '198.51.100.1';
const PORT = 8080;

const canRun = process.getuid?.() === 0 && fs.existsSync('/dev/net/tun') && fs.existsSync('/usr/sbin/nft');

function run(command: string, ...args: string[]): string {
  return execFileSync(command, args, { encoding: 'utf8' });
}
const inNs = (ns: string, ...command: string[]) => run('ip', 'netns', 'exec', ns, ...command);

/** An HTTP server in namespace `ns` that answers its name and prints each client's address. */
class NamespaceServer {
  readonly peers: string[] = [];
  private proc: ChildProcess | undefined;
  constructor(readonly ns: string, readonly answer: string) {}
  async start(): Promise<void> {
    const script = `require('http').createServer((q, s) => { console.log(q.socket.remoteAddress); s.end(${JSON.stringify(this.answer)}); }).listen(${PORT}, '0.0.0.0', () => console.log('listening'))`;
    const proc = spawn('ip', ['netns', 'exec', this.ns, process.execPath, '-e', script], { stdio: ['ignore', 'pipe', 'inherit'] });
    this.proc = proc;
    await new Promise<void>((resolve, reject) => {
      proc.once('exit', (code) => reject(new Error(`the server in ${this.ns} exited with ${code}`)));
      let buffered = '';
      proc.stdout.on('data', (chunk: Buffer) => {
        buffered += chunk.toString('utf8');
        const lines = buffered.split('\n');
        buffered = lines.pop() ?? '';
        for (const line of lines) {
          if (line === 'listening') resolve();
          else this.peers.push(line.replace(/^::ffff:/, ''));
        }
      });
    });
  }
  stop(): void {
    this.proc?.kill('SIGKILL');
  }
}

describe.skipIf(!canRun)('TAP networking in test network namespaces (real QEMU microVM, root)', () => {
  const outside = new NamespaceServer(OUTSIDE_NS, 'outside');
  const hostService = new NamespaceServer(HOST_NS, 'host-service');
  const daemon = new TestDaemon({ CAPSULE_NETWORK: 'tap' }, ['nsenter', `--net=/run/netns/${HOST_NS}`, '--']);

  beforeAll(async () => {
    run('ip', 'netns', 'add', HOST_NS);
    run('ip', 'netns', 'add', OUTSIDE_NS);
    for (const ns of [HOST_NS, OUTSIDE_NS]) run('ip', '-n', ns, 'link', 'set', 'lo', 'up');
    // A new namespace copies the root namespace's IPv4 settings, and other test files' root daemons turn forwarding on there.
    run('ip', 'netns', 'exec', HOST_NS, 'sysctl', '-qw', 'net.ipv4.ip_forward=0');
    run('ip', '-n', HOST_NS, 'link', 'add', 'wan0', 'type', 'veth', 'peer', 'name', 'wan0', 'netns', OUTSIDE_NS);
    run('ip', '-n', HOST_NS, 'addr', 'add', `${HOST_UPLINK}/24`, 'dev', 'wan0');
    run('ip', '-n', OUTSIDE_NS, 'addr', 'add', `${OUTSIDE}/24`, 'dev', 'wan0');
    run('ip', '-n', OUTSIDE_NS, 'addr', 'add', `${OTHER_OUTSIDE}/32`, 'dev', 'lo');
    for (const ns of [HOST_NS, OUTSIDE_NS]) run('ip', '-n', ns, 'link', 'set', 'wan0', 'up');
    run('ip', '-n', HOST_NS, 'route', 'add', 'default', 'via', OUTSIDE);
    await outside.start();
    await hostService.start();
    await daemon.start();
  });
  afterAll(async () => {
    await daemon.destroy();
    outside.stop();
    hostService.stop();
    for (const ns of [HOST_NS, OUTSIDE_NS]) execFileSync('ip', ['netns', 'delete', ns], { stdio: 'ignore' });
    // Whatever a failed test left of the daemon's sandbox namespaces.
    for (const name of fs.readdirSync('/run/netns')) {
      if ([...created, 'sb_leftover'].some((id) => name.startsWith('capsule-') && name.endsWith(`-${id}`))) execFileSync('ip', ['netns', 'delete', name], { stdio: 'ignore' });
    }
  });

  const created: string[] = [];
  /** The daemon's tag, read from the name of a sandbox's namespace: every name it gives carries it. */
  let tag = '';
  function learnTag(id: string): void {
    tag ||= /^capsule-([0-9a-f]{6})-/.exec(fs.readdirSync('/run/netns').find((n) => n.endsWith(`-${id}`)) ?? '')?.[1] ?? '';
    expect(tag).not.toBe('');
  }
  /** The namespaces this test's daemon made. */
  function sandboxNamespaces(): string[] {
    return fs.existsSync('/run/netns') ? fs.readdirSync('/run/netns').filter((n) => tag !== '' && n.startsWith(`capsule-${tag}-`)) : [];
  }

  const exec = async (id: string, cmd: string[]) => {
    const res = await daemon.request('POST', `/v1/sandboxes/${id}/exec`, { cmd });
    expect(res.status, res.text).toBe(200);
    return res.body as { exitCode: number; stdout: string };
  };
  type Info = { id: string; pid: number; state: string; network: { mode: string; internet: boolean; hostAddress?: string; guestAddress: string; allow: string[]; deny: string[] } };
  const create = async (body: object): Promise<Info> => {
    const res = await daemon.request('POST', '/v1/sandboxes', body);
    expect(res.status, res.text).toBe(201);
    created.push((res.body as Info).id);
    learnTag((res.body as Info).id);
    return res.body as Info;
  };
  const setNetwork = async (id: string, body: object): Promise<Info> => {
    const res = await daemon.request('POST', `/v1/sandboxes/${id}/network`, body);
    expect(res.status, res.text).toBe(200);
    return res.body as Info;
  };
  /** The answer of the server at `address`, or undefined when the guest cannot reach it. */
  const fetchFrom = async (id: string, address: string): Promise<string | undefined> => {
    const result = await exec(id, ['curl', '-sS', '--max-time', '4', `http://${address}:${PORT}/`]);
    return result.exitCode === 0 ? result.stdout : undefined;
  };

  it('gives each sandbox its own namespace and link addresses, NATs it out, and keeps it off the host', async () => {
    expect((await daemon.request('GET', '/v1/info')).body.network).toBe('tap');
    const a = await create({});
    const b = await create({});
    expect(sandboxNamespaces()).toEqual(expect.arrayContaining([`capsule-${tag}-${a.id}`, `capsule-${tag}-${b.id}`]));
    for (const sandbox of [a, b]) {
      expect(sandbox.network).toMatchObject({ mode: 'tap', internet: true, guestAddress: '10.0.2.15/24' });
      expect(sandbox.network.hostAddress).toMatch(/^10\.201\.\d+\.\d+$/);
      expect((await exec(sandbox.id, ['ip', '-4', '-o', 'addr', 'show', 'scope', 'global'])).stdout).toContain('inet 10.0.2.15/24');
    }
    expect(a.network.hostAddress).not.toBe(b.network.hostAddress);
    expect((await exec(a.id, ['cat', '/etc/resolv.conf'])).stdout).toBe('nameserver 10.0.2.3\n');

    const before = outside.peers.length;
    expect(await fetchFrom(a.id, OUTSIDE)).toBe('outside');
    expect(await fetchFrom(b.id, OTHER_OUTSIDE)).toBe('outside');
    // Both leave through the host's uplink, masqueraded to its address.
    expect(outside.peers.slice(before)).toEqual([HOST_UPLINK, HOST_UPLINK]);
    // The host's own services and the other sandbox's link are not reachable.
    expect(await fetchFrom(a.id, HOST_UPLINK)).toBeUndefined();
    expect(await fetchFrom(a.id, b.network.hostAddress!)).toBeUndefined();
    expect(hostService.peers).toEqual([]);

    for (const sandbox of [a, b]) expect((await daemon.request('DELETE', `/v1/sandboxes/${sandbox.id}`)).status).toBe(204);
    expect(sandboxNamespaces().filter((n) => n.endsWith(a.id) || n.endsWith(b.id))).toEqual([]);
  });

  it('enforces egress allow and deny lists, and the internet switch, at create, at runtime and in forks', async () => {
    const sandbox = await create({ egress: { deny: ['0.0.0.0/0'], allow: [`${OTHER_OUTSIDE.replace(/\d+$/, '0')}/24`] } });
    expect(sandbox.network).toMatchObject({ deny: ['0.0.0.0/0'], allow: ['203.0.113.0/24'] });
    expect(await fetchFrom(sandbox.id, OTHER_OUTSIDE)).toBe('outside');
    expect(await fetchFrom(sandbox.id, OUTSIDE)).toBeUndefined();

    await setNetwork(sandbox.id, { egress: { deny: [OTHER_OUTSIDE] } });
    expect(await fetchFrom(sandbox.id, OTHER_OUTSIDE)).toBeUndefined();
    expect(await fetchFrom(sandbox.id, OUTSIDE)).toBe('outside');

    expect((await setNetwork(sandbox.id, { internet: false })).network.internet).toBe(false);
    expect(await fetchFrom(sandbox.id, OUTSIDE)).toBeUndefined();
    await setNetwork(sandbox.id, { internet: true });
    expect(await fetchFrom(sandbox.id, OUTSIDE)).toBe('outside');

    // A fork gets its own namespace and addresses, with the source's lists.
    const forked = await daemon.request('POST', `/v1/sandboxes/${sandbox.id}/fork`, { count: 1 });
    expect(forked.status, forked.text).toBe(201);
    const fork = forked.body.sandboxes[0] as Info;
    created.push(fork.id);
    expect(fork.network).toMatchObject({ deny: ['203.0.113.2/32'], allow: [] });
    expect(fork.network.hostAddress).not.toBe(sandbox.network.hostAddress);
    expect(sandboxNamespaces()).toContain(`capsule-${tag}-${fork.id}`);
    expect(await fetchFrom(fork.id, OTHER_OUTSIDE)).toBeUndefined();
    expect(await fetchFrom(fork.id, OUTSIDE)).toBe('outside');

    const bad = await daemon.request('POST', `/v1/sandboxes/${sandbox.id}/network`, { egress: { allow: ['10.0.0.0/33'] } });
    expect(bad.body.error.code).toBe('invalid_argument');
    for (const id of [sandbox.id, fork.id]) await daemon.request('DELETE', `/v1/sandboxes/${id}`);
  });

  it('leaves no namespace, link or rule behind after a kill -9 of the daemon and a restart', async () => {
    const crashed = await create({});
    const paused = await create({ egress: { deny: [OTHER_OUTSIDE] } });
    expect((await daemon.request('POST', `/v1/sandboxes/${paused.id}/pause`)).status).toBe(200);
    // The paused sandbox keeps its namespace and addresses.
    expect(sandboxNamespaces()).toContain(`capsule-${tag}-${paused.id}`);

    await daemon.kill9();
    process.kill(crashed.pid, 'SIGKILL');
    // Left by a crash between creating a namespace or link and recording it.
    run('ip', 'netns', 'add', `capsule-${tag}-sb_leftover`);
    run('ip', '-n', HOST_NS, 'link', 'add', `cs${tag}zz`, 'type', 'veth', 'peer', 'name', `cs${tag}zy`);
    await daemon.start();

    const after = (await daemon.request('GET', `/v1/sandboxes/${crashed.id}`)).body as Info;
    expect(after.state).toBe('error');
    const names = sandboxNamespaces();
    expect(names).not.toContain(`capsule-${tag}-${crashed.id}`);
    expect(names).not.toContain(`capsule-${tag}-sb_leftover`);
    expect(inNs(HOST_NS, 'ip', '-o', 'link')).not.toContain(`cs${tag}zz`);

    const resumed = await daemon.request('POST', `/v1/sandboxes/${paused.id}/resume`);
    expect(resumed.status, resumed.text).toBe(200);
    expect(resumed.body.network.hostAddress).toBe(paused.network.hostAddress);
    expect(await fetchFrom(paused.id, OUTSIDE)).toBe('outside');
    expect(await fetchFrom(paused.id, OTHER_OUTSIDE)).toBeUndefined();
    expect((await daemon.request('DELETE', `/v1/sandboxes/${paused.id}`)).status).toBe(204);

    // With every sandbox gone and the daemon stopped (its warm-pool VM goes too), nothing is left.
    await daemon.stop();
    expect(sandboxNamespaces()).toEqual([]);
    expect(inNs(HOST_NS, 'ip', '-o', 'link').split('\n').filter((l) => l.includes(`cs${tag}`))).toEqual([]);
    expect(inNs(HOST_NS, 'nft', 'list', 'tables')).not.toContain(`capsule_${tag}`);
    // Forwarding, off in the test's namespace before, is off again.
    expect(inNs(HOST_NS, 'sysctl', '-n', 'net.ipv4.ip_forward').trim()).toBe('0');
    expect(daemon.qemuPids()).toEqual([]);
  });
});
