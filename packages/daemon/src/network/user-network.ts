// User-mode isolation (root only): libslirp has no firewall of its own, so
// every user-mode QEMU of this daemon runs inside ONE network namespace whose
// only way out is a veth to the host, masqueraded, and whose firewall lets out
// public addresses and DNS to the host's resolver, nothing else. There,
// slirp's 10.0.2.2 is the namespace's own loopback, where nothing listens.
// It must never remove the namespace while a process is inside: VMs outlive
// the daemon that started them.
import fs from 'node:fs';
import path from 'node:path';
import { runCommand } from '../launcher.js';
import type { Logger } from '../log.js';
import { NON_PUBLIC_NETWORKS, parseCidr } from './egress-policy.js';
import {
  COMMAND_TIMEOUT_MS,
  enableForwarding,
  hostRuleset,
  inNamespace,
  ip,
  linkNames,
  listDir,
  NETNS_DIR,
  poolSlots,
  restoreForwarding,
  slotAddresses,
  stateTag,
  systemResolver,
  UPLINK_IFNAME,
} from './tap-network.js';

/**
 * The namespace's firewall. slirp's sockets are the namespace's own, so the
 * filter sits on output. DNS goes to `resolver` whatever address slirp took
 * from resolv.conf (a loopback stub included); everything non-public, the
 * host's end of the link among it, is refused at once (a reject, so the
 * guest's connect fails fast instead of hanging).
 */
export function userNamespaceRuleset(resolver: string | undefined, hostAddress: string): string {
  const dns = resolver ? [`ip daddr ${resolver} meta l4proto { tcp, udp } th dport 53 accept`] : [];
  return [
    'table ip capsule',
    'delete table ip capsule',
    'table ip capsule {',
    '  chain dns {',
    // dstnat's value (-100); the name is accepted only on prerouting.
    '    type nat hook output priority -100;',
    ...(resolver ? [`    ip daddr != ${resolver} meta l4proto { tcp, udp } th dport 53 dnat to ${resolver}`] : []),
    '  }',
    '  chain postrouting {',
    '    type nat hook postrouting priority srcnat;',
    `    oifname "${UPLINK_IFNAME}" masquerade`,
    '  }',
    '  chain output {',
    '    type filter hook output priority filter; policy accept;',
    // 10.0.2.2 and the guest's other host-side addresses: this namespace's loopback, where nothing listens.
    '    oifname "lo" accept',
    ...dns.map((rule) => `    ${rule}`),
    `    ip daddr ${hostAddress} reject`,
    `    ip daddr { ${NON_PUBLIC_NETWORKS.join(', ')} } reject`,
    '  }',
    '  chain input {',
    '    type filter hook input priority filter; policy drop;',
    '    iifname "lo" accept',
    '    ct state established,related accept',
    '  }',
    '}',
    '',
  ].join('\n');
}

export class UserNetworkNamespace {
  /** Path of the namespace QEMU is started in (`nsenter --net=`). */
  readonly netns: string;
  private readonly tag: string;
  private readonly link: { host: string; netns: string; cidr: string };
  private readonly resolver = systemResolver();
  private ready: Promise<void> | undefined;

  /**
   * `pool`: the TAP pool, unused in user mode. A /30 of it chosen by the tag
   * links the namespace to the host, so that daemons of other state folders
   * on one host (test daemons, say) do not route each other's addresses.
   */
  constructor(
    private readonly log: Logger,
    stateDir: string,
    pool: string,
  ) {
    if (poolSlots(pool) === 0) throw new Error(`CAPSULE_TAP_POOL must be a network of /30 or larger, not ${pool}`);
    this.tag = stateTag(stateDir);
    this.netns = path.join(NETNS_DIR, `capsule-${this.tag}-user`);
    const { host, netns } = slotAddresses(pool, Number.parseInt(this.tag, 16) % poolSlots(pool));
    this.link = { host, netns, cidr: parseCidr(`${host}/30`) };
  }

  /** Why sandboxes cannot be isolated on this host (user mode then works as before, unfiltered), or undefined. */
  static async unavailableReason(): Promise<string | undefined> {
    if (process.getuid?.() !== 0) return 'capsuled does not run as root';
    const missing: string[] = [];
    for (const [tool, args] of [
      ['ip', ['-V']],
      ['nft', ['--version']],
      ['nsenter', ['--version']],
    ] as const) {
      await runCommand(tool, [...args], { timeoutMs: COMMAND_TIMEOUT_MS }).catch(() => missing.push(tool));
    }
    return missing.length > 0 ? `${missing.join(', ')} ${missing.length > 1 ? 'are' : 'is'} not installed` : undefined;
  }

