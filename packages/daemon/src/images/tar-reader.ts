// A streaming reader of tar archives (ustar, pax and GNU long names), enough
// for image layers and `docker save` archives. It hands out one entry at a
// time with its body as a stream of chunks; it never touches the filesystem
// and never trusts a header: sizes, names and checksums are all validated, and
// what it keeps in memory (pax headers, xattrs) or counts (entries) is bounded.
import { CapsuleError } from '../errors.js';
import { LIMITS } from './image-limits.js';

export type TarEntryType = 'file' | 'hardlink' | 'symlink' | 'char' | 'block' | 'directory' | 'fifo';

export interface TarEntry {
  /** As written in the archive (pax `path` or GNU long name applied), not normalised. */
  path: string;
  type: TarEntryType;
  mode: number;
  uid: number;
  gid: number;
  size: number;
  mtime: number;
  linkpath: string;
  devmajor: number;
  devminor: number;
  /** From pax `SCHILY.xattr.NAME` records. */
  xattrs: Map<string, Buffer>;
}

const BLOCK = 512;
/** pax, global pax and GNU long-name headers before one entry; honest tools write at most three. */
const MAX_META_HEADERS_IN_A_ROW = 16;

function malformed(message: string): CapsuleError {
  return new CapsuleError('image_invalid', `malformed tar archive: ${message}`, {
    hint: 'the layer or archive is corrupt or not a tar file',
  });
}

function overLimit(message: string): CapsuleError {
  return new CapsuleError('image_invalid', `the archive ${message}`, {
    hint: 'the image is hostile or broken; Capsule bounds what an image may make it hold',
  });
}

/** Pulls exact byte counts out of an async stream of chunks. */
class ByteSource {
  private chunks: Buffer[] = [];
  private buffered = 0;
  private done = false;
  private readonly iterator: AsyncIterator<Buffer>;

  constructor(stream: AsyncIterable<Buffer>) {
    this.iterator = stream[Symbol.asyncIterator]();
  }

  private async fill(want: number): Promise<boolean> {
    while (this.buffered < want && !this.done) {
      const next = await this.iterator.next();
      if (next.done) this.done = true;
      else if (next.value.length > 0) {
        this.chunks.push(next.value);
        this.buffered += next.value.length;
      }
    }
    return this.buffered >= want;
  }

  /** Exactly `n` bytes, or undefined at a clean end of stream before any byte. */
  async read(n: number): Promise<Buffer | undefined> {
    if (!(await this.fill(n))) {
      if (this.buffered === 0) return undefined;
      throw malformed('unexpected end of archive');
    }
    const all = this.chunks.length === 1 ? this.chunks[0]! : Buffer.concat(this.chunks);
    const out = all.subarray(0, n);
    const rest = all.subarray(n);
    this.chunks = rest.length > 0 ? [rest] : [];
    this.buffered = rest.length;
    return out;
  }

  /** Up to `max` bytes as they come (at least one), for streaming bodies. */
  async readSome(max: number): Promise<Buffer> {
    if (!(await this.fill(1))) throw malformed('unexpected end of archive inside an entry');
    const first = this.chunks[0]!;
    if (first.length <= max) {
      this.chunks.shift();
      this.buffered -= first.length;
      return first;
    }
    this.chunks[0] = first.subarray(max);
    this.buffered -= max;
    return first.subarray(0, max);
  }

  /** Reads whatever follows (the zero blocks after the end marker) so the producer finishes. */
  async drain(): Promise<void> {
    this.chunks = [];
    this.buffered = 0;
    while (!this.done) {
      const next = await this.iterator.next();
      if (next.done) this.done = true;
    }
  }
}

function cString(buf: Buffer, start: number, length: number): string {
  const field = buf.subarray(start, start + length);
  const end = field.indexOf(0);
  return field.subarray(0, end === -1 ? field.length : end).toString('utf8');
}

