// A VM outlives the shared files it was started from: a paused sandbox (or a
// snapshot template) opens its kit disk and its disk's backing chain again on
// resume, maybe days and several upgrades later, when the shared cache would
// long have pruned them as unused (files.ts pruneSiblings), and forks share
// one frozen copy of their source's disk. So whoever keeps such a VM pins
// those files: a hard link in a folder of its own, which goes when that folder
// goes. Nothing removes a shared file while it has a second link.
import fs from 'node:fs';
import path from 'node:path';
import { holdFile } from './cache-holds.js';

const QCOW2_MAGIC = 0x514649fb; // "QFI\xfb"
/** Deeper chains than ours are a corrupt or hostile image, not a reason to loop. */
const MAX_CHAIN_DEPTH = 16;
const MAX_BACKING_NAME_BYTES = 4096;

/**
 * The backing files below a disk image, nearest first: read from each qcow2
 * header (a raw file ends the chain). Relative names are relative to the image
 * that names them, as QEMU resolves them.
 */
export function backingChain(image: string): string[] {
  const chain: string[] = [];
  let current = image;
  for (let depth = 0; depth < MAX_CHAIN_DEPTH; depth++) {
    const backing = backingFileOf(current);
    if (backing === undefined) break;
    current = path.resolve(path.dirname(current), backing);
    chain.push(current);
  }
  return chain;
}

function backingFileOf(image: string): string | undefined {
  return readQcow2Header(image, (fd, header) => {
    const offset = header.readBigUInt64BE(8);
    const size = header.readUInt32BE(16);
    if (offset === 0n || size === 0 || size > MAX_BACKING_NAME_BYTES) return undefined;
    const name = Buffer.alloc(size);
    if (fs.readSync(fd, name, 0, size, Number(offset)) < size) return undefined;
    return name.toString('utf8');
  });
}

/** The size a qcow2 image gives its guest, from its header; undefined for a raw or unreadable file. */
export function qcow2VirtualSize(image: string): number | undefined {
  return readQcow2Header(image, (_fd, header) => Number(header.readBigUInt64BE(24)));
}

/** Reads the fixed part of a qcow2 header (magic, version, backing file, size) and hands it to `read`; undefined if not qcow2. */
function readQcow2Header<T>(image: string, read: (fd: number, header: Buffer) => T | undefined): T | undefined {
  let fd: number;
  try {
    fd = fs.openSync(image, 'r');
  } catch {
    return undefined;
  }
  try {
    const header = Buffer.alloc(32);
    if (fs.readSync(fd, header, 0, header.length, 0) < header.length || header.readUInt32BE(0) !== QCOW2_MAGIC) return undefined;
    return read(fd, header);
  } finally {
    fs.closeSync(fd);
  }
}

/**
 * Holds (cache-holds.ts) each of `files` that lies inside one of the shared
 * folders `roots` in `pinDir`, named by the folder's name and its path there
 * (two snapshots both have a `disk.qcow2`). Idempotent. Files elsewhere (the
 * sandbox's own) and missing ones (QEMU then says so) are not pinned.
 * Shared files nobody pins any more go with `sweepUnheld`.
 */
export function pinSharedFiles(files: string[], roots: string[], pinDir: string): void {
  for (const file of files) {
    const resolved = path.resolve(file);
    const root = roots.map((r) => path.resolve(r) + path.sep).find((r) => resolved.startsWith(r));
    if (root === undefined || !fs.existsSync(resolved)) continue;
    holdFile(resolved, pinDir, `${path.basename(root)}__${resolved.slice(root.length).replaceAll(path.sep, '__')}`);
  }
}

/** Whether anybody pins `file` (it has a second link), or, for a folder, any file in it. */
export function isPinned(file: string): boolean {
  let stat: fs.Stats;
  try {
    stat = fs.lstatSync(file);
  } catch {
    return false;
  }
  if (stat.isFile()) return stat.nlink > 1;
  if (!stat.isDirectory()) return false;
  return fs.readdirSync(file).some((name) => isPinned(path.join(file, name)));
}
