// The polled watches of CreateWatcher / GetWatcherEvents / RemoveWatcher:
// each buffers its events until the next poll. They belong to the agent, not
// to a connection, so they outlive host reconnects (and snapshots). Must never
// buffer without bound: a watcher nobody polls fails instead of growing.

import { randomBytes } from 'node:crypto';
import { Code, ConnectError } from '@connectrpc/connect';
import { DirectoryWatch, WatchLimitError, type WatchEvent } from './directory-watch.js';
import { toFilesystemEvents, type FilesystemEventInit } from './filesystem-event.js';
import { createLogger, describeError } from './log.js';

const log = createLogger('watch');

export const MAX_POLLED_WATCHERS = 256;
/** Events one watcher holds between polls. */
export const MAX_BUFFERED_EVENTS = 10_000;

interface PolledWatcher {
  watch: DirectoryWatch | undefined;
  events: FilesystemEventInit[];
  error: ConnectError | undefined;
  /** Conversions (entry lookups) finish in event order. */
  converting: Promise<void>;
}

export interface PolledWatchRequest {
  root: string;
  recursive: boolean;
  includeEntry: boolean;
}

export class WatcherRegistry {
  private readonly watchers = new Map<string, PolledWatcher>();
  private sequence = 0;

  get size(): number {
    return this.watchers.size;
  }

  async create(request: PolledWatchRequest): Promise<string> {
    if (this.watchers.size >= MAX_POLLED_WATCHERS) {
      throw new ConnectError(`too many watchers (at most ${MAX_POLLED_WATCHERS}); remove unused ones first`, Code.ResourceExhausted);
    }
    // A counter as well as random bytes: every clone of a snapshot starts with
    // the same userspace random state until OpenSSL reseeds.
    this.sequence += 1;
    const id = `w${randomBytes(8).toString('hex')}${this.sequence.toString(36)}`;
    const watcher: PolledWatcher = { watch: undefined, events: [], error: undefined, converting: Promise.resolve() };
    const fail = (error: ConnectError) => {
      watcher.error ??= error;
      watcher.watch?.close();
      log.warn(`watcher ${id} failed: ${error.rawMessage}`);
    };
    const onEvents = (events: WatchEvent[]) => {
      watcher.converting = watcher.converting.then(async () => {
        const converted = await toFilesystemEvents(events, request.includeEntry);
        if (watcher.error) return;
        if (watcher.events.length + converted.length > MAX_BUFFERED_EVENTS) {
          fail(
            new ConnectError(
              `watcher ${id} has more than ${MAX_BUFFERED_EVENTS} unread events; poll it more often`,
              Code.ResourceExhausted,
            ),
          );
          return;
        }
        watcher.events.push(...converted);
      });
    };
    watcher.watch = await DirectoryWatch.start({
      root: request.root,
      recursive: request.recursive,
      onEvents,
      onError: (error) => fail(watchFailure(error)),
    });
    this.watchers.set(id, watcher);
    return id;
  }

  private get(id: string): PolledWatcher {
    const watcher = this.watchers.get(id);
    if (!watcher) throw new ConnectError(`watcher with id ${id} not found`, Code.NotFound);
    return watcher;
  }

  /** The events since the last call; the watcher's error once it has failed (as envd). */
  async takeEvents(id: string): Promise<FilesystemEventInit[]> {
    const watcher = this.get(id);
    await watcher.converting;
    if (watcher.error) throw watcher.error;
    return watcher.events.splice(0);
  }

  remove(id: string): void {
    this.get(id).watch?.close();
    this.watchers.delete(id);
  }
}

/** A directory watch that failed, as the Connect error envd gives for it. */
export function watchFailure(error: unknown): ConnectError {
  return error instanceof WatchLimitError
    ? new ConnectError(error.message, Code.ResourceExhausted)
    : new ConnectError(`watcher error: ${describeError(error)}`, Code.Internal);
}
