// Writes tar archives for tests, including entries no honest tool would
// produce (names climbing out of the root, whiteouts, device nodes), so the
// layer code can be tested against exactly the bytes a hostile image holds.
export interface TestTarEntry {
  path: string;
  type?: 'file' | 'directory' | 'symlink' | 'hardlink' | 'char' | 'fifo';
  content?: string | Buffer;
  mode?: number;
  uid?: number;
  gid?: number;
  linkpath?: string;
  devmajor?: number;
  devminor?: number;
  xattrs?: Record<string, string | Buffer>;
  /** Extra pax records, written as they are (for hostile headers). */
  pax?: Record<string, string | Buffer>;
  /** A global pax header ('g') written before this entry instead of an entry. */
  globalPax?: Record<string, string | Buffer>;
}

const TYPEFLAG = { file: '0', hardlink: '1', symlink: '2', char: '3', directory: '5', fifo: '6' } as const;

function octal(value: number, length: number): string {
  return `${value.toString(8).padStart(length - 1, '0')}\0`;
}

function header(name: string, typeflag: string, size: number, e: TestTarEntry): Buffer {
  const h = Buffer.alloc(512);
  h.write(name, 0, 100, 'utf8');
  h.write(octal(e.mode ?? (e.type === 'directory' ? 0o755 : 0o644), 8), 100, 'ascii');
  h.write(octal(e.uid ?? 0, 8), 108, 'ascii');
  h.write(octal(e.gid ?? 0, 8), 116, 'ascii');
  h.write(octal(size, 12), 124, 'ascii');
  h.write(octal(1_700_000_000, 12), 136, 'ascii');
  h.write('        ', 148, 'ascii');
  h.write(typeflag, 156, 'ascii');
  h.write(e.linkpath ?? '', 157, 100, 'utf8');
  h.write('ustar\0', 257, 'ascii');
  h.write('00', 263, 'ascii');
  h.write(octal(e.devmajor ?? 0, 8), 329, 'ascii');
  h.write(octal(e.devminor ?? 0, 8), 337, 'ascii');
  let sum = 0;
  for (const b of h) sum += b;
  h.write(`${sum.toString(8).padStart(6, '0')}\0 `, 148, 'ascii');
  return h;
}

function padded(data: Buffer): Buffer[] {
  const pad = (512 - (data.length % 512)) % 512;
  return [data, Buffer.alloc(pad)];
}

/** One pax record, "LEN key=value\n", LEN counting bytes (values may be binary). */
export function paxRecord(key: string, value: string | Buffer): Buffer {
  const body = Buffer.concat([Buffer.from(` ${key}=`), Buffer.from(value), Buffer.from('\n')]);
  let length = body.length + 1;
  while (String(length).length + body.length !== length) length = String(length).length + body.length;
  return Buffer.concat([Buffer.from(String(length)), body]);
}

/** A pax extended header block ('x' per entry, 'g' global) holding `records`. */
export function paxHeader(records: Buffer[], typeflag: 'x' | 'g' = 'x'): Buffer[] {
  const data = Buffer.concat(records);
  return [header('PaxHeader', typeflag, data.length, {} as TestTarEntry), ...padded(data)];
}

export function makeTar(entries: TestTarEntry[]): Buffer {
  const parts: Buffer[] = [];
  for (const e of entries) {
    if (e.globalPax) {
      parts.push(
        ...paxHeader(
          Object.entries(e.globalPax).map(([k, v]) => paxRecord(k, v)),
          'g',
        ),
      );
      continue;
    }
    const type = e.type ?? 'file';
    const content = type === 'file' ? Buffer.from(e.content ?? '') : Buffer.alloc(0);
    const pax: Buffer[] = [];
    if (Buffer.byteLength(e.path) > 99) pax.push(paxRecord('path', e.path));
    for (const [k, v] of Object.entries(e.xattrs ?? {})) pax.push(paxRecord(`SCHILY.xattr.${k}`, v));
    for (const [k, v] of Object.entries(e.pax ?? {})) pax.push(paxRecord(k, v));
    if (pax.length > 0) parts.push(...paxHeader(pax));
    parts.push(header(e.path.slice(0, 99), TYPEFLAG[type], content.length, e), ...padded(content));
  }
  parts.push(Buffer.alloc(1024));
  return Buffer.concat(parts);
}
