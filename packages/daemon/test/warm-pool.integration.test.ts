// A warm pool that follows demand (real QEMU microVMs): creates that find it
// empty make it larger, its waiting VMs are paused (no CPU), the next burst is
// served from it with each sandbox's own identity and clock, and a quiet
// period brings it back to its minimum.
import fs from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, beforeAll, describe, expect } from 'vitest';
import type { Sandbox } from '@capsule/protocol';
import { eventually, sandboxTest, TestDaemon } from './fixture.js';

// Counted from the pool filling up: the test checks the full pool well within it.
const IDLE_MS = 30_000;
const fromPool = (sandbox: Sandbox) => /ahead of time/.test(sandbox.history?.at(-1)?.message ?? '');

/** CPU ticks of each QEMU's vCPU threads (`CPU 0/TCG`, `CPU 0/KVM`), from /proc/PID/task. */
function vcpuTicks(pids: number[]): number[] {
  return pids.map((pid) => {
    let ticks = 0;
    for (const tid of fs.readdirSync(`/proc/${pid}/task`)) {
      if (!fs.readFileSync(`/proc/${pid}/task/${tid}/comm`, 'utf8').startsWith('CPU ')) continue;
      const fields = fs.readFileSync(`/proc/${pid}/task/${tid}/stat`, 'utf8').split(') ')[1]!.split(' ');
      ticks += Number(fields[11]) + Number(fields[12]); // utime, stime
    }
    return ticks;
  });
}

describe('a warm pool that follows demand (real QEMU microVMs)', () => {
  const daemon = new TestDaemon({ CAPSULE_WARM_POOL_SIZE: '1', CAPSULE_WARM_POOL_MAX: '3', CAPSULE_WARM_POOL_IDLE_MS: String(IDLE_MS) });
  const it = sandboxTest(daemon);
  beforeAll(async () => {
    await daemon.start();
    await daemon.waitForWarmSnapshot(600_000);
    await poolReady(1, 1);
  }, 700_000);
  afterAll(() => daemon.destroy());
  async function pool() {
    return (await daemon.api.info()).warmPools?.find((p) => p.template === 'base');
  }
  async function poolReady(ready: number, target: number) {
    await eventually(
      async () => {
        const now = await pool();
        return now?.ready === ready && now.target === target ? true : undefined;
      },
      180_000,
      `the pool to hold ${ready} of ${target}`,
    ).catch((err: unknown) => {
      const log = daemon
        .log()
        .split('\n')
        .filter((line) => !line.includes('"component":"api"'));
      throw new Error(`${String(err)}; the daemon's log ends:\n${log.slice(-30).join('\n')}`);
    });
  }

  it('grows under a burst, waits paused, serves the next burst, and shrinks back when quiet', async ({ newSandbox }) => {
    // One create finds the pool's VM, the other two find it empty: it grows to three.
    const first = await Promise.all([0, 1, 2].map(() => newSandbox()));
    expect(first.filter(fromPool), JSON.stringify(first.map((s) => s.history))).toHaveLength(1);
    expect(await pool()).toMatchObject({ min: 1, max: 3, target: 3, hits: 1, misses: 2 });
    await poolReady(3, 3);

    // Waiting VMs are paused: their vCPUs take no CPU at all.
    const sandboxPids = new Set(first.flatMap((s) => daemon.qemuPids(s.id)));
    const waiting = daemon.qemuPids().filter((pid) => !sandboxPids.has(pid));
    expect(waiting).toHaveLength(3);
    const before = vcpuTicks(waiting);
    await sleep(3000);
    expect(vcpuTicks(waiting)).toEqual(before);

    // The next burst is served from the pool, each sandbox itself, with its clock set.
    const second = await Promise.all([0, 1, 2].map((i) => newSandbox({ env: { N: String(i) } })));
    expect(second.filter(fromPool)).toHaveLength(3);
    for (const [i, sandbox] of second.entries()) {
      const out = (await daemon.api.exec(sandbox.id, ['sh', '-c', 'echo $(hostname) $N $(date +%s)'])).stdout.trim().split(' ');
      expect(out.slice(0, 2)).toEqual([sandbox.id.replace('_', '-'), String(i)]);
      expect(Math.abs(Number(out[2]) - Date.now() / 1000)).toBeLessThan(15);
    }
    expect(await pool()).toMatchObject({ hits: 4, misses: 2 });

    // No create for IDLE_MS: back to one waiting VM.
    await poolReady(1, 1);
    expect(daemon.qemuPids()).toHaveLength(first.length + second.length + 1);
  }, 600_000);
});
