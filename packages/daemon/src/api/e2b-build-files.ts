// The files e2b's COPY steps upload before a build, kept under the hash the
// SDK computed for them: one folder per hash, unpacked from the uploaded tar
// (gzipped or not) by build-context-upload.ts's bounded unpacker, which
// refuses links and paths outside the folder. An upload is hostile input: it
// must never write outside its folder, grow past its limits, or count as
// present before it was unpacked whole. Uploads no build has used for a while
// are pruned, never one a build under way copies from.
import fs from 'node:fs';
import path from 'node:path';
import { createGunzip } from 'node:zlib';
import { CapsuleError } from '../errors.js';
import { type BuildContextLimits, defaultBuildContextLimits, unpackBuildContext } from './build-context-upload.js';

/** The SDK's files hash: a hex SHA-256. Anything else would be a path, not a name. */
const FILES_HASH = /^[0-9a-f]{64}$/;
/** Tar headers and padding on top of the files' bytes: a header and up to a block of padding per entry, pax headers aside. */
const TAR_BYTES_PER_ENTRY = 1536;

export class E2bBuildFiles {
  /** The hashes builds under way copy from, with how many builds do: never pruned. */
  private readonly held = new Map<string, number>();

  constructor(
    /** One folder per files hash. */
    readonly dir: string,
    /** An empty private folder on the same filesystem as `dir`, swept if the daemon dies mid-upload. */
    private readonly newStagingDir: () => string,
    /** How long an upload no build holds is kept after its last use (CAPSULE_BUILD_UPLOADS_MAX_IDLE_MS; 0: until its build ends). */
    private readonly maxIdleMs: number,
    private readonly limits: BuildContextLimits = defaultBuildContextLimits,
  ) {}

  /** The folder of a files hash (which need not exist); refuses what is not a hash. */
  folderOf(hash: string): string {
    if (!FILES_HASH.test(hash))
      throw new CapsuleError('invalid_argument', `"${hash.slice(0, 80)}" is not a files hash`, {
        hint: 'the e2b SDK sends the SHA-256 of the files, 64 hex digits',
      });
    return path.join(this.dir, hash);
  }

  /** Whether the files are here; answering yes is a use (the SDK then skips the upload and builds from them). */
  has(hash: string): boolean {
    const folder = this.folderOf(hash);
    if (!fs.existsSync(folder)) return false;
    markUsed(folder);
    return true;
  }

  /**
   * Keeps the uploads of `hashes` (a build's COPY steps) from being pruned
   * until the returned release is called, at the build's end; the release
   * counts as their last use, and prunes.
   */
  hold(hashes: string[]): () => void {
    const mine = [...new Set(hashes.filter((hash) => FILES_HASH.test(hash)))];
    for (const hash of mine) this.held.set(hash, (this.held.get(hash) ?? 0) + 1);
    let released = false;
    return () => {
      if (released) return;
      released = true;
      for (const hash of mine) {
        const left = (this.held.get(hash) ?? 1) - 1;
        if (left > 0) this.held.set(hash, left);
        else this.held.delete(hash);
        if (fs.existsSync(path.join(this.dir, hash))) markUsed(path.join(this.dir, hash));
      }
      this.prune();
    };
  }

  /** Removes the uploads no build holds whose last use is `maxIdleMs` old or more; returns how many. */
  prune(now = Date.now()): number {
    let removed = 0;
    for (const hash of fs.existsSync(this.dir) ? fs.readdirSync(this.dir) : []) {
      if (!FILES_HASH.test(hash) || this.held.has(hash)) continue;
      const folder = path.join(this.dir, hash);
      const stat = fs.lstatSync(folder, { throwIfNoEntry: false });
      if (!stat || now - stat.mtimeMs < this.maxIdleMs) continue;
      fs.rmSync(folder, { recursive: true, force: true });
      removed++;
    }
    return removed;
  }

  /**
   * Unpacks an uploaded tar into the hash's folder. A second upload of a hash
   * already present is read and dropped: the first one stays.
   */
  async receive(hash: string, body: AsyncIterable<Buffer>): Promise<void> {
    const target = this.folderOf(hash);
    const staging = this.newStagingDir();
    try {
      const archiveBytes = this.limits.maxBytes + this.limits.maxEntries * TAR_BYTES_PER_ENTRY;
      await unpackBuildContext(bounded(gunzipIfGzipped(bounded(body, archiveBytes)), archiveBytes), staging, this.limits);
      fs.mkdirSync(this.dir, { recursive: true });
      try {
        fs.renameSync(staging, target);
      } catch (err) {
        // Another upload of the same files finished first.
        const code = (err as NodeJS.ErrnoException).code;
        if (code !== 'ENOTEMPTY' && code !== 'EEXIST') throw err;
      }
      markUsed(target);
    } finally {
      fs.rmSync(staging, { recursive: true, force: true });
    }
  }
}

/** An upload's last use is its folder's modification time (which its files, unpacked before, no longer change). */
function markUsed(folder: string): void {
  const now = new Date();
  fs.utimesSync(folder, now, now);
}

/** The stream as it is, refused once it passes `max` bytes: a body or a gunzip output may not grow without end. */
async function* bounded(chunks: AsyncIterable<Buffer>, max: number): AsyncGenerator<Buffer> {
  let total = 0;
  for await (const chunk of chunks) {
    total += chunk.length;
    if (total > max)
      throw new CapsuleError('invalid_argument', `the uploaded files are larger than ${Math.round(max / 1024 / 1024)} MiB as a tar`, {
        hint: 'copy fewer or smaller files, or leave them out with .dockerignore',
      });
    yield chunk;
  }
}

/** The SDK gzips uploads unless told not to (copy's `gzip: false`): both are taken, told apart by gzip's magic bytes. */
async function* gunzipIfGzipped(chunks: AsyncIterable<Buffer>): AsyncGenerator<Buffer> {
  const iterator = chunks[Symbol.asyncIterator]();
  const first = await iterator.next();
  if (first.done) return;
  const rest = { [Symbol.asyncIterator]: () => iterator };
  if (!(first.value[0] === 0x1f && first.value[1] === 0x8b)) {
    yield first.value;
    yield* rest;
    return;
  }
  const gunzip = createGunzip();
  // Fed as the reader takes its output, and no further once the reader stopped (the unpacker refused the archive).
  const feeding = (async () => {
    try {
      if (!gunzip.write(first.value)) await waitForDrain(gunzip);
      for await (const chunk of rest) {
        if (gunzip.destroyed) break;
        if (!gunzip.write(chunk)) await waitForDrain(gunzip);
      }
      gunzip.end();
    } catch (err) {
      gunzip.destroy(err as Error);
    }
  })();
  try {
    for await (const chunk of gunzip) yield chunk as Buffer;
  } catch (err) {
    if (err instanceof CapsuleError) throw err;
    throw new CapsuleError('invalid_argument', `the uploaded files are not a valid gzip stream: ${(err as Error).message}`);
  } finally {
    gunzip.destroy();
    await feeding;
  }
}

function waitForDrain(stream: NodeJS.WritableStream): Promise<void> {
  return new Promise((resolve) => {
    const done = () => {
      stream.off('drain', done);
      stream.off('close', done);
      resolve();
    };
    stream.on('drain', done);
    stream.on('close', done);
  });
}
