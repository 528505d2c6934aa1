// Watches a directory tree with one fs.watch per directory (Node 20 has no
// recursive fs.watch on Linux) and turns fs.watch's "rename"/"change" into
// envd's CREATE/WRITE/REMOVE/RENAME/CHMOD by comparing against a snapshot of
// each entry. Must never exceed its limits of watches, entries or pending names.

import { watch, type BigIntStats, type FSWatcher } from 'node:fs';
import { lstat, readdir } from 'node:fs/promises';
import { basename, join, relative, sep } from 'node:path';
import { EventType } from '@capsule/protocol/agent';
import { createLogger } from './log.js';
import { isUploadTempName, recentUploads } from './upload-marks.js';

const log = createLogger('watch');

/** Directories one watch may hold (each is one inotify watch). */
export const MAX_WATCHED_DIRECTORIES = 8192;
/** Entries whose stats a watch keeps; beyond, entries are known by name only (coarser events). */
export const MAX_TRACKED_ENTRIES = 200_000;
/** Distinct changed names waiting to be classified; beyond, the watch fails like an inotify overflow. */
export const MAX_PENDING_NAMES = 65_536;
const STAT_CONCURRENCY = 32;

export interface WatchEvent {
  /** Relative to the watched root ("." for the root itself). */
  name: string;
  type: EventType;
  /** Absolute path of the entry. */
  path: string;
}

/** A limit of the watch was reached; the RPC maps it to ResourceExhausted. */
export class WatchLimitError extends Error {
  override name = 'WatchLimitError';
}

interface EntrySnapshot {
  dev: bigint;
  ino: bigint;
  mode: bigint;
  uid: bigint;
  gid: bigint;
  size: bigint;
  mtimeNs: bigint;
}

interface WatchedDirectory {
  watcher: FSWatcher;
  /** name -> snapshot; undefined: exists, stats not kept (over budget). */
  entries: Map<string, EntrySnapshot | undefined>;
}

interface PendingName {
  dir: string;
  name: string;
  renames: number;
  changes: number;
}

export interface DirectoryWatchOptions {
  root: string;
  recursive: boolean;
  onEvents: (events: WatchEvent[]) => void;
  /** The watch is over (a limit, or fs.watch failed on the root); close() is still expected. */
  onError: (error: Error) => void;
  maxDirectories?: number;
  maxTrackedEntries?: number;
}

const snapshotOf = (stats: BigIntStats): EntrySnapshot => ({
  dev: stats.dev,
  ino: stats.ino,
  mode: stats.mode,
  uid: stats.uid,
  gid: stats.gid,
  size: stats.size,
  mtimeNs: stats.mtimeNs,
});

const isDirectoryMode = (mode: bigint) => (mode & 0o170000n) === 0o040000n;
const inodeKey = (snapshot: { dev: bigint; ino: bigint }) => `${snapshot.dev}:${snapshot.ino}`;

async function lstatOrUndefined(path: string): Promise<BigIntStats | undefined> {
  try {
    return await lstat(path, { bigint: true });
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' || code === 'ENOTDIR') return undefined;
    throw error;
  }
}

export class DirectoryWatch {
  private readonly directories = new Map<string, WatchedDirectory>();
  private pending = new Map<string, PendingName>();
  private flushScheduled = false;
  /** Every change to the snapshots runs on this chain, one step at a time. */
  private work: Promise<void> = Promise.resolve();
  private trackedEntries = 0;
  private closed = false;
  private rootGone = false;
  private readonly maxDirectories: number;
  private readonly maxTrackedEntries: number;

  private constructor(private readonly options: DirectoryWatchOptions) {
    this.maxDirectories = options.maxDirectories ?? MAX_WATCHED_DIRECTORIES;
    this.maxTrackedEntries = options.maxTrackedEntries ?? MAX_TRACKED_ENTRIES;
  }

  /** Resolves once every directory is watched and snapshotted: later changes are all reported. */
  static async start(options: DirectoryWatchOptions): Promise<DirectoryWatch> {
    const directoryWatch = new DirectoryWatch(options);
    try {
      await directoryWatch.armDirectory(options.root, undefined);
    } catch (error) {
      directoryWatch.close();
      throw error;
    }
    return directoryWatch;
  }

  get watchedDirectories(): number {
    return this.directories.size;
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    for (const directory of this.directories.values()) directory.watcher.close();
    this.directories.clear();
    this.pending.clear();
  }

  private fail(error: Error): void {
    if (this.closed) return;
    this.close();
    this.options.onError(error);
  }

