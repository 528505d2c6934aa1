// Writes an initramfs archive in the "newc" cpio format the kernel unpacks.
// Written here rather than by the cpio tool so the archive is byte-for-byte
// reproducible from its inputs (sorted names, fixed times and owners).

export type CpioEntry =
  | { kind: 'dir'; path: string; mode: number }
  | { kind: 'file'; path: string; mode: number; data: Buffer }
  | { kind: 'symlink'; path: string; target: string };

const S_IFDIR = 0o040000;
const S_IFREG = 0o100000;
const S_IFLNK = 0o120000;

function hex8(n: number): string {
  return n.toString(16).padStart(8, '0');
}

function pad4(length: number): Buffer {
  return Buffer.alloc((4 - (length % 4)) % 4);
}

function header(ino: number, mode: number, nlink: number, size: number, nameSize: number): string {
  // magic, ino, mode, uid, gid, nlink, mtime, filesize, devmajor, devminor, rdevmajor, rdevminor, namesize, check
  return [
    '070701',
    hex8(ino),
    hex8(mode),
    hex8(0),
    hex8(0),
    hex8(nlink),
    hex8(0),
    hex8(size),
    hex8(0),
    hex8(0),
    hex8(0),
    hex8(0),
    hex8(nameSize),
    hex8(0),
  ].join('');
}

function record(ino: number, name: string, mode: number, nlink: number, data: Buffer): Buffer[] {
  const nameBytes = Buffer.from(`${name}\0`);
  const head = Buffer.from(header(ino, mode, nlink, data.length, nameBytes.length));
  return [head, nameBytes, pad4(head.length + nameBytes.length), data, pad4(data.length)];
}

export function writeCpio(entries: CpioEntry[]): Buffer {
  const sorted = [...entries].sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0));
  const parts: Buffer[] = [];
  let ino = 1;
  for (const entry of sorted) {
    const name = entry.path.replace(/^\/+/, '');
    if (name === '') throw new Error('cpio entry with an empty path');
    switch (entry.kind) {
      case 'dir':
        parts.push(...record(ino++, name, S_IFDIR | entry.mode, 2, Buffer.alloc(0)));
        break;
      case 'file':
        parts.push(...record(ino++, name, S_IFREG | entry.mode, 1, entry.data));
        break;
      case 'symlink':
        parts.push(...record(ino++, name, S_IFLNK | 0o777, 1, Buffer.from(entry.target)));
        break;
    }
  }
  parts.push(...record(0, 'TRAILER!!!', 0, 1, Buffer.alloc(0)));
  return Buffer.concat(parts);
}
