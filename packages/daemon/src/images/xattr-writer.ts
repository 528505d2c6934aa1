// Sets the extended attributes of layer entries through the O_NOFOLLOW handles
// the layer code opened when it made each entry, never by path: a symlink an
// image creates later cannot redirect them, and only allow-listed namespaces pass.
//
// Node has no fsetxattr, so each batch of handles goes to one `setfattr --restore`
// child as its fds 3, 4, …, named there as /proc/self/fd/N. That magic link is
// the open inode itself, whatever happens to its path since. Chosen over a native
// addon (a new binary dependency) and over a C helper (a compiler at run time):
// setfattr is already required, and one child per batch keeps images with many
// attributes fast.
import fs from 'node:fs';
import { runCommand } from '../launcher.js';
import { LIMITS } from './image-limits.js';

export type XattrTarget = 'file' | 'directory' | 'other';

/**
 * The namespaces an image may set: `user.*` on files and folders, and file
 * capabilities on regular files. Never `trusted.*` (host overlay and admin
 * data), `security.selinux`/`security.ima` or ACLs: they are the host's policy.
 */
export function xattrAllowed(name: string, target: XattrTarget): boolean {
  if (!/^[\x21-\x3c\x3e-\x7e]+$/.test(name) || name.length > LIMITS.xattrNameBytes) return false; // '=' and spaces would break the restore format
  if (name.startsWith('user.') && name.length > 'user.'.length) return target === 'file' || target === 'directory';
  return name === 'security.capability' && target === 'file';
}

/** Handles kept open until their batch is written; a few dozen keep us far from the fd limit. */
const BATCH_HANDLES = 64;

export class XattrWriter {
  /** Attributes refused by the allow-list or by the host's file system. */
  skipped = 0;
  private batch: { fd: number; xattrs: [string, Buffer][] }[] = [];

  /** Takes ownership of `fd` (an O_NOFOLLOW handle of the entry): it is closed once its attributes are written. */
  async add(fd: number, target: XattrTarget, xattrs: Map<string, Buffer>): Promise<void> {
    const allowed = [...xattrs].filter(([name]) => xattrAllowed(name, target));
    this.skipped += xattrs.size - allowed.length;
    if (allowed.length === 0) {
      fs.closeSync(fd);
      return;
    }
    this.batch.push({ fd, xattrs: allowed });
    if (this.batch.length >= BATCH_HANDLES) await this.flush();
  }

  /** Counts the attributes of an entry that has no handle (symlinks, devices): none are kept. */
  refuse(xattrs: Map<string, Buffer>): void {
    this.skipped += xattrs.size;
  }

  async flush(): Promise<void> {
    const batch = this.batch;
    this.batch = [];
    if (batch.length === 0) return;
    const lines: string[] = [];
    batch.forEach(({ xattrs }, i) => {
      lines.push(`# file: /proc/self/fd/${3 + i}`);
      for (const [name, value] of xattrs) lines.push(`${name}=0x${value.toString('hex')}`);
      lines.push('');
    });
    try {
      // Without -h: setxattr follows the /proc magic link to the handle's inode, which is the point.
      await runCommand('setfattr', ['--restore=-'], { input: lines.join('\n'), inheritFds: batch.map((b) => b.fd) });
    } catch {
      // A file system without user xattrs, or no setfattr: the image still works without them.
      this.skipped += batch.reduce((sum, b) => sum + b.xattrs.length, 0);
    } finally {
      for (const { fd } of batch) fs.closeSync(fd);
    }
  }

  /** Closes handles whose attributes will not be written (the layer failed). */
  discard(): void {
    for (const { fd } of this.batch) fs.closeSync(fd);
    this.batch = [];
  }
}
