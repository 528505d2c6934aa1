// TAP networking (root only, opt-in with CAPSULE_NETWORK=tap): per sandbox a
// network namespace holding a persistent tap device (QEMU is started inside
// the namespace and opens it by name) with the guest's gateway address, NAT
// and the sandbox's egress filter, linked to the host by a veth pair whose
// addresses are allocated from a pool and recorded in the store. The host
// gets one nftables table per daemon (masquerade out, no way in to the host or
// between sandboxes). Everything is named after a tag of this daemon's state
// folder, so cleanup never touches another daemon's namespaces or rules.
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { CapsuleError, errorMessage } from '../errors.js';
import { runCommand } from '../launcher.js';
import type { Logger } from '../log.js';
import type { NetworkLeaseRecord, Store } from '../store/store.js';
import type { EgressPolicy } from './egress-policy.js';
import { NON_PUBLIC_NETWORKS, parseCidr } from './egress-policy.js';
import { GUEST_NETWORK } from '../guest-network.js';

export const NETNS_DIR = '/run/netns';
/** Names inside a sandbox's namespace: private to it, so the same in every one. */
export const TAP_IFNAME = 'tap0';
export const UPLINK_IFNAME = 'uplink0';
export const COMMAND_TIMEOUT_MS = 15_000;

export interface TapLease {
  sandboxId: string;
  slot: number;
  netns: string;
  hostIfname: string;
  hostAddress: string;
  netnsAddress: string;
}

/**
 * The resolver sandboxes' DNS goes to: the host's, or, when that is a local
 * stub (systemd-resolved's 127.0.0.53), the upstream the stub uses. A
 * namespace cannot reach the host's loopback.
 */
export function systemResolver(): string | undefined {
  return hostResolver(readFileOr('/etc/resolv.conf', '')) ?? hostResolver(readFileOr('/run/systemd/resolve/resolv.conf', ''));
}

/** The first IPv4 nameserver of the host's resolv.conf that a namespace can reach (not loopback). */
export function hostResolver(resolvConf: string): string | undefined {
  for (const line of resolvConf.split('\n')) {
    const match = /^\s*nameserver\s+(\d{1,3}(?:\.\d{1,3}){3})\s*$/.exec(line);
    if (match && !match[1]!.startsWith('127.')) return match[1];
  }
  return undefined;
}

function ipv4ToNumber(address: string): number {
  return address.split('.').reduce((acc, octet) => acc * 256 + Number(octet), 0);
}

function numberToIpv4(value: number): string {
  return [24, 16, 8, 0].map((shift) => (value >>> shift) & 255).join('.');
}

/** Slot `slot` of `pool` (a CIDR): a /30 whose first host address is the host's end, the second the namespace's. */
export function slotAddresses(pool: string, slot: number): { host: string; netns: string } {
  const base = parseCidr(pool).split('/')[0] as string;
  if (slot < 0 || slot >= poolSlots(pool))
    throw new CapsuleError('insufficient_resources', `the TAP address pool ${pool} has no slot ${slot}`);
  const start = ipv4ToNumber(base) + slot * 4;
  return { host: numberToIpv4(start + 1), netns: numberToIpv4(start + 2) };
}

export function poolSlots(pool: string): number {
  const prefix = Number(parseCidr(pool).split('/')[1]);
  return prefix > 30 ? 0 : 2 ** (30 - prefix);
}

/**
 * The nftables ruleset of one sandbox's namespace (replaced whole, atomically,
 * on every policy change). Non-public networks (the host's private networks,
 * link-local metadata) are denied after the sandbox's own lists, so only its
 * allow-list opens them.
 */
