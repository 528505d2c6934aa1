import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { silentLogger } from '../log.js';
import type { GuestAgent } from '../agent/guest-agent.js';
import type { VmHandle } from '../vmm/driver.js';
import { WarmPool, type PooledVm } from './warm-pool.js';

/** A pool whose restores succeed at once with stand-in VMs; `discarded` counts the VMs it let go. */
function poolOf(sizing: { min: number; max: number; idleMs: number }) {
  let made = 0;
  const state = { discarded: 0 };
  const restore = async (): Promise<PooledVm> => {
    made += 1;
    return {
      id: `sb_${made}`,
      vm: { alive: true, stopping: false } as VmHandle,
      guest: {} as GuestAgent,
      memory: { release() {} },
      discard: async () => {
        state.discarded += 1;
      },
    };
  };
  return { pool: new WarmPool('base', sizing, restore, silentLogger), state };
}

/** Lets the pool's timers and one-at-a-time restores run. */
async function settle(ms = 2000): Promise<void> {
  for (let i = 0; i < 20; i++) await vi.advanceTimersByTimeAsync(ms / 20);
}

describe('WarmPool sizing', () => {
  beforeEach(() => vi.useFakeTimers());
  afterEach(() => vi.useRealTimers());

  it('grows by one for each create that finds it empty, up to its maximum, and refills to that size', async () => {
    const { pool } = poolOf({ min: 1, max: 3, idleMs: 60_000 });
    pool.fill();
    await settle();
    expect(pool.status()).toMatchObject({ ready: 1, target: 1 });
    // A burst of five: one hit, four misses; the target stops at the maximum.
    const taken = Array.from({ length: 5 }, () => pool.take());
    expect(taken.filter(Boolean)).toHaveLength(1);
    expect(pool.status()).toMatchObject({ target: 3, hits: 1, misses: 4 });
    await settle();
    expect(pool.status().ready).toBe(3);
  });

  it('keeps its size while every create finds a VM waiting', async () => {
    const { pool } = poolOf({ min: 1, max: 5, idleMs: 60_000 });
    pool.fill();
    await settle();
    for (let i = 0; i < 4; i++) {
      expect(pool.take()).toBeDefined();
      await settle();
    }
    expect(pool.status()).toMatchObject({ ready: 1, target: 1, hits: 4, misses: 0 });
  });

  it('goes back to its minimum after a quiet period, discarding the VMs beyond it', async () => {
    const { pool, state } = poolOf({ min: 1, max: 4, idleMs: 60_000 });
    pool.fill();
    await settle();
    pool.take();
    pool.take();
    pool.take();
    await settle();
    expect(pool.status()).toMatchObject({ ready: 3, target: 3 });
    await settle(55_000);
    expect(pool.status().ready).toBe(3);
    await settle(5000);
    expect(pool.status()).toMatchObject({ ready: 1, target: 1 });
    expect(state.discarded).toBe(2);
  });

  it('gives its waiting VMs up for a create that needs their memory, and refills after its next take', async () => {
    const { pool, state } = poolOf({ min: 2, max: 2, idleMs: 60_000 });
    pool.fill();
    await settle();
    expect(await pool.evict()).toBe(2);
    expect(state.discarded).toBe(2);
    expect(pool.status().ready).toBe(0);
    await settle();
    expect(pool.status().ready).toBe(0);
    pool.take();
    await settle();
    expect(pool.status().ready).toBe(2);
  });
});
