// `sandbox.files`: the sandbox's filesystem, shaped like E2B's `sandbox.files`.
// Contents travel over the agent's plain-HTTP /files (streamed both ways: a
// stream is never held whole in memory); everything else is the agent's
// filesystem service. What the guest sends back is validated before use.
import { timestampDate } from '@bufbuild/protobuf/wkt';
import {
  agentHttpPaths,
  EventType,
  FileType as WireFileType,
  type EntryInfo as WireEntryInfo,
  type WatchDirResponse,
} from '@capsule/protocol/agent';
import { Code, ConnectError } from '@connectrpc/connect';
import { connectCallOptions, userAuthorization, type AgentRequestOptions, type AgentUserOptions, type SandboxAgent } from './agent-call.js';
import { errorFromFilesResponse } from './agent-errors.js';
import { readBody } from './client.js';
import { startDeadline, type Deadline } from './deadline.js';
import { CapsuleError, InvalidArgumentError, NotFoundError } from './errors.js';
import type { TransportResponse } from './transport.js';

export type FileType = 'file' | 'dir' | 'symlink';

/** A file, directory or symlink in the sandbox. */
export interface EntryInfo {
  name: string;
  /** What the entry is; for a symlink, what its target is (see `isSymlink`). */
  type: FileType | undefined;
  /** Absolute path in the sandbox. */
  path: string;
  size: number;
  /** Unix mode bits (type and permissions, as `stat` gives them). */
  mode: number;
  /** The permissions as `ls -l` shows them, e.g. `-rw-r--r--`. */
  permissions: string;
  owner: string;
  group: string;
  modifiedTime: Date | undefined;
  /** The entry itself is a symlink. */
  isSymlink: boolean;
  symlinkTarget: string | undefined;
}

/** A file that `write` wrote. */
export interface WriteInfo {
  name: string;
  path: string;
  type: 'file';
}

export type FilesystemEventType = 'create' | 'write' | 'remove' | 'rename' | 'chmod';

export interface FilesystemEvent {
  /** Path of the changed entry, relative to the watched directory. */
  name: string;
  type: FilesystemEventType;
}

/** What `write` accepts. Streams (web or Node) are sent as they are read, never gathered in memory. */
export type WriteData = string | Uint8Array | ArrayBuffer | Blob | ReadableStream<Uint8Array> | AsyncIterable<Uint8Array | string>;

export type ReadFormat = 'text' | 'bytes' | 'stream';

export interface FileReadOptions extends AgentUserOptions {
  /** `text` (default, UTF-8), `bytes`, or `stream`: a ReadableStream read at your pace. */
  format?: ReadFormat;
}

export interface WatchOptions extends AgentUserOptions {
  /** Also report changes in subdirectories, including ones created later. */
  recursive?: boolean;
  /** Stop watching after this long, in ms; 0 or unset: until `stop()`. */
  timeoutMs?: number;
  /** Called once when the watch ends: without an argument after `stop()`, with the error otherwise. */
  onExit?: (error?: unknown) => unknown;
}

/** Largest error or upload answer read from the agent. */
const MAX_TEXT_ERROR_BYTES = 64 * 1024;

const fileTypes: Record<number, FileType | undefined> = {
  [WireFileType.FILE]: 'file',
  [WireFileType.DIRECTORY]: 'dir',
  [WireFileType.SYMLINK]: 'symlink',
};

const eventTypes: Record<number, FilesystemEventType | undefined> = {
  [EventType.CREATE]: 'create',
  [EventType.WRITE]: 'write',
  [EventType.REMOVE]: 'remove',
  [EventType.RENAME]: 'rename',
  [EventType.CHMOD]: 'chmod',
};

/** The agent's entry as the SDK reports it; sizes beyond 2^53 (only a lying guest has them) are refused. */
export function toEntryInfo(entry: WireEntryInfo | undefined): EntryInfo {
  if (!entry) throw new CapsuleError('protocol_error', "the sandbox's agent sent an answer without an entry");
  const size = Number(entry.size);
  if (!Number.isSafeInteger(size) || size < 0)
    throw new CapsuleError('protocol_error', `the sandbox's agent reported an impossible size for ${entry.path.slice(0, 200)}`);
  return {
    name: entry.name,
    type: fileTypes[entry.type],
    path: entry.path,
    size,
    mode: entry.mode,
    permissions: entry.permissions,
    owner: entry.owner,
    group: entry.group,
    modifiedTime: entry.modifiedTime ? timestampDate(entry.modifiedTime) : undefined,
    isSymlink: entry.isSymlink,
    symlinkTarget: entry.symlinkTarget,
  };
}