export function namespaceRuleset(policy: EgressPolicy, resolver: string | undefined): string {
  const egress = [
    // Name resolution through the guest's DNS address is part of having a network, whatever the lists say.
    ...(resolver ? [`ct original ip daddr ${GUEST_NETWORK.dns} accept`] : []),
    ...policy.allow.map((cidr) => `ip daddr ${cidr} accept`),
    ...policy.deny.map((cidr) => `ip daddr ${cidr} drop`),
    `ip daddr { ${NON_PUBLIC_NETWORKS.join(', ')} } drop`,
    'accept',
  ];
  return [
    'table ip capsule',
    'delete table ip capsule',
    'table ip capsule {',
    '  chain prerouting {',
    '    type nat hook prerouting priority dstnat;',
    ...(resolver
      ? [`    iifname "${TAP_IFNAME}" ip daddr ${GUEST_NETWORK.dns} meta l4proto { tcp, udp } th dport 53 dnat to ${resolver}`]
      : []),
    '  }',
    '  chain postrouting {',
    '    type nat hook postrouting priority srcnat;',
    `    oifname "${UPLINK_IFNAME}" masquerade`,
    '  }',
    '  chain input {',
    '    type filter hook input priority filter; policy accept;',
    // The namespace itself offers the guest nothing.
    `    iifname "${TAP_IFNAME}" ct state established,related accept`,
    `    iifname "${TAP_IFNAME}" drop`,
    '  }',
    '  chain forward {',
    '    type filter hook forward priority filter; policy drop;',
    `    iifname "${UPLINK_IFNAME}" oifname "${TAP_IFNAME}" ct state established,related accept`,
    `    iifname "${TAP_IFNAME}" oifname "${UPLINK_IFNAME}" jump egress`,
    '  }',
    '  chain egress {',
    ...egress.map((rule) => `    ${rule}`),
    '  }',
    '}',
    '',
  ].join('\n');
}

/** The host's table: sandboxes' traffic leaves masqueraded; none of it may reach the host or another sandbox. */
export function hostRuleset(table: string, ifnamePrefix: string, pool: string): string {
  const ours = `"${ifnamePrefix}*"`;
  return [
    `table ip ${table}`,
    `delete table ip ${table}`,
    `table ip ${table} {`,
    '  chain postrouting {',
    '    type nat hook postrouting priority srcnat;',
    `    ip saddr ${parseCidr(pool)} oifname != ${ours} masquerade`,
    '  }',
    '  chain input {',
    '    type filter hook input priority filter; policy accept;',
    `    iifname ${ours} ct state established,related accept`,
    `    iifname ${ours} drop`,
    '  }',
    '  chain forward {',
    '    type filter hook forward priority filter; policy accept;',
    `    iifname ${ours} oifname ${ours} drop`,
    '  }',
    '}',
    '',
  ].join('\n');
}

export class TapNetwork {
  /** Tag of this daemon's state folder: part of every name it creates. */
  readonly tag: string;
  private readonly leases = new Map<string, TapLease>();
  private queue: Promise<unknown> = Promise.resolve();
  private readonly resolver: string | undefined;

  constructor(
    private readonly store: Store,
    private readonly log: Logger,
    stateDir: string,
    private readonly pool: string,
    private readonly tapGroup?: number | undefined,
  ) {
    this.tag = stateTag(stateDir);
    this.resolver = systemResolver();
    if (poolSlots(pool) === 0) throw new Error(`CAPSULE_TAP_POOL must be a network of /30 or larger, not ${pool}`);
  }

  private get hostTable(): string {
    return `capsule_${this.tag}`;
  }

  private get ifnamePrefix(): string {
    return `cs${this.tag}`;
  }

  private netnsName(id: string): string {
    return `capsule-${this.tag}-${id}`;
  }

  /** One change at a time: allocation, namespaces and the host table must not interleave. */
  private serial<T>(work: () => Promise<T>): Promise<T> {
    const next = this.queue.then(work, work);
    this.queue = next.catch(() => undefined);
    return next;
  }

