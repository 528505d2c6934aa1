// Network namespaces a test makes for a daemon to live in, so that no packet
// of a sandbox ever leaves this machine: a "host" namespace (the daemon runs
// there through TestDaemon's launchPrefix) whose default route leads to an
// "outside" namespace holding a public-range address (TEST-NET-2), a private
// one, the metadata address and the machine's DNS resolver address, each
// served by this test. Everything is removed by `destroy`; the namespaces
// the daemon made for its sandboxes are removed by TestDaemon's.
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import { afterAll, beforeAll } from 'vitest';
import { TestDaemon } from './fixture.js';

export const OUTSIDE = '198.51.100.2';
/** A second public-range address (TEST-NET-3) of the outside namespace, for egress lists that let one through and not the other. */
export const SECOND_OUTSIDE = '203.0.113.2';
export const HOST_UPLINK = '198.51.100.1';
/** A private address only the outside namespace holds: reachable by routing, refused by policy. */
export const PRIVATE_OUTSIDE = '192.168.77.2';
export const METADATA = '169.254.169.254';
export const HTTP_PORT = 8080;
/** Every name the test resolver is asked for resolves to OUTSIDE. */
export const TEST_NAME = 'public.capsule-test';

export function run(command: string, ...args: string[]): string {
  return execFileSync(command, args, { encoding: 'utf8' });
}

/** The first non-loopback IPv4 nameserver of this machine's resolv.conf: the one the daemon forwards DNS to. */
export function machineResolver(): string | undefined {
  const text = fs.readFileSync('/etc/resolv.conf', 'utf8');
  return /^\s*nameserver\s+((?!127\.)\d{1,3}(?:\.\d{1,3}){3})\s*$/m.exec(text)?.[1];
}

/** A node process in namespace `ns` running `script`, which prints `ready` once listening and one line per client. */
class NamespaceProcess {
  readonly lines: string[] = [];
  private proc: ChildProcess | undefined;
  constructor(
    readonly ns: string,
    readonly script: string,
  ) {}
  async start(): Promise<void> {
    const proc = spawn('ip', ['netns', 'exec', this.ns, process.execPath, '-e', this.script], { stdio: ['ignore', 'pipe', 'inherit'] });
    this.proc = proc;
    await new Promise<void>((resolve, reject) => {
      proc.once('exit', (code) => reject(new Error(`a test server in ${this.ns} exited with ${code}`)));
      let buffered = '';
      proc.stdout.on('data', (chunk: Buffer) => {
        buffered += chunk.toString('utf8');
        const lines = buffered.split('\n');
        buffered = lines.pop() ?? '';
        for (const line of lines) {
          if (line === 'ready') resolve();
          else this.lines.push(line);
        }
      });
    });
  }
  stop(): void {
    this.proc?.kill('SIGKILL');
  }
}

/** HTTP on every address of the namespace at `port`, answering `answer` and printing each client's address. */
export function httpServer(ns: string, port: number, answer: string): NamespaceProcess {
  return new NamespaceProcess(
    ns,
    `require('http').createServer((q, s) => { console.log(q.socket.remoteAddress); s.end(${JSON.stringify(answer)}); }).listen(${port}, '0.0.0.0', () => console.log('ready'))`,
  );
}

/** A DNS responder on `address`:53 answering every A question with `answer` (and AAAA with no records). */
function dnsServer(ns: string, address: string, answer: string): NamespaceProcess {
  const script = `
    const sock = require('dgram').createSocket('udp4');
    sock.on('message', (q, peer) => {
      let end = 12;
      while (q[end] !== 0) end += q[end] + 1;
      const qtype = q.readUInt16BE(end + 1);
      const question = q.subarray(12, end + 5);
      const a = qtype === 1 ? Buffer.from([0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, ${answer.split('.').join(', ')}]) : Buffer.alloc(0);
      const header = Buffer.from([q[0], q[1], 0x81, 0x80, 0, 1, 0, a.length ? 1 : 0, 0, 0, 0, 0]);
      sock.send(Buffer.concat([header, question, a]), peer.port, peer.address);
      console.log('dns ' + peer.address);
    });
    sock.bind(53, ${JSON.stringify(address)}, () => console.log('ready'));`;
  return new NamespaceProcess(ns, script);
}