function checkPath(path: string, what: string): void {
  if (typeof path !== 'string' || path === '')
    throw new InvalidArgumentError('invalid_argument', `${what} needs a path`, {
      hint: "give an absolute path, or one relative to the user's home",
    });
}

/** The bytes of any WriteData, as chunks, and its length when known up front. */
export function writeBody(data: WriteData): { chunks: AsyncIterable<Uint8Array>; length: number | undefined } {
  if (typeof data === 'string') {
    const bytes = Buffer.from(data, 'utf8');
    return { chunks: oneChunk(bytes), length: bytes.byteLength };
  }
  if (data instanceof Uint8Array) return { chunks: oneChunk(data), length: data.byteLength };
  if (data instanceof ArrayBuffer) return { chunks: oneChunk(new Uint8Array(data)), length: data.byteLength };
  if (typeof Blob !== 'undefined' && data instanceof Blob) return { chunks: fromWebStream(data.stream()), length: data.size };
  if (typeof (data as ReadableStream<Uint8Array>).getReader === 'function')
    return { chunks: fromWebStream(data as ReadableStream<Uint8Array>), length: undefined };
  if (typeof (data as AsyncIterable<unknown>)[Symbol.asyncIterator] === 'function')
    return { chunks: checkedChunks(data as AsyncIterable<unknown>), length: undefined };
  throw new InvalidArgumentError('invalid_argument', 'write takes a string, bytes, an ArrayBuffer, a Blob or a stream');
}

async function* oneChunk(bytes: Uint8Array): AsyncGenerator<Uint8Array> {
  if (bytes.byteLength > 0) yield bytes;
}

async function* fromWebStream(stream: ReadableStream<Uint8Array>): AsyncGenerator<Uint8Array> {
  yield* checkedChunks(webStreamChunks(stream));
}

async function* webStreamChunks(stream: ReadableStream<Uint8Array>): AsyncGenerator<unknown> {
  const reader = stream.getReader();
  try {
    for (;;) {
      const { done, value } = await reader.read();
      if (done) return;
      yield value;
    }
  } finally {
    // Stopping early (a failed upload) cancels the source rather than leaving it locked.
    await reader.cancel().catch(() => undefined);
    reader.releaseLock();
  }
}

async function* checkedChunks(source: AsyncIterable<unknown>): AsyncGenerator<Uint8Array> {
  for await (const chunk of source) {
    if (chunk instanceof Uint8Array) yield chunk;
    else if (typeof chunk === 'string') yield Buffer.from(chunk, 'utf8');
    else throw new InvalidArgumentError('invalid_argument', 'a stream given to write yielded something other than bytes or strings');
  }
}

/** A response body as a web ReadableStream that reads only as fast as it is consumed. */
function toWebStream(response: TransportResponse, deadline: Deadline): ReadableStream<Uint8Array> {
  const iterator = response.body[Symbol.asyncIterator]();
  const finish = () => {
    response.cancel();
    deadline.dispose();
  };
  return new ReadableStream<Uint8Array>({
    async pull(controller) {
      try {
        const next = await iterator.next();
        if (next.done) {
          finish();
          controller.close();
        } else controller.enqueue(next.value);
      } catch (error) {
        finish();
        controller.error(error);
      }
    },
    cancel() {
      finish();
      void iterator.return?.();
    },
  });
}

/** A running watch; `stop()` ends it. */
export class WatchHandle {
  readonly #stop: () => void;
  readonly #done: Promise<void>;

  /** @internal */
  constructor(stop: () => void, done: Promise<void>) {
    this.#stop = stop;
    this.#done = done;
  }

  /** Stops watching; resolves once no more events will be delivered. */
  async stop(): Promise<void> {
    this.#stop();
    await this.#done;
  }
}

export class Files {
  readonly #agent: SandboxAgent;