  /** Refuses to start when this host cannot do TAP networking, saying what is missing. */
  static async checkHost(): Promise<void> {
    const missing: string[] = [];
    if (process.getuid?.() !== 0) missing.push('capsuled must run as root');
    if (!fs.existsSync('/dev/net/tun')) missing.push('/dev/net/tun is missing');
    for (const [tool, args] of [
      ['ip', ['-V']],
      ['nft', ['--version']],
      ['nsenter', ['--version']],
    ] as const) {
      await runCommand(tool, [...args], { timeoutMs: COMMAND_TIMEOUT_MS }).catch(() => missing.push(`${tool} is not installed`));
    }
    if (missing.length > 0) {
      throw new CapsuleError('internal', `CAPSULE_NETWORK=tap cannot work here: ${missing.join('; ')}`, {
        hint: 'run scripts/setup as root, or use the default user-mode networking',
      });
    }
  }

  /**
   * At daemon start: loads the leases, frees those of sandboxes that no longer
   * run or wait paused (a crash, a kill -9 mid-create, warm-pool VMs), and
   * removes namespaces and host links of ours that no lease explains.
   */
  async start(keep: (sandboxId: string) => Promise<boolean>): Promise<void> {
    await this.serial(async () => {
      for (const row of await this.store.listNetworkLeases()) this.leases.set(row.sandbox_id, leaseOf(row));
    });
    for (const lease of [...this.leases.values()]) {
      if (!(await keep(lease.sandboxId))) await this.release(lease.sandboxId);
    }
    await this.serial(async () => {
      const known = new Set([...this.leases.values()].map((l) => l.netns));
      for (const name of listDir(NETNS_DIR)) {
        if (name.startsWith(`capsule-${this.tag}-`) && !known.has(path.join(NETNS_DIR, name))) {
          this.log.warn({ netns: name }, 'removing a network namespace no sandbox owns');
          await ip(['netns', 'delete', name]).catch(() => undefined);
        }
      }
      const knownLinks = new Set([...this.leases.values()].map((l) => l.hostIfname));
      for (const link of await linkNames()) {
        if (link.startsWith(this.ifnamePrefix) && !knownLinks.has(link)) {
          this.log.warn({ link }, 'removing a host link no sandbox owns');
          await ip(['link', 'delete', link]).catch(() => undefined);
        }
      }
      if (this.leases.size > 0) await this.installHostRules();
      else await this.removeHostRules();
    });
  }

  lease(id: string): TapLease | undefined {
    return this.leases.get(id);
  }

  /** Sandbox `id`'s namespace, set up now if it is not there (a new sandbox, or one paused across a host reboot). */
  async ensure(id: string): Promise<TapLease> {
    return await this.serial(async () => {
      let lease = this.leases.get(id);
      if (!lease) {
        lease = await this.allocate(id);
        this.leases.set(id, lease);
      }
      if (!fs.existsSync(lease.netns)) {
        if (!(await this.hostRulesPresent())) await this.installHostRules();
        await this.createNamespace(lease).catch(async (err: unknown) => {
          await this.destroyNamespace(lease!);
          throw err;
        });
      }
      return lease;
    });
  }

  /** Replaces the namespace's ruleset with one for `policy`. */
  async applyPolicy(id: string, policy: EgressPolicy): Promise<void> {
    const lease = this.leases.get(id);
    if (!lease) throw new Error(`sandbox ${id} has no TAP network`);
    await this.serial(() => inNamespace(lease, 'nft', ['-f', '-'], namespaceRuleset(policy, this.resolver)));
  }

  /** Removes the namespace (its tap, veth and rules go with it) and frees the lease; the last one takes the host table. */
  async release(id: string): Promise<void> {
    await this.serial(async () => {
      const lease = this.leases.get(id) ?? (await this.store.getNetworkLease(id).then((r) => r && leaseOf(r)));
      if (!lease) return;
      await this.destroyNamespace(lease);
      await this.store.deleteNetworkLease(id);
      this.leases.delete(id);
      if (this.leases.size === 0) await this.removeHostRules();
      this.log.debug({ sandbox: id, slot: lease.slot }, 'TAP network released');
    });
  }