  /**
   * Watches `dir` and snapshots its entries. For a directory that appeared
   * while watching, `created` collects a CREATE for everything already in it
   * (a `mkdir -p a/b && touch a/b/c` is over before a/b can be watched).
   */
  private async armDirectory(dir: string, created: WatchEvent[] | undefined): Promise<void> {
    if (this.closed || this.directories.has(dir)) return;
    if (this.directories.size >= this.maxDirectories) {
      throw new WatchLimitError(`cannot watch more than ${this.maxDirectories} directories under ${this.options.root}`);
    }
    let watcher: FSWatcher;
    try {
      watcher = watch(dir, { persistent: false }, (eventType, filename) => this.enqueue(dir, eventType, filename));
    } catch (error) {
      const code = (error as NodeJS.ErrnoException).code;
      if (code === 'ENOSPC' || code === 'EMFILE') {
        throw new WatchLimitError(`the kernel refused another watch (${code}: raise fs.inotify.max_user_watches)`);
      }
      // A subdirectory gone (or turned unreadable) before we got to it is not an error of the watch.
      if (dir !== this.options.root && (code === 'ENOENT' || code === 'ENOTDIR' || code === 'EACCES')) return;
      throw error;
    }
    watcher.on('error', (error) => {
      if (dir === this.options.root) this.fail(error);
      else this.unwatchTree(dir);
    });
    const directory: WatchedDirectory = { watcher, entries: new Map() };
    this.directories.set(dir, directory);

    let names: string[];
    try {
      names = (await readdir(dir)).filter((name) => !isUploadTempName(name)).sort();
    } catch (error) {
      if (dir === this.options.root) throw error;
      this.unwatchTree(dir);
      return;
    }
    for (let index = 0; index < names.length; index += STAT_CONCURRENCY) {
      const slice = names.slice(index, index + STAT_CONCURRENCY);
      const stats = await Promise.all(slice.map((name) => lstatOrUndefined(join(dir, name)).catch(() => undefined)));
      slice.forEach((name, position) => {
        const entryStats = stats[position];
        if (!entryStats || directory.entries.has(name)) return;
        this.remember(directory, name, entryStats);
        if (created) created.push(this.event(join(dir, name), EventType.CREATE));
      });
    }
    if (!this.options.recursive) return;
    for (const [name, snapshot] of directory.entries) {
      if (snapshot && isDirectoryMode(snapshot.mode)) await this.armDirectory(join(dir, name), created);
    }
  }

  private remember(directory: WatchedDirectory, name: string, stats: BigIntStats): void {
    const known = directory.entries.get(name);
    if (known === undefined && this.trackedEntries >= this.maxTrackedEntries) {
      directory.entries.set(name, undefined);
      return;
    }
    if (known === undefined) this.trackedEntries += 1;
    directory.entries.set(name, snapshotOf(stats));
  }

  private forget(directory: WatchedDirectory, name: string): void {
    if (directory.entries.get(name) !== undefined) this.trackedEntries -= 1;
    directory.entries.delete(name);
  }

  /** Stops watching `dir` and everything below it (it was removed or moved away). */
  private unwatchTree(dir: string): void {
    for (const [path, directory] of this.directories) {
      if (path === dir || path.startsWith(dir + sep)) {
        directory.watcher.close();
        for (const snapshot of directory.entries.values()) if (snapshot !== undefined) this.trackedEntries -= 1;
        this.directories.delete(path);
      }
    }
  }

  private event(path: string, type: EventType): WatchEvent {
    return { name: relative(this.options.root, path) || '.', type, path };
  }

  private enqueue(dir: string, eventType: string, filename: string | Buffer | null): void {
    if (this.closed) return;
    const name = filename === null ? basename(dir) : filename.toString();
    const key = `${dir}\0${name}`;
    let entry = this.pending.get(key);
    if (!entry) {
      if (this.pending.size >= MAX_PENDING_NAMES) {
        this.fail(new WatchLimitError(`more than ${MAX_PENDING_NAMES} changed entries are waiting to be reported`));
        return;
      }
      entry = { dir, name, renames: 0, changes: 0 };
      this.pending.set(key, entry);
    }
    if (eventType === 'rename') entry.renames += 1;
    else entry.changes += 1;
    if (!this.flushScheduled) {
      this.flushScheduled = true;
      // One I/O callback delivers every event of one inotify read (both halves
      // of a rename among them): classify them together.
      setImmediate(() => {
        this.flushScheduled = false;
        const batch = [...this.pending.values()];
        this.pending = new Map();
        this.work = this.work
          .then(() => this.processBatch(batch))
          .catch((error: unknown) => {
            this.fail(error instanceof Error ? error : new Error(String(error)));
          });
      });
    }
  }

