// The progress bar of image pulls and imports on stderr: one line, redrawn in
// place, with bytes and layers done across all layers. Drawn only where
// Progress is enabled (a terminal, or --verbose, which prints plain lines).
import type { ImageEvent } from '@capsule/sdk';
import { formatBytes } from './human-format.js';

const BAR_WIDTH = 30;

export class TransferProgress {
  readonly #layers = new Map<string, { done: number; total: number }>();
  readonly #stream: NodeJS.WriteStream;
  readonly #enabled: boolean;
  readonly #inPlace: boolean;
  #unpacked = 0;
  #lastDraw = 0;
  #drawn = false;

  constructor(
    readonly label: string,
    { enabled, stream = process.stderr }: { enabled: boolean; stream?: NodeJS.WriteStream },
  ) {
    this.#stream = stream;
    this.#enabled = enabled;
    this.#inPlace = stream.isTTY === true;
  }

  onEvent(event: Exclude<ImageEvent, { type: 'done' | 'error' }>): void {
    if (event.type === 'resolved') {
      for (const layer of event.layers) this.#layers.set(layer.digest, { done: 0, total: layer.sizeBytes });
    } else if (event.type === 'unpacked') {
      this.#unpacked = event.index + 1;
    } else {
      this.#layers.set(event.digest, { done: event.doneBytes, total: event.totalBytes });
    }
    const now = Date.now();
    // Redrawn at most ten times a second; without a terminal, a line every few seconds.
    if (now - this.#lastDraw >= (this.#inPlace ? 100 : 3000)) this.#draw(now);
  }

  /** The line as it reads now: `label [#####-----] 12.0 MiB / 40.0 MiB, 2/5 layers, 1 unpacked`. */
  line(): string {
    let done = 0;
    let total = 0;
    let layersDone = 0;
    for (const layer of this.#layers.values()) {
      done += layer.done;
      total += layer.total;
      if (layer.total > 0 && layer.done >= layer.total) layersDone++;
    }
    const fraction = total > 0 ? Math.min(1, done / total) : 0;
    const filled = Math.round(fraction * BAR_WIDTH);
    return `${this.label} [${'#'.repeat(filled)}${'-'.repeat(BAR_WIDTH - filled)}] ${formatBytes(done)} / ${formatBytes(total)}, ${layersDone}/${this.#layers.size} layers, ${this.#unpacked} unpacked`;
  }

  #draw(now: number): void {
    if (!this.#enabled) return;
    this.#lastDraw = now;
    this.#drawn = true;
    this.#stream.write(this.#inPlace ? `\r${this.line()}\x1b[K` : `${this.line()}\n`);
  }

  /** Draws the final state and ends the line. */
  finish(): void {
    if (!this.#enabled || (!this.#drawn && this.#layers.size === 0)) return;
    this.#draw(Date.now());
    if (this.#inPlace) this.#stream.write('\n');
  }
}
