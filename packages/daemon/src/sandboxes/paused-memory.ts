// After a pause: turns the paused sandbox's whole-state stream into a memory
// file + device state (vmm/freeze.ts) in the background, so that its resume
// maps the memory instead of reading all of it through QEMU. Pause itself
// only writes the stream, which takes a third of the time a freeze does. The
// stream stays the paused state until the frozen folder is complete, fsynced
// and renamed into place; only then is the stream removed. A resume or a
// removal cancels a conversion still under way and uses the stream.
// Conversions wait their turn: each runs a QEMU holding the sandbox's RAM and
// a core, and a daemon starting with many paused sandboxes (or many sandboxes
// pausing together at their timeout) must not start them all at once.
import fs from 'node:fs';
import { errorMessage } from '../errors.js';
import type { Logger } from '../log.js';
import { Turns } from '../turns.js';
import { freezeStateFile } from '../vmm/freeze.js';
import type { VmSpec } from '../vmm/qemu.js';

/** Conversions running at once. */
const CONVERSION_CONCURRENCY = 2;

interface Conversion {
  abort: AbortController;
  done: Promise<void>;
}

export class PausedMemoryConverter {
  /** Conversions started, running or waiting for their turn. */
  private readonly running = new Map<string, Conversion>();
  private readonly turns = new Turns(CONVERSION_CONCURRENCY);

  constructor(
    private readonly runtimeDir: string,
    private readonly log: Logger,
  ) {}

  /** Starts converting sandbox `id`'s `stateFile` into the folder `target` (its machine must have a memory backend). */
  start(id: string, machine: VmSpec, stateFile: string, target: string): void {
    const abort = new AbortController();
    const temp = `${target}.tmp`;
    const done = (async () => {
      let release: () => void;
      try {
        release = await this.turns.take(abort.signal);
      } catch {
        return; // cancelled before its turn: the stream stays the paused state
      }
      const started = Date.now();
      fs.rmSync(temp, { recursive: true, force: true });
      try {
        await freezeStateFile(stateFile, machine, temp, this.runtimeDir, abort.signal);
        abort.signal.throwIfAborted();
        // Synchronous from here: a cancel cannot fall between the two steps.
        fs.rmSync(target, { recursive: true, force: true });
        fs.renameSync(temp, target);
        fs.rmSync(stateFile, { force: true });
        this.log.debug({ sandbox: id, ms: Date.now() - started }, 'paused state mapped');
      } catch (err) {
        fs.rmSync(temp, { recursive: true, force: true });
        if (!abort.signal.aborted)
          this.log.warn(
            { sandbox: id, err: errorMessage(err) },
            'could not turn the paused state into a memory file; resume will read the stream',
          );
      } finally {
        release();
      }
    })();
    this.running.set(id, { abort, done });
    void done.finally(() => {
      if (this.running.get(id)?.done === done) this.running.delete(id);
    });
  }

  /** Stops sandbox `id`'s conversion, if one runs, and waits until it has cleaned up. */
  async cancel(id: string): Promise<void> {
    const conversion = this.running.get(id);
    if (!conversion) return;
    conversion.abort.abort();
    await conversion.done;
  }

  async cancelAll(): Promise<void> {
    await Promise.all([...this.running.keys()].map((id) => this.cancel(id)));
  }
}
