// A few sandboxes per warm template, restored ahead of time and warmed up
// (their first exec already ran), so that a create only has to claim one and
// tell it who it is. Under TCG a fresh QEMU must translate all the guest code
// it runs again, which costs hundreds of milliseconds after a restore; the
// pool moves that cost out of the create. Pool VMs are not in the store: if
// the daemon dies, the next one removes them as orphans. Each holds its
// memory's reservation (sandboxes/memory.ts): a pool never takes more than the budget.
import { CapsuleError, errorMessage } from '../errors.js';
import type { Logger } from '../log.js';
import type { GuestAgent } from '../agent/guest-agent.js';
import type { VmHandle } from '../vmm/driver.js';

const REFILL_DELAY_MS = 1000;

export interface PooledVm {
  id: string;
  vm: VmHandle;
  guest: GuestAgent;
  /** The VM's memory: the create that claims it releases it once the sandbox runs. */
  memory: { release(): void };
  /** Stops the VM, removes its files and releases its memory. */
  discard(): Promise<void>;
}

export class WarmPool {
  private readonly ready: PooledVm[] = [];
  private readonly inFlight = new Set<Promise<unknown>>();
  private filling = false;
  private closed = false;
  private failuresInARow = 0;

  constructor(
    readonly template: string,
    private readonly size: number,
    /** Restores a VM, or refuses with `insufficient_resources` when the host has no room for one more. */
    private readonly restore: () => Promise<PooledVm>,
    private readonly log: Logger,
  ) {}

  get readyCount(): number {
    return this.ready.length;
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
    setTimeout(() => this.fill(), REFILL_DELAY_MS).unref();
    return pooled;
  }

  /**
   * Restores VMs one at a time until the pool is full; stops when the host
   * has no room (until the next take) or after repeated failures.
   */
  fill(): void {
    if (this.closed || this.filling || this.failuresInARow >= 3 || this.ready.length >= this.size) return;
    this.filling = true;
    const restoring = Promise.resolve()
      .then(async () => {
        if (this.closed) return false;
        const pooled = await this.restore();
        if (this.closed) {
          await pooled.discard();
          return false;
        }
        this.ready.push(pooled);
        this.failuresInARow = 0;
        this.log.debug({ template: this.template, sandbox: pooled.id, ready: this.ready.length }, 'warm pool VM ready');
        return true;
      })
      .catch((err: unknown) => {
        if (err instanceof CapsuleError && err.code === 'insufficient_resources') return false;
        this.failuresInARow += 1;
        this.log.warn({ template: this.template, err: errorMessage(err) }, 'could not restore a VM for the warm pool');
        return true;
      })
      .then((again) => {
        this.filling = false;
        if (again) this.fill();
      });
    this.inFlight.add(restoring);
    void restoring.finally(() => this.inFlight.delete(restoring));
  }

  /** Stops every pooled VM, waiting for restores still under way (they discard themselves once closed). */
  async close(): Promise<void> {
    this.closed = true;
    await Promise.all([...this.ready.splice(0).map((pooled) => pooled.discard()), ...this.inFlight]);
  }
}