  /** The lowest free slot, recorded before anything is created so a crash leaves a lease to clean up, never an unknown namespace. */
  private async allocate(id: string): Promise<TapLease> {
    const used = new Set(await this.store.usedNetworkLeaseSlots());
    let slot = 0;
    while (used.has(slot)) slot++;
    if (slot >= poolSlots(this.pool)) {
      throw new CapsuleError('insufficient_resources', `the TAP address pool ${this.pool} is used up (${slot} sandboxes)`, {
        hint: 'remove sandboxes, or set a larger CAPSULE_TAP_POOL',
      });
    }
    const addresses = slotAddresses(this.pool, slot);
    const row: NetworkLeaseRecord = {
      sandbox_id: id,
      slot,
      netns: path.join(NETNS_DIR, this.netnsName(id)),
      host_ifname: `${this.ifnamePrefix}${slot.toString(36)}`,
      host_address: addresses.host,
      netns_address: addresses.netns,
      created_at: new Date().toISOString(),
    };
    await this.store.insertNetworkLease(row);
    return leaseOf(row);
  }

  private async createNamespace(lease: TapLease): Promise<void> {
    const name = path.basename(lease.netns);
    const g = GUEST_NETWORK;
    await ip(['netns', 'add', name]);
    await ip(['-n', name, 'link', 'set', 'lo', 'up']);
    await ip(['link', 'add', lease.hostIfname, 'type', 'veth', 'peer', 'name', UPLINK_IFNAME, 'netns', name]);
    await ip(['addr', 'add', `${lease.hostAddress}/30`, 'dev', lease.hostIfname]);
    await ip(['link', 'set', lease.hostIfname, 'up']);
    await ip(['-n', name, 'addr', 'add', `${lease.netnsAddress}/30`, 'dev', UPLINK_IFNAME]);
    await ip(['-n', name, 'link', 'set', UPLINK_IFNAME, 'up']);
    await ip(['-n', name, 'route', 'add', 'default', 'via', lease.hostAddress]);
    // Persistent, so it outlives each QEMU (pause, resume) and QEMU needs no privileges to create it;
    // owned by the jailed VMs' group, so a QEMU without CAP_NET_ADMIN may attach to it (each sees only its namespace's).
    const group = this.tapGroup === undefined ? [] : ['group', String(this.tapGroup)];
    await ip(['-n', name, 'tuntap', 'add', 'dev', TAP_IFNAME, 'mode', 'tap', ...group]);
    await ip(['-n', name, 'link', 'set', TAP_IFNAME, 'address', g.gatewayMac]);
    await ip(['-n', name, 'addr', 'add', `${g.gateway}/${g.prefixLength}`, 'dev', TAP_IFNAME]);
    // The guest's DNS address must answer ARP on the tap for its queries to arrive and be redirected to the resolver.
    await ip(['-n', name, 'addr', 'add', `${g.dns}/32`, 'dev', TAP_IFNAME]);
    await ip(['-n', name, 'link', 'set', TAP_IFNAME, 'up']);
    await inNamespace(lease, 'sysctl', ['-qw', 'net.ipv4.ip_forward=1']);
    this.log.info({ sandbox: lease.sandboxId, netns: name, host: lease.hostAddress }, 'TAP network created');
  }

  private async destroyNamespace(lease: TapLease): Promise<void> {
    // Deleting the namespace destroys its tap and its end of the veth pair, which takes the host's end along.
    if (fs.existsSync(lease.netns))
      await ip(['netns', 'delete', path.basename(lease.netns)]).catch((err: unknown) =>
        this.log.error({ netns: lease.netns, err: errorMessage(err) }, 'could not delete a network namespace'),
      );
    if ((await linkNames()).includes(lease.hostIfname)) await ip(['link', 'delete', lease.hostIfname]).catch(() => undefined);
  }

  private async installHostRules(): Promise<void> {
    enableForwarding();
    await runCommand('nft', ['-f', '-'], {
      input: hostRuleset(this.hostTable, this.ifnamePrefix, this.pool),
      timeoutMs: COMMAND_TIMEOUT_MS,
    });
  }

