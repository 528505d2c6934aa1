// Network namespaces a bench run makes so that a sandbox's traffic never leaves
// this machine: a "host" namespace the daemon runs in (through a launch prefix),
// linked by a veth to a "server" namespace holding a public-range documentation
// address (TEST-NET-2), which a root daemon's firewall lets sandboxes reach.
// It never touches the machine's own namespace, addresses or routes.
import { execFileSync, spawn } from 'node:child_process';
import fs from 'node:fs';

export const SERVER_ADDRESS = '198.51.100.2';
export const HOST_ADDRESS = '198.51.100.1';
const NETNS_DIR = '/run/netns';
const LINK = 'bench0';

/** The namespace names of a run's network: per process, so two runs never share one. */
export function benchNetworkNames(pid) {
  return { hostNs: `capbench-${pid}-host`, serverNs: `capbench-${pid}-srv` };
}

/** The `ip` argument lists that build the network, in order; a connected route is all the host namespace has, so nothing else is reachable from it. */
export function setupCommands({ hostNs, serverNs }) {
  return [
    ['netns', 'add', hostNs],
    ['netns', 'add', serverNs],
    ['-n', hostNs, 'link', 'set', 'lo', 'up'],
    ['-n', serverNs, 'link', 'set', 'lo', 'up'],
    ['-n', hostNs, 'link', 'add', LINK, 'type', 'veth', 'peer', 'name', LINK, 'netns', serverNs],
    ['-n', hostNs, 'addr', 'add', `${HOST_ADDRESS}/24`, 'dev', LINK],
    ['-n', serverNs, 'addr', 'add', `${SERVER_ADDRESS}/24`, 'dev', LINK],
    ['-n', hostNs, 'link', 'set', LINK, 'up'],
    ['-n', serverNs, 'link', 'set', LINK, 'up'],
  ];
}

/**
 * Of the namespaces in `existing`, those the run owns: its own two, and those
 * of daemons tagged `daemonTags` (a daemon keeps its namespace when a VM is
 * still inside at its stop, and the bench kills those VMs after).
 */
export function namespacesToRemove(existing, names, daemonTags) {
  return existing.filter(
    (ns) => ns === names.hostNs || ns === names.serverNs || daemonTags.some((tag) => ns.startsWith(`capsule-${tag}-`)),
  );
}

/** The namespaces of one bench run; `destroy` is synchronous so it can run as a cleanup step (Ctrl-C included) and is idempotent. */
export class BenchNetwork {
  constructor(pid = process.pid) {
    this.names = benchNetworkNames(pid);
    /** Tags of the daemons started inside the host namespace, whose own namespaces go too. */
    this.daemonTags = [];
    this.processes = new Set();
  }

  async create() {
    try {
      for (const args of setupCommands(this.names)) execFileSync('ip', args, { stdio: ['ignore', 'ignore', 'pipe'] });
    } catch (err) {
      this.destroy();
      throw new Error(`could not make the bench network: ${err.stderr?.toString().trim() || err.message}`);
    }
  }

  /** `nsenter` into the host namespace: a daemon's launch prefix. */
  get launchPrefix() {
    return ['nsenter', `--net=${NETNS_DIR}/${this.names.hostNs}`, '--'];
  }

  /** A node process in the server namespace running `script`, resolved once it prints `ready`. */
  async startServer(script) {
    const child = spawn('ip', ['netns', 'exec', this.names.serverNs, process.execPath, '-e', script], {
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    this.processes.add(child);
    child.once('exit', () => this.processes.delete(child));
    await new Promise((resolve, reject) => {
      child.once('exit', (code) => reject(new Error(`the bench server in ${this.names.serverNs} exited with ${code}`)));
      let out = '';
      child.stdout.on('data', (chunk) => {
        out += chunk.toString('utf8');
        if (out.split('\n').includes('ready')) resolve();
      });
    });
    return child;
  }

  /** `command` run in the host namespace: what "the host" is to the daemon and its sandboxes. */
  inHost(command) {
    return ['ip', 'netns', 'exec', this.names.hostNs, ...command];
  }

  destroy() {
    for (const child of this.processes) child.kill('SIGKILL');
    const existing = fs.existsSync(NETNS_DIR) ? fs.readdirSync(NETNS_DIR) : [];
    // A namespace deleted while a process is inside lives on until that process goes; the run's cleanup kills it next.
    for (const ns of namespacesToRemove(existing, this.names, this.daemonTags))
      execFileSync('ip', ['netns', 'delete', ns], { stdio: 'ignore' });
  }
}
