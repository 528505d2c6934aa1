// The one reader of what running sandboxes use: every interval it reads each
// running sandbox's QEMU from /proc (stat and status, never smaps: walking a
// QEMU's page tables takes milliseconds; a TAP sandbox's NIC counters, see
// network/nic-traffic.ts) and its overlay's size, and every few intervals asks the guest's agent for its own view; the
// points go into a bounded ring per sandbox, dropped once the sandbox is gone.
// /metrics and the history routes read from here. It must never hold more than
// its rings, wait on a guest longer than a short timeout, or run two ticks at once.
import fs from 'node:fs';
import path from 'node:path';
import type { GuestMetrics, Sandbox, SandboxMetricsPoint } from '@capsule/protocol';
import { CapsuleError, errorMessage } from '../errors.js';
import { runCommand } from '../launcher.js';
import type { Logger } from '../log.js';
import { readTapTraffic } from '../network/nic-traffic.js';
import { SampleRing } from './sample-ring.js';

/** The history kept: 30 minutes at the default interval (5 s × 360 points). */
export const HISTORY_SPAN_MS = 30 * 60_000;
/** Points per sandbox at most, whatever the interval: a short interval (tests) keeps less than HISTORY_SPAN_MS. */
const MAX_POINTS = 3600;
/**
 * The guest is asked on every GUEST_EVERY_POINTS-th point (every 15 s at the
 * default interval): an agent call wakes an idle guest, which under TCG costs
 * the host far more than the daemon's own reads of /proc.
 */
export const GUEST_EVERY_POINTS = 3;
const GUEST_TIMEOUT_MS = 2_000;
/** envd's /metrics answer is ~250 bytes; a guest that sends more is refused. */
const GUEST_ANSWER_MAX_BYTES = 4096;

/** One running sandbox's QEMU as the host sees it; a field is undefined when its file could not be read (the VM just exited). */
export interface QemuUsage {
  cpuSeconds: number | undefined;
  rssBytes: number | undefined;
  privateBytes: number | undefined;
  diskBytes: number | undefined;
  /** TAP mode only: bytes through the sandbox's NIC since its network was set up (a user-mode NIC is not split per sandbox). */
  networkReceivedBytes: number | undefined;
  networkTransmittedBytes: number | undefined;
}

interface UsagePoint extends QemuUsage {
  at: number;
  /** CPU since the previous point of the same QEMU, in percent of one core. */
  cpuPercent: number | undefined;
  /** Filled in after the point is kept, when the guest answers. */
  guest?: GuestMetrics;
}

interface SandboxHistory {
  ring: SampleRing<UsagePoint>;
  /** The QEMU the newest point measured: a new one (stop and start) restarts its CPU count. */
  pid: number;
  pointsUntilGuest: number;
}

/** What the sampler reads sandboxes from. */
export interface UsageSources {
  /** Sandboxes not killed, with the pid of the QEMU of those that have one. */
  listSandboxes(): Promise<Sandbox[]>;
  /** Where a sandbox's disk overlay lives. */
  stateDir(id: string): string;
  /** The guest agent's `GET /metrics` answer, unparsed. */
  askGuest(id: string, timeoutMs: number, maxBytes: number): Promise<unknown>;
}

export class UsageSampler {
  private readonly histories = new Map<string, SandboxHistory>();
  private readonly capacity: number;
  private timer: NodeJS.Timeout | undefined;
  private ticking = false;
  private ticksPerSecond = 100;

  /** `intervalMs` 0 turns sampling off: no timer, no history, and /metrics reads the host when scraped. */
  constructor(
    readonly intervalMs: number,
    private readonly sources: UsageSources,
    private readonly log: Logger,
  ) {
    this.capacity = intervalMs > 0 ? Math.min(Math.ceil(HISTORY_SPAN_MS / intervalMs), MAX_POINTS) : 1;
  }

  /** How far back a history reaches. */
  get retentionMs(): number {
    return this.intervalMs * this.capacity;
  }

  async start(): Promise<void> {
    this.ticksPerSecond = await clockTicksPerSecond();
    if (this.intervalMs <= 0) return;
    this.timer = setInterval(() => void this.tick(), this.intervalMs);
    this.timer.unref();
  }

  stop(): void {
    clearInterval(this.timer);
    this.timer = undefined;
  }