  /** @internal */
  constructor(agent: SandboxAgent) {
    this.#agent = agent;
  }

  /**
   * Reads a file: as text (UTF-8, the default), as bytes, or as a stream read
   * at your pace (`format: 'stream'`). Text and bytes are bounded by the
   * client's `maxResponseBytes` (128 MiB by default); read bigger files as a
   * stream. The request timeout covers only the wait for the file to start.
   *
   * @throws NotFoundError when there is no such file; InvalidArgumentError for a directory.
   * @example
   * const config = await sandbox.files.read('/etc/os-release');
   * const png = await sandbox.files.read('/tmp/plot.png', { format: 'bytes' });
   * const stream = await sandbox.files.read('/var/log/big.log', { format: 'stream' });
   */
  read(path: string, options?: FileReadOptions & { format?: 'text' }): Promise<string>;
  read(path: string, options: FileReadOptions & { format: 'bytes' }): Promise<Uint8Array>;
  read(path: string, options: FileReadOptions & { format: 'stream' }): Promise<ReadableStream<Uint8Array>>;
  async read(path: string, options: FileReadOptions = {}): Promise<string | Uint8Array | ReadableStream<Uint8Array>> {
    checkPath(path, 'read');
    const format = options.format ?? 'text';
    const { response, deadline } = await this.#filesRequest('GET', path, options, undefined, `read ${path}`);
    deadline.stopTimer();
    if (format === 'stream') return toWebStream(response, deadline);
    try {
      const bytes = await readBody(response, this.#agent.client.maxResponseBytes).catch((error: unknown) => {
        if (error instanceof CapsuleError && error.code === 'protocol_error') {
          throw new CapsuleError('file_too_large', `${path} is larger than ${this.#agent.client.maxResponseBytes} bytes`, {
            hint: "read it with { format: 'stream' }, or raise the client's maxResponseBytes",
          });
        }
        throw error;
      });
      return format === 'bytes' ? new Uint8Array(bytes.buffer, bytes.byteOffset, bytes.byteLength) : new TextDecoder().decode(bytes);
    } finally {
      response.cancel();
      deadline.dispose();
    }
  }

  /**
   * Writes a file, creating its parent directories; an existing file is
   * replaced whole (its mode kept), never left half-written. Strings are
   * written as UTF-8; streams (a web ReadableStream, a Node stream, any async
   * iterable of bytes) and Blobs are sent as they are read. The request
   * timeout covers the wait for the answer once everything was sent.
   *
   * @example
   * await sandbox.files.write('/app/main.py', 'print("hi")\n');
   * await sandbox.files.write('/data/in.bin', createReadStream('in.bin'));
   */
  async write(path: string, data: WriteData, options: AgentUserOptions = {}): Promise<WriteInfo> {
    checkPath(path, 'write');
    const { chunks, length } = writeBody(data);
    // The timer starts only once the last byte left: a big upload is not a slow daemon.
    let armTimer = () => {};
    const body = (async function* () {
      yield* chunks;
      armTimer();
    })();
    const { response, deadline } = await this.#filesRequest(
      'POST',
      path,
      options,
      { body, length, onDeadline: (d) => (armTimer = d.arm) },
      `write ${path}`,
    );
    try {
      const text = (await readBody(response, MAX_TEXT_ERROR_BYTES)).toString('utf8');
      return parseWriteAnswer(text, path);
    } finally {
      response.cancel();
      deadline.dispose();
    }
  }

  /**
   * The entries of a directory; with `depth` > 1, also those below it (depth first, sorted by name).
   *
   * @example
   * for (const entry of await sandbox.files.list('/app', { depth: 2 })) console.log(entry.type, entry.path);
   */
  async list(path: string, options: AgentUserOptions & { depth?: number } = {}): Promise<EntryInfo[]> {
    checkPath(path, 'list');
    const depth = options.depth ?? 1;
    if (!Number.isInteger(depth) || depth < 1)
      throw new InvalidArgumentError('invalid_argument', `depth must be a whole number ≥ 1, not ${depth}`);
    const answer = await this.#call(`list ${path}`, options, (callOptions) =>
      this.#agent.connection.filesystem.listDir({ path, depth }, callOptions),
    );
    return answer.entries.map(toEntryInfo);
  }

  /**
   * What a path is: type, size, mode, owner, modification time (`stat`).
   *
   * @throws NotFoundError when nothing is there.
   * @example
   * const { size, permissions } = await sandbox.files.getInfo('/etc/passwd');
   */
  async getInfo(path: string, options: AgentUserOptions = {}): Promise<EntryInfo> {
    checkPath(path, 'getInfo');
    const answer = await this.#call(`stat ${path}`, options, (callOptions) =>
      this.#agent.connection.filesystem.stat({ path }, callOptions),
    );
    return toEntryInfo(answer.entry);
  }

  /**
   * Whether anything (file, directory, symlink) is at `path`. A sandbox that
   * is gone is an error, not `false`.
   *
   * @example
   * if (!(await sandbox.files.exists('/app/.env'))) await sandbox.files.write('/app/.env', '');
   */
  async exists(path: string, options: AgentUserOptions = {}): Promise<boolean> {
    try {
      await this.getInfo(path, options);
      return true;
    } catch (error) {
      // A sandbox that is gone is reported as such by getInfo, not as NotFoundError `not_found`.
      if (error instanceof NotFoundError && error.code === 'not_found') return false;
      throw error;
    }
  }

  /**
   * Creates a directory and any missing parents, owned by the user.
   * Resolves false when the directory was already there.
   *
   * @example
   * await sandbox.files.makeDir('/app/data/cache');
   */
  async makeDir(path: string, options: AgentUserOptions = {}): Promise<boolean> {
    checkPath(path, 'makeDir');
    try {
      await this.#call(`make directory ${path}`, options, (callOptions) =>
        this.#agent.connection.filesystem.makeDir({ path }, callOptions),
      );
      return true;
    } catch (error) {
      if (error instanceof CapsuleError && error.code === 'already_exists') return false;
      throw error;
    }
  }

  /**
   * Moves or renames a file or directory (creating the destination's parents) and returns the moved entry.
   *
   * @throws NotFoundError when `oldPath` does not exist.
   * @example
   * await sandbox.files.rename('/tmp/out.csv', '/app/results/out.csv');
   */
  async rename(oldPath: string, newPath: string, options: AgentUserOptions = {}): Promise<EntryInfo> {
    checkPath(oldPath, 'rename');
    checkPath(newPath, 'rename');
    const answer = await this.#call(`rename ${oldPath} to ${newPath}`, options, (callOptions) =>
      this.#agent.connection.filesystem.move({ source: oldPath, destination: newPath }, callOptions),
    );
    return toEntryInfo(answer.entry);
  }

  /**
   * Removes a file, or a directory with everything in it. Removing what is
   * not there is not an error (like `rm -rf`).
   *
   * @example
   * await sandbox.files.remove('/app/build');
   */
  async remove(path: string, options: AgentUserOptions = {}): Promise<void> {
    checkPath(path, 'remove');
    await this.#call(`remove ${path}`, options, (callOptions) => this.#agent.connection.filesystem.remove({ path }, callOptions));
  }

  /**
   * Watches a directory and calls `onEvent` for each change in it (and below
   * it, with `recursive`). Resolves once the watch is in place, so changes
   * made after it resolves are reported; `stop()` ends it.
   *
   * @throws NotFoundError for a missing directory, InvalidArgumentError for a file.
   * @example
   * const watch = await sandbox.files.watchDir('/app', (event) => console.log(event.type, event.name), { recursive: true });
   * // ...
   * await watch.stop();
   */
  async watchDir(path: string, onEvent: (event: FilesystemEvent) => unknown, options: WatchOptions = {}): Promise<WatchHandle> {
    checkPath(path, 'watchDir');
    const what = `watch ${path}`;
    const controller = new AbortController();
    const forwardAbort = () => controller.abort(options.signal?.reason);
    if (options.signal?.aborted) forwardAbort();
    options.signal?.addEventListener('abort', forwardAbort, { once: true });
    const callOptions = { ...connectCallOptions({ ...options, signal: controller.signal }, 0, { timeoutMs: options.timeoutMs }) };
    const events = this.#agent.connection.filesystem
      .watchDir({ path, recursive: options.recursive ?? false }, callOptions)
      [Symbol.asyncIterator]();
    let stopped = false;
    const stop = () => {
      stopped = true;
      controller.abort();
    };
    let first: IteratorResult<WatchDirResponse>;
    try {
      first = await events.next();
    } catch (error) {
      options.signal?.removeEventListener('abort', forwardAbort);
      throw await this.#agent.failure(error, what, options.signal);
    }
    if (first.done || first.value.event.case !== 'start') {
      stop();
      options.signal?.removeEventListener('abort', forwardAbort);
      throw new CapsuleError('protocol_error', `the sandbox's agent did not confirm the watch of ${path}`);
    }
    const done = (async () => {
      let failure: unknown;
      try {
        for (;;) {
          const next = await events.next();
          if (next.done) break;
          const event = next.value.event;
          if (event.case !== 'filesystem') continue;
          const type = eventTypes[event.value.type];
          if (type === undefined) continue; // a kind this SDK does not know yet
          await onEvent({ name: event.value.name, type });
        }
      } catch (error) {
        if (!stopped)
          failure =
            error instanceof ConnectError && error.code === Code.DeadlineExceeded
              ? undefined
              : await this.#agent.failure(error, what, options.signal);
      } finally {
        options.signal?.removeEventListener('abort', forwardAbort);
        controller.abort();
      }
      await (failure === undefined ? options.onExit?.() : options.onExit?.(failure));
    })();
    return new WatchHandle(
      stop,
      done.catch(() => undefined),
    );
  }

  /** One unary call to the filesystem service, its failure mapped. */
  async #call<T>(
    what: string,
    options: AgentUserOptions,
    call: (callOptions: ReturnType<typeof connectCallOptions>) => Promise<T>,
  ): Promise<T> {
    try {
      return await call(connectCallOptions(options, this.#agent.requestTimeoutMs));
    } catch (error) {
      throw await this.#agent.failure(error, what, options.signal);
    }
  }

  /** A /files request through the daemon's proxy, answered (2xx) or thrown as a typed error. */
  async #filesRequest(
    method: 'GET' | 'POST',
    path: string,
    options: AgentRequestOptions & { user?: string },
    upload: { body: AsyncIterable<Uint8Array>; length: number | undefined; onDeadline: (deadline: Deadline) => void } | undefined,
    what: string,
  ): Promise<{ response: TransportResponse; deadline: Deadline }> {
    const route = `/v1/sandboxes/${encodeURIComponent(this.#agent.sandboxId)}/envd${agentHttpPaths.files}?${new URLSearchParams({ path })}`;
    const timeoutMs = options.requestTimeoutMs ?? this.#agent.requestTimeoutMs;
    const deadline = startDeadline(options.signal, timeoutMs, what, { armed: upload === undefined });
    upload?.onDeadline(deadline);
    let response: TransportResponse;
    try {
      response = await this.#agent.client.transport.request({
        method,
        path: route,
        headers: {
          ...userAuthorization(options.user),
          ...(upload
            ? {
                'content-type': 'application/octet-stream',
                ...(upload.length !== undefined && { 'content-length': String(upload.length) }),
              }
            : { accept: '*/*' }),
        },
        ...(upload && { body: upload.body }),
        signal: deadline.signal,
      });
    } catch (error) {
      deadline.dispose();
      throw error;
    }
    if (response.status >= 200 && response.status < 300) return { response, deadline };
    try {
      const text = (await readBody(response, MAX_TEXT_ERROR_BYTES).catch(() => Buffer.alloc(0))).toString('utf8');
      throw errorFromFilesResponse(response.status, text, what);
    } finally {
      response.cancel();
      deadline.dispose();
    }
  }
}

/** The agent's answer to an upload: `[{path, name, type}]`, checked. */
export function parseWriteAnswer(text: string, path: string): WriteInfo {
  let answer: unknown;
  try {
    answer = JSON.parse(text);
  } catch {
    answer = undefined;
  }
  const first = Array.isArray(answer) ? (answer[0] as Record<string, unknown> | undefined) : undefined;
  if (!first || typeof first['path'] !== 'string' || typeof first['name'] !== 'string') {
    throw new CapsuleError(
      'protocol_error',
      `the sandbox's agent answered the write of ${path} with something that is not a list of written files`,
    );
  }
  return { path: first['path'], name: first['name'], type: 'file' };
}
