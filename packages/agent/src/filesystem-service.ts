// The `filesystem.Filesystem` Connect service with envd's path rules, codes
// and messages. Like envd, it acts with the agent's (root's) rights for the
// user named by Basic auth, who owns what it creates. Must never buffer a
// listing or a watch stream without bound.

import { lstat, readdir, realpath, rename, rm, stat, statfs } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { Code, ConnectError, type HandlerContext, type ServiceImpl } from '@connectrpc/connect';
import type { Filesystem } from '@capsule/protocol/agent';
import { AccountNames } from './account-names.js';
import type { AgentDefaults } from './agent-defaults.js';
import { DirectoryWatch, WatchLimitError, type WatchEvent } from './directory-watch.js';
import { ensureDirectories, NotADirectoryError } from './ensure-dirs.js';
import { entryInfoFromStats, readEntryInfo, type EntryInfoInit } from './entry-info.js';
import { toFilesystemEvents, type FilesystemEventInit } from './filesystem-event.js';
import { keepaliveIntervalMs } from './keepalive-interval.js';
import { createLogger, describeError } from './log.js';
import { expandAndResolvePath, InvalidPathError } from './user-path.js';
import { resolveRequestUser, PASSWD_PATH, type UnixUser } from './users.js';
import { watchFailure, type WatcherRegistry } from './watcher-registry.js';

const log = createLogger('filesystem');

/** Entries one ListDir may return; a deeper listing must be narrowed. */
export const MAX_LIST_ENTRIES = 100_000;
/** Events a WatchDir stream may have queued for a client that does not read. */
export const MAX_STREAM_PENDING_EVENTS = 10_000;
const STAT_CONCURRENCY = 32;

// Filesystems whose change notifications are unreliable (envd refuses them
// unless allow_network_mounts): NFS, CIFS, SMB, SMB2, FUSE.
const NETWORK_FILESYSTEM_MAGICS = new Set([0x6969, 0xff534d42, 0x517b, 0xfe534d42, 0x65735546]);

export interface FilesystemServiceOptions {
  defaults: AgentDefaults;
  watchers: WatcherRegistry;
  passwdPath?: string;
}

const errorCode = (error: unknown) => (error as NodeJS.ErrnoException | undefined)?.code;
/** ENOTDIR too: "a/b" where a is a file does not exist either. */
const isMissing = (error: unknown) => errorCode(error) === 'ENOENT' || errorCode(error) === 'ENOTDIR';

function internal(what: string, error: unknown): ConnectError {
  return new ConnectError(`${what}: ${describeError(error)}`, Code.Internal);
}

function abortError(signal: AbortSignal): Error {
  return signal.reason instanceof Error ? signal.reason : new ConnectError('request aborted', Code.Canceled);
}

async function isOnNetworkMount(path: string): Promise<boolean> {
  const info = await statfs(path);
  return NETWORK_FILESYSTEM_MAGICS.has(Number(info.type) >>> 0);
}