  /** Takes one point of every running sandbox now; a tick still waiting on guests makes this one a no-op. */
  async tick(now = Date.now()): Promise<void> {
    if (this.ticking) return;
    this.ticking = true;
    try {
      await this.sampleAll(now);
    } catch (err) {
      this.log.warn({ err: errorMessage(err) }, 'sampling sandbox usage failed');
    } finally {
      this.ticking = false;
    }
  }

  /** The points of a sandbox between two times, oldest first, as the API shows them; none when it was never sampled. */
  history(id: string, startMs: number, endMs: number): SandboxMetricsPoint[] {
    return (this.histories.get(id)?.ring.range(startMs, endMs) ?? []).map(toApiPoint);
  }

  /** A running sandbox's QEMU now: its newest point while that is fresh (sampling on), else read from the host. */
  currentUsage(sandbox: Sandbox, pid: number): QemuUsage {
    const history = this.histories.get(sandbox.id);
    const newest = history?.ring.latest();
    if (history?.pid === pid && newest && Date.now() - newest.at <= this.intervalMs * 1.5) return newest;
    return this.readHost(sandbox, pid);
  }

  private async sampleAll(now: number): Promise<void> {
    const sandboxes = await this.sources.listSandboxes();
    const present = new Set(sandboxes.map((sandbox) => sandbox.id));
    for (const id of this.histories.keys()) if (!present.has(id)) this.histories.delete(id);

    const guestsAsked: Promise<void>[] = [];
    for (const sandbox of sandboxes) {
      if (sandbox.state !== 'running' || sandbox.pid === undefined) continue;
      const usage = this.readHost(sandbox, sandbox.pid);
      let history = this.histories.get(sandbox.id);
      if (!history) {
        history = { ring: new SampleRing(this.capacity), pid: sandbox.pid, pointsUntilGuest: 0 };
        this.histories.set(sandbox.id, history);
      }
      const previous = history.pid === sandbox.pid ? history.ring.latest() : undefined;
      const point: UsagePoint = { at: now, ...usage, cpuPercent: cpuPercentBetween(previous, usage.cpuSeconds, now) };
      history.pid = sandbox.pid;
      history.ring.push(point);
      if (history.pointsUntilGuest-- <= 0) {
        history.pointsUntilGuest = GUEST_EVERY_POINTS - 1;
        guestsAsked.push(this.askGuest(sandbox.id, point));
      }
    }
    await Promise.all(guestsAsked);
  }

  private async askGuest(id: string, point: UsagePoint): Promise<void> {
    try {
      point.guest = guestMetricsOf(await this.sources.askGuest(id, GUEST_TIMEOUT_MS, GUEST_ANSWER_MAX_BYTES));
    } catch (err) {
      // A guest that is busy, pausing or misbehaving just has no guest view on this point.
      this.log.debug({ sandbox: id, err: errorMessage(err) }, "a guest's metrics could not be read");
    }
  }

  private readHost(sandbox: Sandbox, pid: number): QemuUsage {
    const usage = readQemuUsage(pid, path.join(this.sources.stateDir(sandbox.id), 'overlay.qcow2'), this.ticksPerSecond);
    // Only a TAP sandbox's QEMU sits in a namespace of its own: elsewhere a device of that name would be the host's or shared.
    const traffic = sandbox.network.mode === 'tap' ? readTapTraffic(pid) : undefined;
    return { ...usage, networkReceivedBytes: traffic?.receivedBytes, networkTransmittedBytes: traffic?.transmittedBytes };
  }
}

/** CPU used between the previous point and now, in percent of one core; undefined without a previous point of the same QEMU. */
export function cpuPercentBetween(
  previous: Pick<UsagePoint, 'at' | 'cpuSeconds'> | undefined,
  cpuSeconds: number | undefined,
  now: number,
): number | undefined {
  if (previous?.cpuSeconds === undefined || cpuSeconds === undefined || now <= previous.at) return undefined;
  const percent = ((cpuSeconds - previous.cpuSeconds) / ((now - previous.at) / 1000)) * 100;
  return Math.round(Math.max(percent, 0) * 100) / 100;
}

/**
 * The guest's view from its agent's /metrics answer (envd's JSON). The guest
 * is not trusted: every field must be a finite, non-negative number.
 */
