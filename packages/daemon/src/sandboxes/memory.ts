// Host memory: what a create may still take (admission control), and what a
// running VM really uses, split into what is private to it and what it shares
// with other VMs (a warm snapshot's pages). Reads only the host's /proc.
import fs from 'node:fs';

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

export interface VmMemoryUse {
  rssMiB: number;
  /** Pages only this VM maps: what removing it gives back. */
  privateMiB: number;
  /** Pages mapped by other processes too (a warm snapshot's, shared by its clones). */
  sharedMiB: number;
}

/** Parses /proc/PID/smaps_rollup (values in kB). */
export function parseSmapsRollup(text: string): VmMemoryUse {
  const kib = (key: string) => Number(new RegExp(`^${key}:\\s+(\\d+) kB`, 'm').exec(text)?.[1] ?? 0);
  const mib = (value: number) => Math.round(value / 1024);
  return {
    rssMiB: mib(kib('Rss')),
    privateMiB: mib(kib('Private_Clean') + kib('Private_Dirty')),
    sharedMiB: mib(kib('Shared_Clean') + kib('Shared_Dirty')),
  };
}

export function vmMemoryUse(pid: number): VmMemoryUse | undefined {
  try {
    return parseSmapsRollup(fs.readFileSync(`/proc/${pid}/smaps_rollup`, 'utf8'));
  } catch {
    return undefined;
  }
}
