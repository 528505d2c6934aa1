// A template build's context uploaded as a tar stream: how a TCP client sends
// its COPY sources, since over TCP the daemon never reads a path on its host.
// The archive is unpacked into a private folder, bounded in bytes and entries;
// it must never write outside that folder, nor create a link, device or fifo.
import fs from 'node:fs';
import path from 'node:path';
import { CapsuleError } from '../errors.js';
import { readTar } from '../images/tar-reader.js';

export const BUILD_CONTEXT_CONTENT_TYPE = 'application/x-tar';

export interface BuildContextLimits {
  /** Bytes of file content in all. */
  maxBytes: number;
  /** Files and folders in all. */
  maxEntries: number;
}

export const defaultBuildContextLimits: BuildContextLimits = { maxBytes: 512 * 1024 * 1024, maxEntries: 20_000 };

function refused(
  message: string,
  hint = 'send a tar of the build folder, made from inside it (e.g. `tar -C DIR -c .`), with plain files and folders only',
): CapsuleError {
  return new CapsuleError('invalid_argument', message, { hint });
}

/** An entry's path inside the context, or a refusal: absolute paths and `..` segments would escape it. */
function contextPath(name: string): string | undefined {
  if (name.includes('\0') || name.startsWith('/') || name.startsWith('\\'))
    throw refused(`the build context entry "${name.slice(0, 200)}" is an absolute path`);
  const segments = name.split('/').filter((s) => s !== '' && s !== '.');
  if (segments.includes('..')) throw refused(`the build context entry "${name.slice(0, 200)}" points outside the context`);
  return segments.length === 0 ? undefined : segments.join('/');
}

function makeFolder(folder: string, entry: string): void {
  try {
    fs.mkdirSync(folder, { recursive: true, mode: 0o755 });
  } catch (err) {
    throw refused(
      `the build context entry "${entry.slice(0, 200)}" clashes with a file of the same name (${(err as NodeJS.ErrnoException).code ?? 'error'})`,
    );
  }
}

/** The Capsulefile at `name` inside an unpacked context, as text. */
export function readContextCapsulefile(dir: string, name: string): string {
  const relative = contextPath(name);
  const file = relative === undefined ? undefined : path.join(dir, relative);
  const stat = file === undefined ? undefined : fs.lstatSync(file, { throwIfNoEntry: false });
  if (!file || !stat?.isFile())
    throw refused(
      `the build context has no Capsulefile at "${name.slice(0, 200)}"`,
      'put the Capsulefile in the archive, or name it with ?capsulefile=PATH',
    );
  if (stat.size > 262_144) throw refused('the Capsulefile is larger than 256 KiB');
  return fs.readFileSync(file, 'utf8');
}

/**
 * Unpacks `tar` into `dir` (an empty folder the caller owns and removes).
 * Rejects with invalid_argument for anything but plain files and folders
 * inside the context, or past `limits`; a malformed archive is invalid too.
 */
export async function unpackBuildContext(
  tar: AsyncIterable<Buffer>,
  dir: string,
  limits: BuildContextLimits = defaultBuildContextLimits,
): Promise<void> {
  let entries = 0;
  let bytes = 0;
  try {
    for await (const { entry, body } of readTar(tar)) {
      if (++entries > limits.maxEntries) throw refused(`the build context has more than ${limits.maxEntries} entries`);
      const relative = contextPath(entry.path);
      if (entry.type !== 'file' && entry.type !== 'directory') {
        throw refused(`the build context entry "${entry.path.slice(0, 200)}" is a ${entry.type}; links, devices and fifos are refused`);
      }
      if (relative === undefined) continue; // the context folder itself
      const target = path.join(dir, relative);
      // Every folder in `dir` was made here, from names without `..`, and no link is ever made: nothing resolves outside.
      if (entry.type === 'directory') {
        makeFolder(target, relative);
        continue;
      }
      bytes += entry.size;
      if (bytes > limits.maxBytes) throw refused(`the build context is larger than ${Math.round(limits.maxBytes / 1024 / 1024)} MiB`);
      makeFolder(path.dirname(target), relative);
      let fd: number;
      try {
        fd = fs.openSync(
          target,
          fs.constants.O_WRONLY | fs.constants.O_CREAT | fs.constants.O_EXCL | fs.constants.O_NOFOLLOW,
          entry.mode & 0o755,
        );
      } catch (err) {
        throw refused(
          `the build context entry "${relative.slice(0, 200)}" could not be written: ${(err as NodeJS.ErrnoException).code ?? 'error'}`,
          'each path may appear once in the archive',
        );
      }
      try {
        for await (const chunk of body) fs.writeSync(fd, chunk);
      } finally {
        fs.closeSync(fd);
      }
    }
  } catch (err) {
    // The tar reader speaks of images; here a malformed archive is the request's fault.
    if (err instanceof CapsuleError && err.code === 'image_invalid') throw refused(err.message.replace('tar archive', 'build context'));
    throw err;
  }
}