export function guestMetricsOf(agent: unknown): GuestMetrics {
  const field = (name: string): number => {
    const value = (agent as Record<string, unknown> | null)?.[name];
    if (typeof value !== 'number' || !Number.isFinite(value) || value < 0) {
      throw new CapsuleError('agent_protocol_error', `the agent's metrics have no valid ${name}`);
    }
    return value;
  };
  return {
    cpuCount: Math.floor(field('cpu_count')),
    cpuUsedPct: Math.min(field('cpu_used_pct'), 100),
    memUsedBytes: Math.floor(field('mem_used')),
    memTotalBytes: Math.floor(field('mem_total')),
    diskUsedBytes: Math.floor(field('disk_used')),
    diskTotalBytes: Math.floor(field('disk_total')),
  };
}

function toApiPoint(point: UsagePoint): SandboxMetricsPoint {
  return {
    timestamp: new Date(point.at).toISOString(),
    ...(point.cpuSeconds !== undefined ? { cpuSeconds: point.cpuSeconds } : {}),
    ...(point.cpuPercent !== undefined ? { cpuPercent: point.cpuPercent } : {}),
    ...(point.rssBytes !== undefined ? { memoryRssBytes: point.rssBytes } : {}),
    ...(point.privateBytes !== undefined ? { memoryPrivateBytes: point.privateBytes } : {}),
    ...(point.diskBytes !== undefined ? { diskAllocatedBytes: point.diskBytes } : {}),
    ...(point.networkReceivedBytes !== undefined ? { networkReceivedBytes: point.networkReceivedBytes } : {}),
    ...(point.networkTransmittedBytes !== undefined ? { networkTransmittedBytes: point.networkTransmittedBytes } : {}),
    ...(point.guest ? { guest: point.guest } : {}),
  };
}

/** The kernel's USER_HZ, the unit of /proc/PID/stat's times; 100, Linux's value on every common architecture, if getconf fails. */
async function clockTicksPerSecond(): Promise<number> {
  return await runCommand('getconf', ['CLK_TCK']).then(
    ({ stdout }) => Number(stdout.trim()) || 100,
    () => 100,
  );
}

/**
 * Reads one QEMU's CPU time and memory from /proc and its overlay's allocated
 * blocks: three small reads, tens of microseconds in all. (smaps_rollup, which
 * splits private from shared pages exactly, costs 4-10 ms per QEMU under TCG:
 * 50 sandboxes every 5 s would be 5 % of a core.)
 */
export function readQemuUsage(
  pid: number,
  overlay: string,
  ticksPerSecond: number,
): Omit<QemuUsage, 'networkReceivedBytes' | 'networkTransmittedBytes'> {
  const ticks = parseCpuTicks(readOrUndefined(`/proc/${pid}/stat`));
  const memory = parseStatusMemory(readOrUndefined(`/proc/${pid}/status`));
  let diskBytes: number | undefined;
  try {
    diskBytes = fs.statSync(overlay).blocks * 512;
  } catch {
    diskBytes = undefined;
  }
  return {
    cpuSeconds: ticks === undefined ? undefined : ticks / ticksPerSecond,
    rssBytes: memory?.rssBytes,
    privateBytes: memory?.privateBytes,
    diskBytes,
  };
}

/**
 * VmRSS and RssAnon of a /proc/PID/status, in bytes. RssAnon is the memory only
 * this QEMU holds (its heap, TCG's code buffer, guest pages it wrote): what
 * removing it gives back. Guest pages it only read from its template's memory
 * file are page cache, shared with the template's other sandboxes: in VmRSS, not in RssAnon.
 */
export function parseStatusMemory(status: string | undefined): { rssBytes: number; privateBytes: number } | undefined {
  const kib = (key: string) => Number(new RegExp(`^${key}:\\s+(\\d+) kB$`, 'm').exec(status ?? '')?.[1] ?? NaN);
  const rss = kib('VmRSS');
  const anon = kib('RssAnon');
  return Number.isFinite(rss) && Number.isFinite(anon) ? { rssBytes: rss * 1024, privateBytes: anon * 1024 } : undefined;
}

/** utime + stime (fields 14 and 15) of a /proc/PID/stat line; read after the command name, which may hold spaces and parentheses. */
export function parseCpuTicks(stat: string | undefined): number | undefined {
  if (stat === undefined) return undefined;
  // Fields from the 3rd (the state) on, after the last ')' that closes the command name.
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  const utime = Number(fields[14 - 3]);
  const stime = Number(fields[15 - 3]);
  return Number.isFinite(utime) && Number.isFinite(stime) ? utime + stime : undefined;
}

function readOrUndefined(file: string): string | undefined {
  try {
    return fs.readFileSync(file, 'utf8');
  } catch {
    return undefined;
  }
}
