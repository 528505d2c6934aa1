// Progress lines on stderr for steps that take a while ("Creating sandbox from
// template base… 4.8 s"). Silent unless stderr is a terminal or --verbose is
// given, so that scripts reading stderr see only errors.
import { formatElapsed } from './human-format.js';

export class Progress {
  readonly enabled: boolean;
  readonly #stream: NodeJS.WritableStream;

  constructor({ verbose = false, stream = process.stderr }: { verbose?: boolean; stream?: NodeJS.WriteStream } = {}) {
    this.enabled = verbose || stream.isTTY === true;
    this.#stream = stream;
  }

  /** Runs `work`, announcing it before and its duration (or failure) after. */
  async step<T>(label: string, work: () => Promise<T>): Promise<T> {
    if (!this.enabled) return work();
    const startedAt = performance.now();
    this.#stream.write(`${label}…`);
    try {
      const result = await work();
      this.#stream.write(` ${formatElapsed(performance.now() - startedAt)}\n`);
      return result;
    } catch (error) {
      this.#stream.write(' failed\n');
      throw error;
    }
  }

  note(message: string): void {
    if (this.enabled) this.#stream.write(`${message}\n`);
  }
}