  private get hostIfname(): string {
    return `cs${this.tag}u`;
  }

  private get hostTable(): string {
    return `capsule_${this.tag}`;
  }

  /**
   * At daemon start, after running VMs were adopted: a namespace nobody is in
   * is what a crash left, and goes with its link and rules; one with VMs in
   * it gets its rules written again (they may be an older daemon's).
   */
  async start(): Promise<void> {
    if (!this.resolver) this.log.warn('no DNS resolver a namespace can reach in /etc/resolv.conf: sandboxes will not resolve names');
    if (fs.existsSync(this.netns) && this.occupied()) await this.ensure();
    else await this.remove();
  }

  /** The namespace, set up once and shared by every user-mode VM; concurrent callers wait for the same setup. */
  async ensure(): Promise<void> {
    this.ready ??= this.setUp().catch((err: unknown) => {
      this.ready = undefined;
      throw err;
    });
    await this.ready;
  }

  /** At daemon stop: removes everything unless a VM still runs inside (a detached sandbox the next daemon adopts). */
  async stop(): Promise<void> {
    if (fs.existsSync(this.netns) && this.occupied()) return;
    await this.remove();
  }

  private async setUp(): Promise<void> {
    const name = path.basename(this.netns);
    if (!fs.existsSync(this.netns)) {
      await this.remove();
      try {
        await ip(['netns', 'add', name]);
        await ip(['-n', name, 'link', 'set', 'lo', 'up']);
        await ip(['link', 'add', this.hostIfname, 'type', 'veth', 'peer', 'name', UPLINK_IFNAME, 'netns', name]);
        await ip(['addr', 'add', `${this.link.host}/30`, 'dev', this.hostIfname]);
        await ip(['link', 'set', this.hostIfname, 'up']);
        await ip(['-n', name, 'addr', 'add', `${this.link.netns}/30`, 'dev', UPLINK_IFNAME]);
        await ip(['-n', name, 'link', 'set', UPLINK_IFNAME, 'up']);
        await ip(['-n', name, 'route', 'add', 'default', 'via', this.link.host]);
        // A DNS query slirp sends to a loopback stub is redirected out of the namespace: allowed only when asked.
        await inNamespace(this, 'sysctl', ['-qw', `net.ipv4.conf.all.route_localnet=1`]);
      } catch (err) {
        await this.remove();
        throw err;
      }
    }
    enableForwarding();
    await runCommand('nft', ['-f', '-'], {
      input: hostRuleset(this.hostTable, `cs${this.tag}`, this.link.cidr),
      timeoutMs: COMMAND_TIMEOUT_MS,
    });
    await inNamespace(this, 'nft', ['-f', '-'], userNamespaceRuleset(this.resolver, this.link.host));
    this.log.info({ netns: name, host: this.link.host, resolver: this.resolver }, 'user-mode network namespace ready');
  }

  /** Whether any process (a VM's QEMU) is inside the namespace. */
  private occupied(): boolean {
    let target: fs.Stats;
    try {
      target = fs.statSync(this.netns);
    } catch {
      return false;
    }
    for (const entry of listDir('/proc')) {
      if (!/^\d+$/.test(entry)) continue;
      try {
        const ns = fs.statSync(`/proc/${entry}/ns/net`);
        if (ns.ino === target.ino && ns.dev === target.dev) return true;
      } catch {
        // Exited while we looked, or not ours to see.
      }
    }
    return false;
  }

  private async remove(): Promise<void> {
    this.ready = undefined;
    let removed = false;
    if (fs.existsSync(this.netns)) {
      await ip(['netns', 'delete', path.basename(this.netns)]);
      removed = true;
    }
    if ((await linkNames()).includes(this.hostIfname)) await ip(['link', 'delete', this.hostIfname]).catch(() => undefined);
    const tables = await runCommand('nft', ['list', 'tables'], { timeoutMs: COMMAND_TIMEOUT_MS });
    if (new RegExp(`\\b${this.hostTable}\\b`).test(tables.stdout)) {
      await runCommand('nft', ['delete', 'table', 'ip', this.hostTable], { timeoutMs: COMMAND_TIMEOUT_MS });
      removed = true;
    }
    await restoreForwarding(this.log);
    if (removed) this.log.info({ netns: path.basename(this.netns) }, 'user-mode network namespace removed');
  }
}