  private async processBatch(batch: PendingName[]): Promise<void> {
    if (this.closed) return;
    const now = await Promise.all(
      batch.map(async (item) => (this.directories.has(item.dir) ? lstatOrUndefined(join(item.dir, item.name)) : undefined)),
    );
    // Inodes that now sit under a name that was just touched: a vanished
    // entry whose inode is among them was renamed, not removed.
    const arrived = new Set<string>();
    const departed = new Set<string>();
    batch.forEach((item, index) => {
      const stats = now[index];
      const before = this.directories.get(item.dir)?.entries.get(item.name);
      if (stats && (!before || before.ino !== stats.ino)) arrived.add(inodeKey(stats));
      if (before && (!stats || before.ino !== stats.ino)) departed.add(inodeKey(before));
    });

    const rootName = basename(this.options.root);
    const aboutRoot = (item: PendingName) => item.dir === this.options.root && item.name === rootName;
    const rootMissing = batch.some(aboutRoot) && !(await lstatOrUndefined(this.options.root));

    const events: WatchEvent[] = [];
    const newDirectories: string[] = [];
    batch.forEach((item, index) => {
      const directory = this.directories.get(item.dir);
      if (!directory || isUploadTempName(item.name)) return;
      const path = join(item.dir, item.name);
      const stats = now[index];
      const wasPresent = directory.entries.has(item.name);
      const before = directory.entries.get(item.name);

      if (item.name === basename(item.dir) && !wasPresent && !stats) {
        // inotify's *_SELF events name the watched directory itself. For a
        // subdirectory its parent's watch reports the change; only the root's
        // own removal has nobody else to report it.
        if (aboutRoot(item) && rootMissing) this.reportRootGone(events);
        return;
      }
      const uploaded = stats !== undefined && item.renames > 0 && recentUploads.wasJustUploaded(path);
      if (uploaded && wasPresent && (before === undefined || before.ino !== stats.ino)) {
        // A /files upload replaced it (temp file + rename): envd wrote in place.
        events.push(this.event(path, EventType.WRITE));
        this.remember(directory, item.name, stats);
      } else if (!wasPresent && stats) {
        events.push(this.event(path, EventType.CREATE));
        if (uploaded && item.changes === 0) events.push(this.event(path, EventType.WRITE));
        if (item.changes > 0) events.push(this.event(path, EventType.WRITE));
        this.remember(directory, item.name, stats);
        if (this.options.recursive && stats.isDirectory()) newDirectories.push(path);
      } else if (!wasPresent && !stats) {
        // Created and gone again before we looked (a temp file).
        if (item.renames >= 2) {
          events.push(this.event(path, EventType.CREATE));
          if (item.changes > 0) events.push(this.event(path, EventType.WRITE));
          events.push(this.event(path, EventType.REMOVE));
        }
      } else if (wasPresent && !stats) {
        if (item.changes > 0) events.push(this.event(path, EventType.WRITE));
        const renamed = before !== undefined && arrived.has(inodeKey(before));
        events.push(this.event(path, renamed ? EventType.RENAME : EventType.REMOVE));
        this.forget(directory, item.name);
        if (this.directories.has(path)) this.unwatchTree(path);
      } else if (stats) {
        if (before !== undefined && before.ino !== stats.ino) {
          // Replaced: by a rename onto it (CREATE, as inotify's MOVED_TO) or by remove + create.
          if (!departed.has(inodeKey(stats))) events.push(this.event(path, EventType.REMOVE));
          events.push(this.event(path, EventType.CREATE));
          if (item.changes > 0) events.push(this.event(path, EventType.WRITE));
          if (this.directories.has(path)) this.unwatchTree(path);
          if (this.options.recursive && stats.isDirectory()) newDirectories.push(path);
        } else if (item.changes > 0) {
          events.push(...this.classifyChange(path, before, stats));
        }
        this.remember(directory, item.name, stats);
      }
    });

    for (const dir of newDirectories) {
      const created: WatchEvent[] = [];
      try {
        await this.armDirectory(dir, created);
      } finally {
        events.push(...created);
      }
    }
    if (events.length > 0 && !this.closed) this.options.onEvents(events);
  }

  /** WRITE, CHMOD or both, from what changed since the snapshot; WRITE when nothing visible did. */
  private classifyChange(path: string, before: EntrySnapshot | undefined, stats: BigIntStats): WatchEvent[] {
    if (!before) return [this.event(path, EventType.WRITE)];
    const attributes = before.mode !== stats.mode || before.uid !== stats.uid || before.gid !== stats.gid;
    const contents = before.size !== stats.size || before.mtimeNs !== stats.mtimeNs;
    // Two writes within one kernel clock tick leave size and mtime alike: still a write.
    if (attributes && !contents) return [this.event(path, EventType.CHMOD)];
    if (attributes) return [this.event(path, EventType.WRITE), this.event(path, EventType.CHMOD)];
    return [this.event(path, EventType.WRITE)];
  }

  private reportRootGone(events: WatchEvent[]): void {
    if (this.rootGone) return;
    // Removed or moved away: reported once, as "." (envd's fsnotify does the
    // same); nothing below it can be watched any more.
    this.rootGone = true;
    events.push(this.event(this.options.root, EventType.REMOVE));
    log.debug(`watched directory ${this.options.root} went away`);
    for (const directory of this.directories.values()) directory.watcher.close();
    this.directories.clear();
  }

  /** For logs and errors. */
  describe(): string {
    return `${this.options.root}${this.options.recursive ? ' (recursive)' : ''}: ${this.directories.size} directories`;
  }
}
