// Catches Ctrl-C, SIGTERM and SIGHUP while a command holds resources that must be
// released (a sandbox to remove, a stream to close). Handlers exist only between
// construction and dispose(); a second signal means "stop waiting, exit now".
import { exitCodeOfInterruption } from './exit-codes.js';

const HANDLED_SIGNALS: NodeJS.Signals[] = ['SIGINT', 'SIGTERM', 'SIGHUP'];

export class Interrupts {
  /** The first signal received, if any. */
  received: NodeJS.Signals | undefined;
  readonly #controller = new AbortController();
  readonly #onForcedExit: () => void;

  /** `onForcedExit` runs before the process exits on a second signal (to say what was left behind). */
  constructor(onForcedExit: () => void = () => {}) {
    this.#onForcedExit = onForcedExit;
    for (const signal of HANDLED_SIGNALS) process.on(signal, this.#handle);
  }

  /** Aborts on the first signal. */
  get signal(): AbortSignal {
    return this.#controller.signal;
  }

  dispose(): void {
    for (const signal of HANDLED_SIGNALS) process.off(signal, this.#handle);
  }

  readonly #handle = (signal: NodeJS.Signals) => {
    if (this.received !== undefined) {
      this.#onForcedExit();
      process.exit(exitCodeOfInterruption(this.received));
    }
    this.received = signal;
    const error = new Error(`interrupted by ${signal}`);
    error.name = 'AbortError';
    this.#controller.abort(error);
  };
}