  private async hostRulesPresent(): Promise<boolean> {
    return await runCommand('nft', ['list', 'table', 'ip', this.hostTable], { timeoutMs: COMMAND_TIMEOUT_MS }).then(
      () => true,
      () => false,
    );
  }

  private async removeHostRules(): Promise<void> {
    if (await this.hostRulesPresent())
      await runCommand('nft', ['delete', 'table', 'ip', this.hostTable], { timeoutMs: COMMAND_TIMEOUT_MS });
    await restoreForwarding(this.log);
  }
}

const IP_FORWARD = '/proc/sys/net/ipv4/ip_forward';

/**
 * Where capsuled notes that it turned IPv4 forwarding on, so that it can turn
 * it off again: one note per network namespace, as the setting is, and under
 * /run, which a reboot clears as it clears the setting. Every daemon of the
 * namespace shares it.
 */
function forwardingNote(): string {
  return `/run/capsule-ip-forward-${fs.statSync('/proc/self/ns/net').ino}`;
}

/** Turns IPv4 forwarding on for the sandboxes' traffic; a host that forwards already is left as it is. */
export function enableForwarding(): void {
  if (fs.readFileSync(IP_FORWARD, 'utf8').trim() === '1') return;
  // The note first: a crash between the two leaves a note for a host that does not forward, which is harmless.
  fs.writeFileSync(forwardingNote(), '');
  fs.writeFileSync(IP_FORWARD, '1');
}

/** Turns forwarding off again if capsuled turned it on and no daemon's sandboxes (no capsule_* table) need it any more. */
export async function restoreForwarding(log: Logger): Promise<void> {
  const note = forwardingNote();
  if (!fs.existsSync(note)) return;
  const { stdout: tables } = await runCommand('nft', ['list', 'tables'], { timeoutMs: COMMAND_TIMEOUT_MS });
  if (/\bcapsule_[0-9a-f]{6}\b/.test(tables)) return;
  fs.writeFileSync(IP_FORWARD, '0');
  fs.rmSync(note, { force: true });
  log.info('IPv4 forwarding turned off again: no TAP sandbox is left');
}

function leaseOf(row: NetworkLeaseRecord): TapLease {
  return {
    sandboxId: row.sandbox_id,
    slot: row.slot,
    netns: row.netns,
    hostIfname: row.host_ifname,
    hostAddress: row.host_address,
    netnsAddress: row.netns_address,
  };
}

/** The links of this process's network namespace (not /sys/class/net: that shows the namespace sysfs was mounted in). */
export function parseLinkNames(ipLinkOutput: string): string[] {
  return ipLinkOutput
    .split('\n')
    .map((line) => /^\d+:\s+([^:@\s]+)/.exec(line)?.[1])
    .filter((name): name is string => name !== undefined);
}

export async function linkNames(): Promise<string[]> {
  return parseLinkNames((await runCommand('ip', ['-o', 'link', 'show'], { timeoutMs: COMMAND_TIMEOUT_MS })).stdout);
}

export async function ip(args: string[]): Promise<void> {
  await runCommand('ip', args, { timeoutMs: COMMAND_TIMEOUT_MS });
}

/** Tag of a daemon's state folder, part of every network name it creates: one daemon's cleanup never touches another's. */
export function stateTag(stateDir: string): string {
  return createHash('sha256').update(path.resolve(stateDir)).digest('hex').slice(0, 6);
}

export async function inNamespace(target: { netns: string }, command: string, args: string[], input?: string): Promise<void> {
  await runCommand('nsenter', [`--net=${target.netns}`, '--', command, ...args], {
    timeoutMs: COMMAND_TIMEOUT_MS,
    ...(input !== undefined ? { input } : {}),
  });
}

export function listDir(dir: string): string[] {
  try {
    return fs.readdirSync(dir);
  } catch {
    return [];
  }
}

export function readFileOr(file: string, fallback: string): string {
  try {
    return fs.readFileSync(file, 'utf8');
  } catch {
    return fallback;
  }
}