/** An octal numeric field, or GNU base-256 when the high bit is set. */
function numeric(buf: Buffer, start: number, length: number, what: string): number {
  const field = buf.subarray(start, start + length);
  if ((field[0]! & 0x80) !== 0) {
    let value = 0;
    for (let i = 1; i < field.length; i++) value = value * 256 + field[i]!;
    if (!Number.isSafeInteger(value)) throw malformed(`${what} is out of range`);
    return value;
  }
  const text = cString(buf, start, length).replace(/ +$/, '').trim();
  if (text === '') return 0;
  if (!/^[0-7]+$/.test(text)) throw malformed(`${what} is not an octal number`);
  const value = parseInt(text, 8);
  if (!Number.isSafeInteger(value)) throw malformed(`${what} is out of range`);
  return value;
}

function checksumMatches(header: Buffer): boolean {
  const stored = numeric(header, 148, 8, 'checksum');
  let sum = 0;
  for (let i = 0; i < BLOCK; i++) sum += i >= 148 && i < 156 ? 32 : header[i]!;
  return stored === sum;
}

/** Parses pax extended header records: "LEN key=value\n". */
function parsePax(data: Buffer): Map<string, Buffer> {
  const records = new Map<string, Buffer>();
  let offset = 0;
  while (offset < data.length) {
    const space = data.indexOf(0x20, offset);
    if (space === -1) throw malformed('bad pax record');
    const length = Number(data.subarray(offset, space).toString('ascii'));
    if (!Number.isInteger(length) || length <= 0 || offset + length > data.length) throw malformed('bad pax record length');
    const record = data.subarray(space + 1, offset + length - 1);
    const eq = record.indexOf(0x3d);
    if (eq === -1) throw malformed('bad pax record');
    records.set(record.subarray(0, eq).toString('utf8'), Buffer.from(record.subarray(eq + 1)));
    offset += length;
  }
  return records;
}

/** The `SCHILY.xattr.NAME` records, each within the kernel's own bounds. */
function xattrsOf(attrs: Map<string, Buffer>): Map<string, Buffer> {
  const xattrs = new Map<string, Buffer>();
  for (const [key, value] of attrs) {
    if (!key.startsWith('SCHILY.xattr.')) continue;
    const name = key.slice('SCHILY.xattr.'.length);
    if (Buffer.byteLength(name) > LIMITS.xattrNameBytes)
      throw overLimit(`has an extended attribute name longer than ${LIMITS.xattrNameBytes} bytes`);
    if (value.length > LIMITS.xattrValueBytes)
      throw overLimit(
        `has an extended attribute "${name.slice(0, 64)}" of ${value.length} bytes, more than the ${LIMITS.xattrValueBytes} allowed`,
      );
    xattrs.set(name, value);
  }
  return xattrs;
}

const TYPES: Record<string, TarEntryType> = {
  '0': 'file',
  '\0': 'file',
  '7': 'file',
  '1': 'hardlink',
  '2': 'symlink',
  '3': 'char',
  '4': 'block',
  '5': 'directory',
  '6': 'fifo',
};

export interface TarBody extends AsyncIterable<Buffer> {}

/**
 * Yields each entry with its body. The consumer must read the body to its end
 * or leave it: a body not read is skipped before the next entry is parsed.
 */
