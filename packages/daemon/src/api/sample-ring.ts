// A bounded ring of timestamped samples, oldest first: the memory of one
// sandbox's metrics history. Pushing past its capacity forgets the oldest
// sample; it never grows, and never sorts (samples arrive in time order).

export class SampleRing<T extends { at: number }> {
  private readonly slots: (T | undefined)[];
  /** Index of the oldest sample. */
  private head = 0;
  private count = 0;

  constructor(readonly capacity: number) {
    if (!Number.isInteger(capacity) || capacity < 1) throw new Error(`a ring needs a capacity of at least 1, not ${capacity}`);
    this.slots = new Array<T | undefined>(capacity);
  }

  get size(): number {
    return this.count;
  }

  /** Adds the newest sample; one older than the newest is refused (a clock step back would break range queries). */
  push(sample: T): void {
    const newest = this.latest();
    if (newest && sample.at < newest.at) return;
    if (this.count < this.capacity) {
      this.slots[(this.head + this.count) % this.capacity] = sample;
      this.count += 1;
    } else {
      this.slots[this.head] = sample;
      this.head = (this.head + 1) % this.capacity;
    }
  }

  latest(): T | undefined {
    return this.count === 0 ? undefined : this.slots[(this.head + this.count - 1) % this.capacity];
  }

  /** Samples with `start <= at <= end`, oldest first. */
  range(start: number, end: number): T[] {
    const found: T[] = [];
    for (let i = 0; i < this.count; i += 1) {
      const sample = this.slots[(this.head + i) % this.capacity];
      if (sample && sample.at >= start && sample.at <= end) found.push(sample);
    }
    return found;
  }
}
