// The content-addressed blob cache (layers, configs, manifests) under the
// shared cache folder. A blob is written to a partial file while its digest is
// computed, and renamed into place only when digest and size match, so a
// cached blob is always good; an interrupted download resumes from its partial
// file. A blob that fails verification leaves nothing behind.
import { createHash, type Hash } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { CapsuleError } from '../errors.js';

export interface BlobSource {
  /** Opens the blob's bytes from `offset` on; `start` says where they really begin (0 if the source cannot seek). */
  open(offset: number): Promise<{ body: AsyncIterable<Uint8Array>; start: number }>;
}

export interface BlobProgress {
  digest: string;
  doneBytes: number;
  totalBytes: number;
}

function hexOf(digest: string): string {
  return digest.slice('sha256:'.length);
}

export function digestMismatch(digest: string, actual: string, where: string): CapsuleError {
  return new CapsuleError('image_digest_mismatch', `${where} ${digest} has the wrong content (its sha256 is ${actual})`, {
    hint: 'the registry or the archive served corrupt data; nothing of it was kept',
  });
}

export class BlobStore {
  private readonly inFlight = new Map<string, Promise<string>>();

  constructor(readonly dir: string) {}

  path(digest: string): string {
    return path.join(this.dir, 'sha256', hexOf(digest));
  }

  private partialPath(digest: string): string {
    return path.join(this.dir, 'partial', hexOf(digest));
  }

  has(digest: string): boolean {
    return fs.existsSync(this.path(digest));
  }

  read(digest: string): Buffer {
    return fs.readFileSync(this.path(digest));
  }

  /** Stores bytes already in memory (manifests, configs) after checking their digest. */
  put(digest: string, bytes: Buffer, where = 'blob'): string {
    const actual = `sha256:${createHash('sha256').update(bytes).digest('hex')}`;
    if (actual !== digest) throw digestMismatch(digest, actual, where);
    const target = this.path(digest);
    if (fs.existsSync(target)) return target;
    fs.mkdirSync(path.dirname(target), { recursive: true });
    const temp = `${target}.tmp-${process.pid}-${Date.now()}`;
    fs.writeFileSync(temp, bytes);
    fs.renameSync(temp, target);
    return target;
  }

  /** Fetches a blob into the cache unless it is there; concurrent calls for one digest share the work. */
  async fetch(digest: string, size: number, source: BlobSource, onProgress?: (p: BlobProgress) => void): Promise<string> {
    const target = this.path(digest);
    if (fs.existsSync(target)) {
      onProgress?.({ digest, doneBytes: size, totalBytes: size });
      return target;
    }
    const running = this.inFlight.get(digest);
    if (running) return await running;
    const work = this.download(digest, size, source, onProgress).finally(() => this.inFlight.delete(digest));
    this.inFlight.set(digest, work);
    return await work;
  }

  private async download(digest: string, size: number, source: BlobSource, onProgress?: (p: BlobProgress) => void): Promise<string> {
    const target = this.path(digest);
    const partial = this.partialPath(digest);
    fs.mkdirSync(path.dirname(partial), { recursive: true });
    fs.mkdirSync(path.dirname(target), { recursive: true });
    let have = 0;
    try {
      have = fs.statSync(partial).size;
    } catch {
      have = 0;
    }
    if (have > size) {
      fs.rmSync(partial, { force: true });
      have = 0;
    }
    const { body, start } = await source.open(have);
    const hash = createHash('sha256');
    if (start > 0) await hashFile(hash, partial, start);
    const fd = fs.openSync(partial, start > 0 ? 'r+' : 'w', 0o644);
    let written = start;
    let ok = false;
    try {
      onProgress?.({ digest, doneBytes: written, totalBytes: size });
      for await (const chunk of body) {
        const buf = Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength);
        if (written + buf.length > size) throw digestMismatch(digest, 'longer than the manifest says', 'blob');
        let offset = 0;
        while (offset < buf.length) offset += fs.writeSync(fd, buf, offset, buf.length - offset, written + offset);
        hash.update(buf);
        written += buf.length;
        onProgress?.({ digest, doneBytes: written, totalBytes: size });
      }
      if (written !== size)
        throw new CapsuleError('registry_unreachable', `the download of ${digest} ended after ${written} of ${size} bytes`, {
          hint: 'try again: the download resumes where it stopped',
        });
      const actual = `sha256:${hash.digest('hex')}`;
      if (actual !== digest) throw digestMismatch(digest, actual, 'blob');
      fs.fsyncSync(fd);
      ok = true;
    } catch (err) {
      // A broken connection resumes later from the partial file; bytes that were wrong must not.
      if (err instanceof CapsuleError && err.code === 'image_digest_mismatch') {
        fs.rmSync(partial, { force: true });
        throw err;
      }
      if (err instanceof CapsuleError) throw err;
      throw new CapsuleError(
        'registry_unreachable',
        `the download of ${digest} broke off after ${written} of ${size} bytes: ${(err as Error).message}`,
        {
          hint: 'try again: the download resumes where it stopped',
          cause: err,
        },
      );
    } finally {
      fs.closeSync(fd);
    }
    if (ok) fs.renameSync(partial, target);
    return target;
  }

  /** Digests of every cached blob, for garbage collection. */
  list(): string[] {
    try {
      return fs
        .readdirSync(path.join(this.dir, 'sha256'))
        .filter((n) => /^[a-f0-9]{64}$/.test(n))
        .map((n) => `sha256:${n}`);
    } catch {
      return [];
    }
  }

  remove(digest: string): void {
    fs.rmSync(this.path(digest), { force: true });
  }
}

async function hashFile(hash: Hash, file: string, bytes: number): Promise<void> {
  const stream = fs.createReadStream(file, { start: 0, end: bytes - 1 });
  for await (const chunk of stream) hash.update(chunk as Buffer);
}