export async function* readTar(stream: AsyncIterable<Buffer>): AsyncGenerator<{ entry: TarEntry; body: TarBody }> {
  const source = new ByteSource(stream);
  let pax = new Map<string, Buffer>();
  let globalPax = new Map<string, Buffer>();
  let globalPaxBytes = 0;
  let longName: string | undefined;
  let longLink: string | undefined;
  let entries = 0;
  let metaInARow = 0;

  const readPadded = async (size: number): Promise<Buffer> => {
    if (size > LIMITS.paxHeaderBytes)
      throw overLimit(`has an extended header of ${size} bytes, more than the ${LIMITS.paxHeaderBytes} allowed`);
    const data = (await source.read(Math.ceil(size / BLOCK) * BLOCK)) ?? Buffer.alloc(0);
    if (data.length < size) throw malformed('unexpected end of archive');
    return data.subarray(0, size);
  };

  for (;;) {
    const header = await source.read(BLOCK);
    if (!header) return; // a stream without the end marker is accepted, as GNU tar does
    if (header.every((b) => b === 0)) {
      await source.drain();
      return;
    }
    if (!checksumMatches(header)) throw malformed('header checksum mismatch');
    const typeflag = String.fromCharCode(header[156]!);
    const size = numeric(header, 124, 12, 'size');
    const isMeta = typeflag === 'x' || typeflag === 'g' || typeflag === 'L' || typeflag === 'K';
    if (isMeta && ++metaInARow > MAX_META_HEADERS_IN_A_ROW)
      throw malformed(`more than ${MAX_META_HEADERS_IN_A_ROW} extended headers in a row`);
    if (!isMeta) {
      metaInARow = 0;
      if (++entries > LIMITS.layerEntries) throw overLimit(`has more than ${LIMITS.layerEntries} entries`);
    }

    if (typeflag === 'x' || typeflag === 'g') {
      const records = parsePax(await readPadded(size));
      if (typeflag === 'x') pax = records;
      else {
        // Global headers stay in force for the rest of the archive, so all of them together are bounded.
        globalPaxBytes += size;
        if (globalPaxBytes > LIMITS.globalPaxBytes) throw overLimit(`has global pax headers of more than ${LIMITS.globalPaxBytes} bytes`);
        globalPax = new Map([...globalPax, ...records]);
      }
      continue;
    }
    if (typeflag === 'L' || typeflag === 'K') {
      const value = cString(await readPadded(size), 0, size);
      if (typeflag === 'L') longName = value;
      else longLink = value;
      continue;
    }

    const type = TYPES[typeflag];
    const magic = header.subarray(257, 263).toString('latin1');
    const prefix = magic.startsWith('ustar') ? cString(header, 345, 155) : '';
    const rawName = cString(header, 0, 100);
    const attrs = new Map([...globalPax, ...pax]);
    const paxString = (key: string) => attrs.get(key)?.toString('utf8');
    const paxNumber = (key: string, fallback: number) => {
      const value = paxString(key);
      if (value === undefined) return fallback;
      const n = Number(value);
      if (!Number.isFinite(n) || n < 0) throw malformed(`pax ${key} is not a number`);
      return key === 'mtime' ? n : Math.floor(n);
    };
    const entrySize = paxNumber('size', size);
    const entry: TarEntry = {
      path: paxString('path') ?? longName ?? (prefix ? `${prefix}/${rawName}` : rawName),
      type: type ?? 'file',
      mode: numeric(header, 100, 8, 'mode') & 0o7777,
      uid: paxNumber('uid', numeric(header, 108, 8, 'uid')),
      gid: paxNumber('gid', numeric(header, 116, 8, 'gid')),
      size: type === 'file' || type === undefined ? entrySize : 0,
      mtime: paxNumber('mtime', numeric(header, 136, 12, 'mtime')),
      linkpath: paxString('linkpath') ?? longLink ?? cString(header, 157, 100),
      devmajor: numeric(header, 329, 8, 'devmajor'),
      devminor: numeric(header, 337, 8, 'devminor'),
      xattrs: xattrsOf(attrs),
    };
    pax = new Map();
    longName = undefined;
    longLink = undefined;
    if (entry.path === '') throw malformed('an entry has an empty name');

    // Unknown types (sparse files, volume labels) are skipped with their data.
    const dataBytes = type === undefined || type === 'file' ? entrySize : 0;
    let remaining = dataBytes;
    const padding = (BLOCK - (dataBytes % BLOCK)) % BLOCK;
    const body: TarBody = {
      async *[Symbol.asyncIterator]() {
        while (remaining > 0) {
          const chunk = await source.readSome(Math.min(remaining, 1024 * 1024));
          remaining -= chunk.length;
          yield chunk;
        }
      },
    };
    if (type !== undefined) yield { entry, body };
    while (remaining > 0) remaining -= (await source.readSome(Math.min(remaining, 1024 * 1024))).length;
    if (padding > 0) await source.read(padding);
  }
}
