// The host's TSC frequency, handed to TCG guests on their kernel command line.
// Under TCG the guest's TSC ticks at the host's rate, but the guest kernel
// calibrates it against an emulated PIT; on a loaded host that calibration
// fails and the guest hangs at boot (seen with three VMs booting at once on two
// cores). Telling the kernel the frequency skips the calibration.
import fs from 'node:fs';
import { runCommand } from '../launcher.js';

/** Reads "Refined TSC clocksource calibration: X MHz" or "tsc: Detected X MHz" from kernel messages. */
export function tscKhzFromKernelLog(log: string): number | undefined {
  const refined = /Refined TSC clocksource calibration: ([0-9.]+) MHz/.exec(log);
  const detected = /tsc: Detected ([0-9.]+) MHz/.exec(log);
  const mhz = Number((refined ?? detected)?.[1]);
  return Number.isFinite(mhz) && mhz > 0 ? Math.round(mhz * 1000) : undefined;
}

/** The first "cpu MHz" of /proc/cpuinfo, when the CPU says its TSC is constant. */
export function tscKhzFromCpuinfo(cpuinfo: string): number | undefined {
  if (!/\bconstant_tsc\b/.test(cpuinfo)) return undefined;
  const mhz = Number(/^cpu MHz\s*:\s*([0-9.]+)/m.exec(cpuinfo)?.[1]);
  return Number.isFinite(mhz) && mhz > 0 ? Math.round(mhz * 1000) : undefined;
}

let cached: Promise<number | undefined> | undefined;

export function hostTscKhz(): Promise<number | undefined> {
  cached ??= (async () => {
    try {
      const { stdout } = await runCommand('dmesg', [], { timeoutMs: 5000 });
      const fromLog = tscKhzFromKernelLog(stdout);
      if (fromLog !== undefined) return fromLog;
    } catch {
      // dmesg may be restricted or rotated; fall back to cpuinfo.
    }
    try {
      return tscKhzFromCpuinfo(fs.readFileSync('/proc/cpuinfo', 'utf8'));
    } catch {
      return undefined;
    }
  })();
  return cached;
}
