import { describe, expect, it } from 'vitest';
import { hostTscKhz, tscKhzFromCpuinfo, tscKhzFromKernelLog } from './tsc.js';

describe('host TSC frequency', () => {
  it('prefers the refined calibration in the kernel log', () => {
    const log = '[0.0] tsc: Detected 2596.100 MHz processor\n[1.2] tsc: Refined TSC clocksource calibration: 2595.987 MHz\n';
    expect(tscKhzFromKernelLog(log)).toBe(2595987);
    expect(tscKhzFromKernelLog('[0.0] tsc: Detected 2596.100 MHz processor')).toBe(2596100);
    expect(tscKhzFromKernelLog('nothing here')).toBeUndefined();
  });

  it('falls back to cpuinfo only when the TSC is constant', () => {
    const cpuinfo = 'model name\t: AMD EPYC\ncpu MHz\t\t: 2596.100\nflags\t\t: fpu tsc constant_tsc nonstop_tsc\n';
    expect(tscKhzFromCpuinfo(cpuinfo)).toBe(2596100);
    expect(tscKhzFromCpuinfo(cpuinfo.replace('constant_tsc', ''))).toBeUndefined();
  });

  it('finds a plausible frequency on this host', async () => {
    const khz = await hostTscKhz();
    expect(khz).toBeGreaterThan(500_000);
    expect(khz).toBeLessThan(10_000_000);
  });
});
