import { describe, expect, it } from 'vitest';
import { setTimeout as sleep } from 'node:timers/promises';
import { admissionProblem, MemoryAdmission, parseMeminfo, parseSmapsRollup, reserveMiB, vmMemoryUse } from './memory.js';

describe('host memory and admission', () => {
  const host = { totalMiB: 24_000, availableMiB: 20_000 };

  it('reads MemTotal and MemAvailable', () => {
    expect(parseMeminfo('MemTotal:       24576000 kB\nMemFree:  1 kB\nMemAvailable:   20480000 kB\n')).toEqual({
      totalMiB: 24000,
      availableMiB: 20000,
    });
    expect(() => parseMeminfo('nothing')).toThrow(/MemTotal/);
  });

  it('admits within the budget and above the reserve', () => {
    expect(admissionProblem({ addedMiB: 512, committedMiB: 10_000, budgetMiB: 40_000, host })).toBeUndefined();
  });

  it('refuses past the budget', () => {
    expect(admissionProblem({ addedMiB: 1024, committedMiB: 39_500, budgetMiB: 40_000, host })).toMatch(
      /more than the budget of 40000 MiB/,
    );
  });

  it('refuses when the host would fall below its reserve, whatever the budget says', () => {
    expect(reserveMiB(24_000)).toBe(2048);
    expect(admissionProblem({ addedMiB: 4096, committedMiB: 0, budgetMiB: 1e9, host: { totalMiB: 24_000, availableMiB: 3000 } })).toMatch(
      /keeps 2048 MiB/,
    );
    // A claim of a pool VM adds nothing and is admitted on the same host.
    expect(
      admissionProblem({ addedMiB: 0, committedMiB: 0, budgetMiB: 1e9, host: { totalMiB: 24_000, availableMiB: 3000 } }),
    ).toBeUndefined();
  });

  it('splits a process memory into private and shared', () => {
    const rollup =
      'Rss:              204800 kB\nPss:  1 kB\nShared_Clean:      51200 kB\nShared_Dirty:          0 kB\nPrivate_Clean:      1024 kB\nPrivate_Dirty:    152576 kB\n';
    expect(parseSmapsRollup(rollup)).toEqual({ rssMiB: 200, privateMiB: 150, sharedMiB: 50 });
    expect(vmMemoryUse(process.pid)?.rssMiB).toBeGreaterThan(10);
    expect(vmMemoryUse(999_999_999)).toBeUndefined();
  });
});

describe('memory reservations', () => {
  const roomyHost = () => ({ totalMiB: 24_000, availableMiB: 20_000 });

  it('admits exactly as many racing reservations as the budget holds, however slow the store is', async () => {
    // The store answers after a real delay: every check would see 0 MiB running without the lock.
    const admission = new MemoryAdmission(
      () => sleep(5).then(() => 0),
      () => 1024,
      roomyHost,
    );
    const results = await Promise.allSettled(Array.from({ length: 20 }, () => admission.reserve(512)));
    expect(results.filter((r) => r.status === 'fulfilled')).toHaveLength(2);
    for (const r of results) if (r.status === 'rejected') expect(r.reason).toMatchObject({ code: 'capacity' });
    expect(admission.reservedMiB).toBe(1024);
  });

  it('gives a reservation back however the work ends, once', async () => {
    const admission = new MemoryAdmission(
      async () => 0,
      () => 1024,
      roomyHost,
    );
    await expect(admission.whileReserved(1024, async () => Promise.reject(new Error('the VM failed')))).rejects.toThrow('the VM failed');
    expect(admission.reservedMiB).toBe(0);
    const held = await admission.reserve(512);
    held.release();
    held.release();
    expect(admission.reservedMiB).toBe(0);
    await expect(admission.whileReserved(1024, async () => admission.reservedMiB)).resolves.toBe(1024);
  });

  it('counts reservations and running sandboxes together', async () => {
    const admission = new MemoryAdmission(
      async () => 512,
      () => 1024,
      roomyHost,
    );
    await admission.reserve(512);
    await expect(admission.reserve(1)).rejects.toThrow(/1025 MiB of guest memory in all, more than the budget of 1024 MiB/);
  });
});
