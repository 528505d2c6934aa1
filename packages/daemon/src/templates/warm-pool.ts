// A few sandboxes per warm template, restored ahead of time and warmed up
// (their first exec already ran), so that a create only has to claim one and
// tell it who it is. Under TCG a fresh QEMU must translate all the guest code
// it runs again, which costs hundreds of milliseconds after a restore; the
// pool moves that cost out of the create. Its size follows demand: each create
// that finds it empty makes it one larger (up to its maximum), and a quiet
// period brings it back to its minimum. Waiting VMs are paused, so they cost
// no CPU. Pool VMs are not in the store: if the daemon dies, the next one
// removes them as orphans. Each holds its memory's reservation
// (sandboxes/memory.ts): a pool never takes more than the budget.
import { CapsuleError, errorMessage } from '../errors.js';
import type { Logger } from '../log.js';
import type { GuestAgent } from '../agent/guest-agent.js';
import type { VmHandle } from '../vmm/driver.js';

const REFILL_DELAY_MS = 1000;

export interface PooledVm {
  id: string;
  /** Paused while it waits in the pool: the create that claims it resumes it. */
  vm: VmHandle;
  guest: GuestAgent;
  /** The VM's memory: the create that claims it releases it once the sandbox runs. */
  memory: { release(): void };
  /** Stops the VM, removes its files and releases its memory. */
  discard(): Promise<void>;
}

export interface WarmPoolSizing {
  /** VMs kept ready however quiet it is (CAPSULE_WARM_POOL_SIZE). */
  min: number;
  /** VMs the pool grows to at most under demand (CAPSULE_WARM_POOL_MAX). */
  max: number;
  /** After this long without a create (counted from the later of the last create and the pool filling up), it goes back to `min` (CAPSULE_WARM_POOL_IDLE_MS). */
  idleMs: number;
}

/** What /v1/info and /metrics show of a pool. */
export interface WarmPoolStatus {
  template: string;
  ready: number;
  /** The size the pool fills up to now, between its minimum and maximum. */
  target: number;
  min: number;
  max: number;
  /** Creates that found a VM waiting, and creates that found none, since the daemon started. */
  hits: number;
  misses: number;
}

export class WarmPool {
  private readonly ready: PooledVm[] = [];
  private readonly inFlight = new Set<Promise<unknown>>();
  private filling = false;
  private closed = false;
  private failuresInARow = 0;
  private target: number;
  private hits = 0;
  private misses = 0;
  private quietTimer: NodeJS.Timeout | undefined;

  constructor(
    readonly template: string,
    private readonly sizing: WarmPoolSizing,
    /** Restores a VM, or refuses with `capacity` when the host has no room for one more. */
    private readonly restore: () => Promise<PooledVm>,
    private readonly log: Logger,
  ) {
    this.target = sizing.min;
  }

  status(): WarmPoolStatus {
    const { min, max } = this.sizing;
    return { template: this.template, ready: this.ready.length, target: this.target, min, max, hits: this.hits, misses: this.misses };
  }

  /**
   * A ready, live VM if there is one. The pool refills shortly after, not at
   * once: a restore and its warm-up take a core for about a second, which
   * would slow down the first commands of the sandbox just handed out.
   */
  take(): PooledVm | undefined {
    let pooled = this.ready.shift();
    while (pooled && !(pooled.vm.alive && !pooled.vm.stopping)) {
      void pooled.discard();
      pooled = this.ready.shift();
    }
    if (pooled) {
      this.hits += 1;
    } else {
      this.misses += 1;
      // Demand outran the pool: keep one more ready from now on.
      if (this.target < this.sizing.max) this.target += 1;
    }
    this.restartQuietTimer();
    setTimeout(() => this.fill(), REFILL_DELAY_MS).unref();
    return pooled;
  }

  /**
   * Restores VMs one at a time until the pool is full; stops when the host
   * has no room (until the next take) or after repeated failures.
   */
  fill(): void {
    if (this.closed || this.filling || this.failuresInARow >= 3 || this.ready.length >= this.target) return;
    this.filling = true;
    const restoring = Promise.resolve()
      .then(async () => {
        if (this.closed) return false;
        const pooled = await this.restore();
        // Closed, or shrunk by a quiet period, while this VM was being restored.
        if (this.closed || this.ready.length >= this.target) {
          await pooled.discard();
          return false;
        }
        this.ready.push(pooled);
        this.failuresInARow = 0;
        // A grown pool that has just filled up gets a whole quiet period to be used.
        if (this.ready.length === this.target) this.restartQuietTimer();
        this.log.debug(
          { template: this.template, sandbox: pooled.id, ready: this.ready.length, target: this.target },
          'warm pool VM ready',
        );
        return true;
      })
      .catch((err: unknown) => {
        if (err instanceof CapsuleError && err.code === 'capacity') return false;
        this.failuresInARow += 1;
        this.log.warn({ template: this.template, err: errorMessage(err) }, 'could not restore a VM for the warm pool');
        return true;
      })
      .then((again) => {
        this.filling = false;
        if (again) this.fill();
      });
    this.track(restoring);
  }

  /** Discards every waiting VM (their memory is wanted by a create); the pool refills after its next take. */
  async evict(): Promise<number> {
    const evicted = this.ready.splice(0);
    await Promise.all(evicted.map((pooled) => pooled.discard()));
    return evicted.length;
  }

  /** Stops every pooled VM, waiting for restores still under way (they discard themselves once closed). */
  async close(): Promise<void> {
    this.closed = true;
    clearTimeout(this.quietTimer);
    await Promise.all([...this.ready.splice(0).map((pooled) => pooled.discard()), ...this.inFlight]);
  }

  /** A quiet period (no take since the last one, or since the pool filled up) shrinks it back to its minimum, discarding the VMs beyond it. */
  private restartQuietTimer(): void {
    clearTimeout(this.quietTimer);
    if (this.target === this.sizing.min) return;
    this.quietTimer = setTimeout(() => {
      // Still refilling after the last take: the pool has not been quiet at its size yet.
      if (this.filling) return this.restartQuietTimer();
      this.target = this.sizing.min;
      const extra = this.ready.splice(this.target);
      this.log.info({ template: this.template, target: this.target, discarded: extra.length }, 'warm pool quiet: back to its minimum');
      this.track(Promise.all(extra.map((pooled) => pooled.discard())));
    }, this.sizing.idleMs);
    this.quietTimer.unref();
  }

  private track(work: Promise<unknown>): void {
    this.inFlight.add(work);
    void work.finally(() => this.inFlight.delete(work));
  }
}
