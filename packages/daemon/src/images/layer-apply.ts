// Applies image layers (tar streams) to a staging folder with OCI semantics:
// whiteouts and opaque directories, hard links, symlinks, device nodes and
// FIFOs, modes, owners and xattrs. Paths are resolved inside the root the way a
// chroot would: a symlink met on the way (absolute or relative) is read as
// pointing inside the root and `..` stops at the root, so no entry can ever
// write outside it; an entry whose own name climbs out is refused.
import fs from 'node:fs';
import path from 'node:path';
import { CapsuleError } from '../errors.js';
import { runCommand } from '../launcher.js';
import { readTar, type TarEntry } from './tar-reader.js';

const WHITEOUT_PREFIX = '.wh.';
const OPAQUE_MARKER = '.wh..wh..opq';
const MAX_SYMLINK_HOPS = 40;
const isRoot = process.getuid?.() === 0;

export interface LayerStats {
  entries: number;
  bytes: number;
  /** Extended attributes the host filesystem refused (or setfattr missing). */
  xattrsSkipped: number;
}

export function pathEscapes(entryPath: string): CapsuleError {
  return new CapsuleError('image_invalid', `the layer entry "${entryPath}" points outside the image's root`, {
    hint: 'the image is malformed or hostile; it was not imported',
  });
}

/** The entry's name as components below the root; throws when `..` climbs above it. */
export function entryComponents(entryPath: string): string[] {
  const out: string[] = [];
  for (const part of entryPath.split('/')) {
    if (part === '' || part === '.') continue;
    if (part === '..') {
      if (out.length === 0) throw pathEscapes(entryPath);
      out.pop();
    } else out.push(part);
  }
  return out;
}

export class LayerApplier {
  private readonly xattrs: { file: string; name: string; value: Buffer }[] = [];
  readonly stats: LayerStats = { entries: 0, bytes: 0, xattrsSkipped: 0 };

  constructor(readonly root: string) {}

  /** Applies one uncompressed layer; the stream must be read to its end by this call. */
  async apply(tar: AsyncIterable<Buffer>): Promise<void> {
    const createdHere = new Set<string>();
    for await (const { entry, body } of readTar(tar)) {
      this.stats.entries++;
      const components = entryComponents(entry.path);
      const name = components.at(-1);
      if (name === undefined) {
        if (entry.type === 'directory') this.setAttributes(this.root, entry);
        continue;
      }
      const parent = await this.resolveParent(components.slice(0, -1), entry.path, true);
      if (name === OPAQUE_MARKER) {
        this.clearDirectory(parent, createdHere);
        continue;
      }
      if (name.startsWith(WHITEOUT_PREFIX)) {
        // `.wh..wh.*` other than the opaque marker are aufs bookkeeping: ignored.
        const hidden = name.slice(WHITEOUT_PREFIX.length);
        if (hidden === '' || hidden === '.' || hidden === '..') throw pathEscapes(entry.path);
        if (!name.startsWith(`${WHITEOUT_PREFIX}${WHITEOUT_PREFIX}`)) fs.rmSync(path.join(parent, hidden), { recursive: true, force: true });
        continue;
      }
      const target = path.join(parent, name);
      try {
        await this.writeEntry(target, entry, body);
      } catch (err) {
        // A file system refusal (a hard link to a folder, a name too long…) is the image's fault, not ours.
        const code = (err as NodeJS.ErrnoException).code;
        if (err instanceof CapsuleError || code === undefined || code === 'ENOSPC') throw err;
        throw new CapsuleError('image_invalid', `the layer entry "${entry.path}" cannot be applied: ${code}`, { hint: 'the image is malformed', cause: err });
      }
      createdHere.add(target);
    }
  }

  /** Applies the xattrs collected so far in one `setfattr --restore` (node has no xattr calls). */
  async finish(): Promise<void> {
    if (this.xattrs.length === 0) return;
    const lines: string[] = [];
    for (const { file, name, value } of this.xattrs) {
      if (/[\n\\]/.test(file) || !/^[\x21-\x7e]+$/.test(name)) {
        this.stats.xattrsSkipped++;
        continue;
      }
      lines.push(`# file: ${path.relative(this.root, file)}`, `${name}=0x${value.toString('hex')}`, '');
    }
    this.xattrs.length = 0;
    if (lines.length === 0) return;
    try {
      await runCommand('setfattr', ['-h', '--restore=-'], { cwd: this.root, input: lines.join('\n') });
    } catch {
      this.stats.xattrsSkipped += lines.length / 3;
    }
  }

