// A few sandboxes per warm template, restored ahead of time and warmed up
// (their first exec already ran), so that a create only has to claim one and
// tell it who it is. Under TCG a fresh QEMU must translate all the guest code
// it runs again, which costs hundreds of milliseconds after a restore; the
// pool moves that cost out of the create. Pool VMs are not in the store: if
// the daemon dies, the next one removes them as orphans.
import { errorMessage } from '../errors.js';
import type { Logger } from '../log.js';
import type { LiveVm } from './live-vm.js';

const REFILL_DELAY_MS = 1000;

export interface PooledVm {
  id: string;
  vm: LiveVm;
  /** Stops the VM and removes its files. */
  discard(): Promise<void>;
}

export class WarmPool {
  private readonly ready: PooledVm[] = [];
  private readonly inFlight = new Set<Promise<unknown>>();
  private filling = 0;
  private closed = false;
  private failuresInARow = 0;

  constructor(
    readonly template: string,
    private readonly size: number,
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
    let pooled: PooledVm | undefined;
    while ((pooled = this.ready.shift())) {
      if (pooled.vm.alive && !pooled.vm.stopping) break;
      void pooled.discard();
    }
    setTimeout(() => this.fill(), REFILL_DELAY_MS).unref();
    return pooled;
  }

  /** Starts restores until the pool is full; stops trying after repeated failures. */
  fill(): void {
    while (!this.closed && this.failuresInARow < 3 && this.ready.length + this.filling < this.size) {
      this.filling += 1;
      const restoring = this.restore().then(
        (pooled) => {
          this.filling -= 1;
          this.failuresInARow = 0;
          if (this.closed) return pooled.discard();
          this.ready.push(pooled);
          return undefined;
        },
        (err: unknown) => {
          this.filling -= 1;
          this.failuresInARow += 1;
          this.log.warn({ template: this.template, err: errorMessage(err) }, 'could not restore a VM for the warm pool');
          this.fill();
        },
      );
      this.inFlight.add(restoring);
      void restoring.finally(() => this.inFlight.delete(restoring));
    }
  }

  /** Stops every pooled VM, waiting for restores still under way (they discard themselves once closed). */
  async close(): Promise<void> {
    this.closed = true;
    await Promise.all([...this.ready.splice(0).map((pooled) => pooled.discard()), ...this.inFlight]);
  }
}
