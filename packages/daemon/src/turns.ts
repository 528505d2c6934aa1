// At most `limit` holders at once; others wait in line, and may give up
// waiting (their signal aborts) without taking a turn from anyone.

export class Turns {
  private active = 0;
  private readonly waiting: Array<() => void> = [];

  constructor(private readonly limit: number) {}

  /** Waits for a turn; resolves with its release (call it once done), rejects if `signal` aborts first. */
  take(signal: AbortSignal): Promise<() => void> {
    if (signal.aborted) return Promise.reject(new Error('gave up before its turn'));
    if (this.active < this.limit) return Promise.resolve(this.start());
    return new Promise<() => void>((resolve, reject) => {
      const go = () => {
        signal.removeEventListener('abort', giveUp);
        resolve(this.start());
      };
      const giveUp = () => {
        const index = this.waiting.indexOf(go);
        if (index !== -1) this.waiting.splice(index, 1);
        reject(new Error('gave up before its turn'));
      };
      this.waiting.push(go);
      signal.addEventListener('abort', giveUp, { once: true });
    });
  }

  private start(): () => void {
    this.active += 1;
    let released = false;
    return () => {
      if (released) return;
      released = true;
      this.active -= 1;
      this.waiting.shift()?.();
    };
  }
}