  /**
   * The real folder below the root for these components, following symlinks
   * inside the root only and creating missing folders when `create` is set.
   */
  private async resolveParent(components: string[], entryPath: string, create: boolean): Promise<string> {
    const real: string[] = [];
    const pending = [...components];
    let hops = 0;
    while (pending.length > 0) {
      const part = pending.shift()!;
      if (part === '..') {
        real.pop(); // stops at the root, as in a chroot
        continue;
      }
      const candidate = path.join(this.root, ...real, part);
      let stat: fs.Stats | undefined;
      try {
        stat = fs.lstatSync(candidate);
      } catch {
        stat = undefined;
      }
      if (stat === undefined) {
        if (!create) throw new CapsuleError('image_invalid', `the layer entry "${entryPath}" refers to a path that does not exist`);
        fs.mkdirSync(candidate, { mode: 0o755 });
        real.push(part);
      } else if (stat.isDirectory()) {
        real.push(part);
      } else if (stat.isSymbolicLink()) {
        if (++hops > MAX_SYMLINK_HOPS) throw new CapsuleError('image_invalid', `too many symlinks under "${entryPath}" in the layer`);
        const link = fs.readlinkSync(candidate);
        if (link.startsWith('/')) real.length = 0;
        pending.unshift(...link.split('/').filter((p) => p !== '' && p !== '.'));
      } else {
        throw new CapsuleError('image_invalid', `the layer entry "${entryPath}" needs "${path.join(...real, part)}" to be a folder, but it is a file`, {
          hint: 'the image is malformed',
        });
      }
    }
    return path.join(this.root, ...real);
  }

  /** Removes what lower layers left in `dir`, keeping entries of the current layer. */
  private clearDirectory(dir: string, createdHere: Set<string>): void {
    for (const child of fs.readdirSync(dir)) {
      const full = path.join(dir, child);
      if (!createdHere.has(full)) fs.rmSync(full, { recursive: true, force: true });
    }
  }

  private async writeEntry(target: string, entry: TarEntry, body: AsyncIterable<Buffer>): Promise<void> {
    const existing = lstatOrUndefined(target);
    if (existing) {
      if (entry.type === 'directory' && existing.isDirectory()) {
        this.setAttributes(target, entry);
        return;
      }
      fs.rmSync(target, { recursive: true, force: true });
    }
    switch (entry.type) {
      case 'directory':
        fs.mkdirSync(target, { mode: 0o700 });
        break;
      case 'file': {
        // O_EXCL: the name was just cleared, so this never opens through a symlink.
        const fd = fs.openSync(target, fs.constants.O_WRONLY | fs.constants.O_CREAT | fs.constants.O_EXCL | fs.constants.O_NOFOLLOW, 0o600);
        try {
          for await (const chunk of body) {
            let offset = 0;
            while (offset < chunk.length) offset += fs.writeSync(fd, chunk, offset);
            this.stats.bytes += chunk.length;
          }
        } finally {
          fs.closeSync(fd);
        }
        break;
      }
      case 'symlink':
        // Kept verbatim: an absolute target means inside the guest's root.
        fs.symlinkSync(entry.linkpath, target);
        break;
      case 'hardlink': {
        const components = entryComponents(entry.linkpath);
        const linkName = components.at(-1);
        if (linkName === undefined) throw pathEscapes(entry.linkpath);
        const source = path.join(await this.resolveParent(components.slice(0, -1), entry.linkpath, false), linkName);
        if (!lstatOrUndefined(source)) {
          throw new CapsuleError('image_invalid', `the hard link "${entry.path}" points to "${entry.linkpath}", which the image does not have`, {
            hint: 'the image is malformed',
          });
        }
        // link(2) never follows a symlink at `source`: the link is to the symlink itself.
        fs.linkSync(source, target);
        return; // a hard link shares the inode's owner and mode
      }
      case 'char':
      case 'block':
      case 'fifo': {
        const args = entry.type === 'fifo' ? [target, 'p'] : [target, entry.type === 'char' ? 'c' : 'b', String(entry.devmajor), String(entry.devminor)];
        await runCommand('mknod', ['-m', '0600', ...args]);
        break;
      }
    }
    this.setAttributes(target, entry);
  }

  private setAttributes(target: string, entry: TarEntry): void {
    if (isRoot) fs.lchownSync(target, entry.uid, entry.gid);
    // chown clears setuid bits, so the mode comes after it; symlinks have no mode of their own.
    if (entry.type !== 'symlink') fs.chmodSync(target, entry.mode);
    fs.lutimesSync(target, entry.mtime, entry.mtime);
    for (const [name, value] of entry.xattrs) this.xattrs.push({ file: target, name, value });
  }
}

function lstatOrUndefined(file: string): fs.Stats | undefined {
  try {
    return fs.lstatSync(file);
  } catch {
    return undefined;
  }
}
