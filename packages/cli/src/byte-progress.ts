// The progress line on stderr of a stream of bytes (a volume's export or
// import): `label 12.0 MiB / 40.0 MiB`, redrawn in place on a terminal, a line
// every few seconds with --verbose. It counts the bytes passing through and
// never changes them.
import { formatBytes } from './human-format.js';

export class ByteProgress {
  readonly #stream: NodeJS.WriteStream;
  readonly #enabled: boolean;
  readonly #inPlace: boolean;
  #done = 0;
  #lastDraw = 0;

  constructor(
    readonly label: string,
    readonly totalBytes: number | undefined,
    { enabled, stream = process.stderr }: { enabled: boolean; stream?: NodeJS.WriteStream },
  ) {
    this.#stream = stream;
    this.#enabled = enabled;
    this.#inPlace = stream.isTTY === true;
  }

  /** Passes `source` through, counting its bytes. */
  async *count(source: AsyncIterable<Uint8Array>): AsyncGenerator<Uint8Array> {
    for await (const chunk of source) {
      this.#done += chunk.length;
      const now = Date.now();
      // Redrawn at most ten times a second; without a terminal, a line every few seconds.
      if (now - this.#lastDraw >= (this.#inPlace ? 100 : 3000)) this.#draw(now);
      yield chunk;
    }
  }

  line(): string {
    return `${this.label} ${formatBytes(this.#done)}${this.totalBytes !== undefined ? ` / ${formatBytes(this.totalBytes)}` : ''}`;
  }

  #draw(now: number): void {
    if (!this.#enabled) return;
    this.#lastDraw = now;
    this.#stream.write(this.#inPlace ? `\r${this.line()}\x1b[K` : `${this.line()}\n`);
  }

  /** Draws the final count and ends the line. */
  finish(): void {
    if (!this.#enabled) return;
    this.#draw(Date.now());
    if (this.#inPlace) this.#stream.write('\n');
  }
}