export function createFilesystemService(options: FilesystemServiceOptions): ServiceImpl<typeof Filesystem> {
  const { defaults, watchers } = options;
  const passwdPath = options.passwdPath ?? PASSWD_PATH;

  function userOf(context: HandlerContext): UnixUser {
    return resolveRequestUser(context.requestHeader.get('authorization'), defaults.user, passwdPath);
  }

  function resolvePath(path: string, user: UnixUser): string {
    try {
      return expandAndResolvePath(path, user, defaults.workdir);
    } catch (error) {
      if (error instanceof InvalidPathError) throw new ConnectError(error.message, Code.InvalidArgument);
      throw error;
    }
  }

  async function entryInfo(path: string, names = new AccountNames(passwdPath)): Promise<EntryInfoInit> {
    try {
      return await readEntryInfo(path, names);
    } catch (error) {
      if (isMissing(error)) throw new ConnectError(`file not found: ${describeError(error)}`, Code.NotFound);
      throw internal('error getting file info', error);
    }
  }

  /** The checks WatchDir and CreateWatcher share (envd's wording and codes). */
  async function watchableDirectory(path: string, allowNetworkMounts: boolean, context: HandlerContext): Promise<string> {
    const watchPath = resolvePath(path, userOf(context));
    let info;
    try {
      info = await stat(watchPath);
    } catch (error) {
      if (isMissing(error)) throw new ConnectError(`path ${watchPath} not found: ${describeError(error)}`, Code.NotFound);
      throw internal(`error statting path ${watchPath}`, error);
    }
    if (!info.isDirectory()) throw new ConnectError(`path ${watchPath} not a directory`, Code.InvalidArgument);
    let onNetworkMount: boolean;
    try {
      onNetworkMount = await isOnNetworkMount(watchPath);
    } catch (error) {
      throw internal('error checking mount status', error);
    }
    if (onNetworkMount && !allowNetworkMounts) {
      throw new ConnectError(`cannot watch path on network filesystem: ${watchPath}`, Code.InvalidArgument);
    }
    return watchPath;
  }

  function watchStartError(watchPath: string, error: unknown): ConnectError {
    if (error instanceof ConnectError) return error;
    if (error instanceof WatchLimitError) return new ConnectError(error.message, Code.ResourceExhausted);
    return internal(`error adding path ${watchPath} to watcher`, error);
  }

  /**
   * ListDir's walk: entries 1..depth levels below `resolvedRoot`, reported
   * under `reportedRoot`, lexical and depth-first like Go's WalkDir; symlinks
   * are listed, never descended into.
   */
  async function walkDirectory(reportedRoot: string, resolvedRoot: string, depth: number): Promise<EntryInfoInit[]> {
    const names = new AccountNames(passwdPath);
    const entries: EntryInfoInit[] = [];
    const visit = async (resolvedDir: string, reportedDir: string, level: number): Promise<void> => {
      let children: string[];
      try {
        children = (await readdir(resolvedDir)).sort();
      } catch (error) {
        if (level > 1 && isMissing(error)) return; // removed while we walked
        throw internal(`error reading directory ${resolvedDir}`, error);
      }
      for (let index = 0; index < children.length; index += STAT_CONCURRENCY) {
        const slice = children.slice(index, index + STAT_CONCURRENCY);
        const infos = await Promise.all(
          slice.map(async (name) => {
            const stats = await lstat(join(resolvedDir, name), { bigint: true }).catch((error: unknown) => {
              if (isMissing(error)) return undefined;
              throw internal(`error reading directory ${resolvedDir}`, error);
            });
            if (!stats) return undefined;
            return { name, stats, info: await entryInfoFromStats(join(reportedDir, name), stats, names) };
          }),
        );
        for (const item of infos) {
          if (!item) continue;
          if (entries.length >= MAX_LIST_ENTRIES) {
            throw new ConnectError(
              `the listing has more than ${MAX_LIST_ENTRIES} entries; list with a smaller depth`,
              Code.ResourceExhausted,
            );
          }
          entries.push(item.info);
          if (level < depth && item.stats.isDirectory()) {
            await visit(join(resolvedDir, item.name), join(reportedDir, item.name), level + 1);
          }
        }
      }
    };
    await visit(resolvedRoot, reportedRoot, 1);
    return entries;
  }

  return {
    async stat(request, context) {
      const path = resolvePath(request.path, userOf(context));
      return { entry: await entryInfo(path) };
    },

    async makeDir(request, context) {
      const user = userOf(context);
      const dirPath = resolvePath(request.path, user);
      let existing;
      try {
        existing = await stat(dirPath);
      } catch (error) {
        if (errorCode(error) !== 'ENOENT') throw internal('error getting file info', error);
      }
      if (existing?.isDirectory()) throw new ConnectError(`directory already exists: ${dirPath}`, Code.AlreadyExists);
      if (existing) throw new ConnectError(`path already exists but it is not a directory: ${dirPath}`, Code.InvalidArgument);
      try {
        await ensureDirectories(dirPath, user);
      } catch (error) {
        if (error instanceof NotADirectoryError) throw new ConnectError(error.message, Code.Internal);
        // A concurrent MakeDir won the race: the same answer as if it had come first.
        if (errorCode(error) === 'EEXIST') throw new ConnectError(`directory already exists: ${dirPath}`, Code.AlreadyExists);
        throw internal('error creating directory', error);
      }
      return { entry: await entryInfo(dirPath) };
    },

    async move(request, context) {
      const user = userOf(context);
      const source = resolvePath(request.source, user);
      const destination = resolvePath(request.destination, user);
      try {
        await ensureDirectories(dirname(destination), user);
      } catch (error) {
        throw internal('error ensuring directories', error);
      }
      try {
        await rename(source, destination);
      } catch (error) {
        if (errorCode(error) === 'ENOENT') throw new ConnectError(`source file not found: ${describeError(error)}`, Code.NotFound);
        throw internal('error renaming', error);
      }
      return { entry: await entryInfo(destination) };
    },

    async listDir(request, context) {
      const depth = request.depth === 0 ? 1 : request.depth; // envd: 0 means the directory itself
      const requestedPath = resolvePath(request.path, userOf(context));
      let resolvedPath: string;
      try {
        resolvedPath = await realpath(requestedPath);
      } catch (error) {
        if (isMissing(error)) throw new ConnectError(`path not found: ${describeError(error)}`, Code.NotFound);
        if (errorCode(error) === 'ELOOP') {
          throw new ConnectError(`cyclic symlink or chain >255 links at "${requestedPath}"`, Code.FailedPrecondition);
        }
        throw internal('error resolving symlink', error);
      }
      let info;
      try {
        info = await stat(resolvedPath);
      } catch (error) {
        if (isMissing(error)) throw new ConnectError(`directory not found: ${describeError(error)}`, Code.NotFound);
        throw internal('error getting file info', error);
      }
      if (!info.isDirectory()) throw new ConnectError(`path is not a directory: ${requestedPath}`, Code.InvalidArgument);
      return { entries: await walkDirectory(requestedPath, resolvedPath, depth) };
    },

    async remove(request, context) {
      const path = resolvePath(request.path, userOf(context));
      // envd would remove everything; the agent and its kit live under / too.
      if (path === '/') throw new ConnectError('refusing to remove /', Code.InvalidArgument);
      try {
        // Like Go's os.RemoveAll: recursive, and no error when it is already gone.
        await rm(path, { recursive: true, force: true, maxRetries: 2 });
      } catch (error) {
        throw internal('error removing file or directory', error);
      }
      return {};
    },

    async *watchDir(request, context) {
      const watchPath = await watchableDirectory(request.path, request.allowNetworkMounts, context);
      const queue: FilesystemEventInit[] = [];
      let failure: ConnectError | undefined;
      let wake: (() => void) | undefined;
      let converting = Promise.resolve();
      const fail = (error: ConnectError) => {
        failure ??= error;
        wake?.();
      };
      const onEvents = (events: WatchEvent[]) => {
        converting = converting.then(async () => {
          const converted = await toFilesystemEvents(events, request.includeEntry);
          if (queue.length + converted.length > MAX_STREAM_PENDING_EVENTS) {
            fail(new ConnectError(`more than ${MAX_STREAM_PENDING_EVENTS} events are waiting for this client`, Code.ResourceExhausted));
            return;
          }
          queue.push(...converted);
          wake?.();
        });
      };
      let watch: DirectoryWatch;
      try {
        watch = await DirectoryWatch.start({
          root: watchPath,
          recursive: request.recursive,
          onEvents,
          onError: (error) => fail(watchFailure(error)),
        });
      } catch (error) {
        throw watchStartError(watchPath, error);
      }
      log.debug(`watching ${watch.describe()}`);
      const idleMs = keepaliveIntervalMs(context.requestHeader);
      const { signal } = context;
      try {
        yield { event: { case: 'start', value: {} } };
        for (;;) {
          const next = queue.shift();
          if (next) {
            yield { event: { case: 'filesystem', value: next } };
            continue;
          }
          if (failure) throw failure;
          if (signal.aborted) throw abortError(signal);
          const woke = await new Promise<boolean>((resolve) => {
            const finish = (gotEvent: boolean) => {
              clearTimeout(timer);
              signal.removeEventListener('abort', onAbort);
              wake = undefined;
              resolve(gotEvent);
            };
            const onAbort = () => finish(true);
            const timer = setTimeout(() => finish(false), idleMs);
            wake = () => finish(true);
            signal.addEventListener('abort', onAbort, { once: true });
          });
          if (!woke) yield { event: { case: 'keepalive', value: {} } };
        }
      } finally {
        watch.close();
        log.debug(`stopped watching ${watchPath}`);
      }
    },

    async createWatcher(request, context) {
      const watchPath = await watchableDirectory(request.path, request.allowNetworkMounts, context);
      try {
        return {
          watcherId: await watchers.create({ root: watchPath, recursive: request.recursive, includeEntry: request.includeEntry }),
        };
      } catch (error) {
        throw watchStartError(watchPath, error);
      }
    },

    async getWatcherEvents(request) {
      return { events: await watchers.takeEvents(request.watcherId) };
    },

    removeWatcher(request) {
      watchers.remove(request.watcherId);
      return {};
    },
  };
}