/**
 * A daemon (with `env`) living in fresh test networks for the calling describe
 * block: both are made before its tests and removed after them.
 */
export function daemonInTestNetworks(
  label: string,
  hostServicePort: number,
  env: Record<string, string> = {},
): { networks: TestNetworks; daemon: TestDaemon } {
  const networks = new TestNetworks(label, hostServicePort);
  const daemon = new TestDaemon(env, networks.launchPrefix);
  beforeAll(async () => {
    await networks.create();
    await daemon.start();
  });
  afterAll(async () => {
    try {
      await daemon.destroy();
    } finally {
      networks.destroy();
    }
  });
  return { networks, daemon };
}

export class TestNetworks {
  readonly hostNs: string;
  readonly outsideNs: string;
  readonly outside: NamespaceProcess;
  readonly hostService: NamespaceProcess;
  readonly resolver = machineResolver();
  private readonly servers: NamespaceProcess[];

  /** `hostServicePort`: a service on every address of the daemon's own namespace, loopback included. */
  constructor(
    label: string,
    readonly hostServicePort: number,
  ) {
    this.hostNs = `captest-${label}-host-${process.pid}`;
    this.outsideNs = `captest-${label}-out-${process.pid}`;
    this.outside = httpServer(this.outsideNs, HTTP_PORT, 'outside');
    this.hostService = httpServer(this.hostNs, hostServicePort, 'host-service');
    this.servers = [this.outside, this.hostService, ...(this.resolver ? [dnsServer(this.outsideNs, this.resolver, OUTSIDE)] : [])];
  }

  /** `nsenter` into the host namespace: a TestDaemon launch prefix. */
  get launchPrefix(): string[] {
    return ['nsenter', `--net=/run/netns/${this.hostNs}`, '--'];
  }

  async create(): Promise<void> {
    const { hostNs, outsideNs } = this;
    run('ip', 'netns', 'add', hostNs);
    run('ip', 'netns', 'add', outsideNs);
    for (const ns of [hostNs, outsideNs]) run('ip', '-n', ns, 'link', 'set', 'lo', 'up');
    // A new namespace copies the root namespace's IPv4 settings, and other test files' root daemons turn forwarding on there.
    run('ip', 'netns', 'exec', hostNs, 'sysctl', '-qw', 'net.ipv4.ip_forward=0');
    run('ip', '-n', hostNs, 'link', 'add', 'wan0', 'type', 'veth', 'peer', 'name', 'wan0', 'netns', outsideNs);
    run('ip', '-n', hostNs, 'addr', 'add', `${HOST_UPLINK}/24`, 'dev', 'wan0');
    run('ip', '-n', outsideNs, 'addr', 'add', `${OUTSIDE}/24`, 'dev', 'wan0');
    for (const address of [SECOND_OUTSIDE, PRIVATE_OUTSIDE, METADATA, ...(this.resolver ? [this.resolver] : [])])
      run('ip', '-n', outsideNs, 'addr', 'add', `${address}/32`, 'dev', 'lo');
    for (const ns of [hostNs, outsideNs]) run('ip', '-n', ns, 'link', 'set', 'wan0', 'up');
    run('ip', '-n', hostNs, 'route', 'add', 'default', 'via', OUTSIDE);
    for (const server of this.servers) await server.start();
  }

  inHost(...command: string[]): string {
    return run('ip', 'netns', 'exec', this.hostNs, ...command);
  }

  destroy(): void {
    for (const server of this.servers) server.stop();
    for (const ns of [this.hostNs, this.outsideNs]) {
      try {
        execFileSync('ip', ['netns', 'delete', ns], { stdio: 'ignore' });
      } catch {
        // Never made: create failed early.
      }
    }
  }
}
