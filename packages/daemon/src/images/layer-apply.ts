// Applies image layers (tar streams) to a staging folder with OCI semantics:
// whiteouts and opaque directories, hard links, symlinks, device nodes and
// FIFOs, modes, owners and xattrs. Paths are resolved inside the root the way a
// chroot would: a symlink met on the way (absolute or relative) is read as
// pointing inside the root and `..` stops at the root, so no entry can ever
// write outside it; an entry whose own name climbs out is refused. Owners,
// modes, times and xattrs are set per entry through the O_NOFOLLOW handle it
// was made with (xattr-writer.ts), never by path once later entries may have
// turned a folder on that path into a symlink.
import fs from 'node:fs';
import path from 'node:path';
import { CapsuleError } from '../errors.js';
import { runCommand } from '../launcher.js';
import { readTar, type TarEntry } from './tar-reader.js';
import { XattrWriter } from './xattr-writer.js';

const WHITEOUT_PREFIX = '.wh.';
const OPAQUE_MARKER = '.wh..wh..opq';
const MAX_SYMLINK_HOPS = 40;
const isRoot = process.getuid?.() === 0;
/** A folder opened as a handle, never through a symlink in its last component. */
const OPEN_FOLDER = fs.constants.O_RDONLY | fs.constants.O_DIRECTORY | fs.constants.O_NOFOLLOW;

export interface LayerStats {
  entries: number;
  bytes: number;
  /** Extended attributes not kept: outside the allow-list, refused by the host's file system, or setfattr missing. */
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
  private readonly xattrs = new XattrWriter();
  readonly stats: LayerStats = { entries: 0, bytes: 0, xattrsSkipped: 0 };

  constructor(readonly root: string) {}

  /** Applies one uncompressed layer, its metadata included; the stream must be read to its end by this call. */
  async apply(tar: AsyncIterable<Buffer>): Promise<void> {
    try {
      await this.applyEntries(tar);
      await this.xattrs.flush();
    } finally {
      this.xattrs.discard();
      this.stats.xattrsSkipped = this.xattrs.skipped;
    }
  }

  private async applyEntries(tar: AsyncIterable<Buffer>): Promise<void> {
    const createdHere = new Set<string>();
    for await (const { entry, body } of readTar(tar)) {
      this.stats.entries++;
      const components = entryComponents(entry.path);
      const name = components.at(-1);
      if (name === undefined) {
        if (entry.type === 'directory') await this.setAttributesThrough(fs.openSync(this.root, OPEN_FOLDER), entry);
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
        if (!name.startsWith(`${WHITEOUT_PREFIX}${WHITEOUT_PREFIX}`))
          fs.rmSync(path.join(parent, hidden), { recursive: true, force: true });
        continue;
      }
      const target = path.join(parent, name);
      try {
        await this.writeEntry(target, entry, body);
      } catch (err) {
        // A file system refusal (a hard link to a folder, a name too long…) is the image's fault, not ours.
        const code = (err as NodeJS.ErrnoException).code;
        if (err instanceof CapsuleError || code === undefined || code === 'ENOSPC') throw err;
        throw new CapsuleError('image_invalid', `the layer entry "${entry.path}" cannot be applied: ${code}`, {
          hint: 'the image is malformed',
          cause: err,
        });
      }
      createdHere.add(target);
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
        throw new CapsuleError(
          'image_invalid',
          `the layer entry "${entryPath}" needs "${path.join(...real, part)}" to be a folder, but it is a file`,
          {
            hint: 'the image is malformed',
          },
        );
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
        await this.setAttributesThrough(fs.openSync(target, OPEN_FOLDER), entry);
        return;
      }
      fs.rmSync(target, { recursive: true, force: true });
    }
    switch (entry.type) {
      case 'directory':
        fs.mkdirSync(target, { mode: 0o700 });
        await this.setAttributesThrough(fs.openSync(target, OPEN_FOLDER), entry);
        return;
      case 'file': {
        // O_EXCL: the name was just cleared, so this never opens through a symlink.
        const fd = fs.openSync(target, fs.constants.O_WRONLY | fs.constants.O_CREAT | fs.constants.O_EXCL | fs.constants.O_NOFOLLOW, 0o600);
        try {
          for await (const chunk of body) {
            let offset = 0;
            while (offset < chunk.length) offset += fs.writeSync(fd, chunk, offset);
            this.stats.bytes += chunk.length;
          }
        } catch (err) {
          fs.closeSync(fd);
          throw err;
        }
        await this.setAttributesThrough(fd, entry);
        return;
      }
      case 'symlink':
        // Kept verbatim: an absolute target means inside the guest's root.
        fs.symlinkSync(entry.linkpath, target);
        if (isRoot) fs.lchownSync(target, entry.uid, entry.gid);
        fs.lutimesSync(target, entry.mtime, entry.mtime);
        this.xattrs.refuse(entry.xattrs);
        return;
      case 'hardlink': {
        const components = entryComponents(entry.linkpath);
        const linkName = components.at(-1);
        if (linkName === undefined) throw pathEscapes(entry.linkpath);
        const source = path.join(await this.resolveParent(components.slice(0, -1), entry.linkpath, false), linkName);
        if (!lstatOrUndefined(source)) {
          throw new CapsuleError(
            'image_invalid',
            `the hard link "${entry.path}" points to "${entry.linkpath}", which the image does not have`,
            {
              hint: 'the image is malformed',
            },
          );
        }
        // link(2) never follows a symlink at `source`: the link is to the symlink itself.
        fs.linkSync(source, target);
        return; // a hard link shares the inode's owner and mode
      }
      case 'char':
      case 'block':
      case 'fifo': {
        const args =
          entry.type === 'fifo'
            ? [target, 'p']
            : [target, entry.type === 'char' ? 'c' : 'b', String(entry.devmajor), String(entry.devminor)];
        await runCommand('mknod', ['-m', '0600', ...args]);
        // Never opened: opening a device node opens the host's device. The node was
        // made just now under a resolved folder, so its path names it and nothing else.
        if (isRoot) fs.lchownSync(target, entry.uid, entry.gid);
        fs.chmodSync(target, entry.mode);
        fs.lutimesSync(target, entry.mtime, entry.mtime);
        this.xattrs.refuse(entry.xattrs);
        return;
      }
    }
  }

  /** Owner, mode, times and xattrs of a file or folder, through its handle; takes ownership of `fd`. */
  private async setAttributesThrough(fd: number, entry: TarEntry): Promise<void> {
    try {
      if (isRoot) fs.fchownSync(fd, entry.uid, entry.gid);
      // chown clears setuid bits and capabilities, so the mode comes after it and the xattrs last.
      fs.fchmodSync(fd, entry.mode);
      fs.futimesSync(fd, entry.mtime, entry.mtime);
    } catch (err) {
      fs.closeSync(fd);
      throw err;
    }
    await this.xattrs.add(fd, entry.type === 'directory' ? 'directory' : 'file', entry.xattrs);
  }
}

function lstatOrUndefined(file: string): fs.Stats | undefined {
  try {
    return fs.lstatSync(file);
  } catch {
    return undefined;
  }
}
