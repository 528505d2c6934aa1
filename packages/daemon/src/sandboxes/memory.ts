// Host memory: what a create may still take (admission control, one check at
// a time, each holding what it admitted until the store counts it), and what a
// running VM really uses, split into what is private to it and what it shares
// with other VMs (a warm snapshot's pages). Reads only the host's /proc; never
// starts or stops anything.
import fs from 'node:fs';
import { CapsuleError } from '../errors.js';
import { Turns } from '../turns.js';

export interface HostMemory {
  totalMiB: number;
  availableMiB: number;
}

/** Parses /proc/meminfo (values in kB). */
export function parseMeminfo(text: string): HostMemory {
  const kib = (key: string) => Number(new RegExp(`^${key}:\\s+(\\d+) kB`, 'm').exec(text)?.[1] ?? NaN);
  const total = kib('MemTotal');
  const available = kib('MemAvailable');
  if (!Number.isFinite(total) || !Number.isFinite(available)) throw new Error('cannot read MemTotal/MemAvailable from /proc/meminfo');
  return { totalMiB: Math.floor(total / 1024), availableMiB: Math.floor(available / 1024) };
}

export function readHostMemory(): HostMemory {
  return parseMeminfo(fs.readFileSync('/proc/meminfo', 'utf8'));
}

export interface AdmissionInput {
  /** Guest memory the create adds (0 when it claims an already running warm-pool VM). */
  addedMiB: number;
  /** Guest memory of every sandbox starting or running, and of warm-pool VMs. */
  committedMiB: number;
  /** Guest memory the host lets sandboxes have in all. */
  budgetMiB: number;
  host: HostMemory;
}

/** Memory the host keeps for itself whatever sandboxes ask. */
export function reserveMiB(totalMiB: number): number {
  return Math.min(2048, Math.floor(totalMiB / 10));
}

/**
 * Why a create must be refused, or undefined. Two limits: the guests' memory
 * sizes added up stay within the budget (guests rarely touch all of theirs,
 * and clones share their template's pages, so the budget may exceed RAM), and
 * the host's available memory, less half of what the new guest may touch,
 * stays above a reserve, so the host never goes into swap or the OOM killer.
 */
export function admissionProblem(input: AdmissionInput): string | undefined {
  if (input.committedMiB + input.addedMiB > input.budgetMiB) {
    return `sandboxes would have ${input.committedMiB + input.addedMiB} MiB of guest memory in all, more than the budget of ${input.budgetMiB} MiB`;
  }
  const reserve = reserveMiB(input.host.totalMiB);
  if (input.host.availableMiB - input.addedMiB / 2 < reserve) {
    return `the host has ${input.host.availableMiB} MiB of memory available and keeps ${reserve} MiB for itself`;
  }
  return undefined;
}

/**
 * Guest memory held from an admission until its VM is counted as `running` in
 * the store, or has failed. Releasing twice is harmless, so every way out of
 * an operation may release.
 */
export class MemoryReservation {
  private released = false;

  constructor(
    readonly mib: number,
    private readonly onRelease: (reservation: MemoryReservation) => void,
  ) {}

  release(): void {
    if (this.released) return;
    this.released = true;
    this.onRelease(this);
  }
}

/**
 * Admission under one lock. What is committed is the memory of sandboxes the
 * store has as `running` plus every reservation held: each path that starts a
 * VM (create, fork, resume, the warm pool) reserves before it starts anything
 * and releases once its sandbox is `running` in the store or has failed, so
 * requests racing for the last of the budget can never all pass the check.
 */
export class MemoryAdmission {
  private readonly held = new Set<MemoryReservation>();
  private readonly lock = new Turns(1);
  private readonly neverAborts = new AbortController().signal;

  constructor(
    /** Guest memory of the sandboxes the store has as `running`. */
    private readonly runningMiB: () => Promise<number>,
    private readonly budgetMiB: () => number,
    private readonly hostMemory: () => HostMemory = readHostMemory,
  ) {}

  /** Guest memory reserved and not yet released. */
  get reservedMiB(): number {
    let total = 0;
    for (const reservation of this.held) total += reservation.mib;
    return total;
  }

  /** Reserves `addedMiB`, or refuses with `capacity` when the host has no room for it now. */
  async reserve(addedMiB: number): Promise<MemoryReservation> {
    const unlock = await this.lock.take(this.neverAborts);
    try {
      // Reservations are summed before the store is read: one released meanwhile has its sandbox
      // counted as running by then (counted twice for a moment, never missed).
      const reservedMiB = this.reservedMiB;
      const committedMiB = reservedMiB + (await this.runningMiB());
      const problem = admissionProblem({ addedMiB, committedMiB, budgetMiB: this.budgetMiB(), host: this.hostMemory() });
      if (problem) {
        throw new CapsuleError('capacity', `not enough memory for another sandbox: ${problem}`, {
          hint: 'retry in a few seconds or once sandboxes end; remove or pause sandboxes, ask for less memory, or raise CAPSULE_MEMORY_BUDGET_MIB',
        });
      }
      const reservation = new MemoryReservation(addedMiB, (r) => this.held.delete(r));
      this.held.add(reservation);
      return reservation;
    } finally {
      unlock();
    }
  }

  /** Runs `work` holding a reservation of `addedMiB`, released however it ends. */
  async whileReserved<T>(addedMiB: number, work: () => Promise<T>): Promise<T> {
    const reservation = await this.reserve(addedMiB);
    try {
      return await work();
    } finally {
      reservation.release();
    }
  }
}

export interface VmMemoryUse {
  rssMiB: number;
  /** Pages only this VM maps: what removing it gives back. */
  privateMiB: number;
  /** Pages mapped by other processes too (a warm snapshot's, shared by its clones). */
  sharedMiB: number;
}

/** The same, in bytes, for /metrics. */
export interface VmMemoryBytes {
  rssBytes: number;
  privateBytes: number;
  sharedBytes: number;
}

/** Parses /proc/PID/smaps_rollup (values in kB). */
export function parseSmapsRollupBytes(text: string): VmMemoryBytes {
  const bytes = (key: string) => 1024 * Number(new RegExp(`^${key}:\\s+(\\d+) kB`, 'm').exec(text)?.[1] ?? 0);
  return {
    rssBytes: bytes('Rss'),
    privateBytes: bytes('Private_Clean') + bytes('Private_Dirty'),
    sharedBytes: bytes('Shared_Clean') + bytes('Shared_Dirty'),
  };
}

export function parseSmapsRollup(text: string): VmMemoryUse {
  return inMiB(parseSmapsRollupBytes(text));
}

function inMiB({ rssBytes, privateBytes, sharedBytes }: VmMemoryBytes): VmMemoryUse {
  const mib = (value: number) => Math.round(value / 1048576);
  return { rssMiB: mib(rssBytes), privateMiB: mib(privateBytes), sharedMiB: mib(sharedBytes) };
}

/** A live process's memory (Rss is its VmRSS, counted page by page); undefined once it is gone. */
function vmMemoryBytes(pid: number): VmMemoryBytes | undefined {
  try {
    return parseSmapsRollupBytes(fs.readFileSync(`/proc/${pid}/smaps_rollup`, 'utf8'));
  } catch {
    return undefined;
  }
}

export function vmMemoryUse(pid: number): VmMemoryUse | undefined {
  const bytes = vmMemoryBytes(pid);
  return bytes ? inMiB(bytes) : undefined;
}
