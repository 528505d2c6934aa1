// Which uploads the bulk port takes, and how a multipart body's file is taken
// out of it (with the rest of the form checked) or the body given back whole.
import type { IncomingMessage } from 'node:http';
import { Readable } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { CapsuleError } from '../errors.js';
import { bulkUploadKind, splitUpload } from './bulk-files.js';

const MiB = 1024 * 1024;
const boundary = 'xYz-boundary';
const multipart = `multipart/form-data; boundary=${boundary}`;

describe('bulkUploadKind', () => {
  const large = String(4 * MiB);
  it.each([
    ['a large raw body', 'POST', '/files?path=/a', { 'content-type': 'application/octet-stream', 'content-length': large }, 'raw'],
    [
      'a raw body of unknown length',
      'POST',
      '/files?path=/a',
      { 'content-type': 'application/octet-stream', 'transfer-encoding': 'chunked' },
      'raw',
    ],
    ['a large form', 'POST', '/files?path=/a&username=user', { 'content-type': multipart, 'content-length': large }, 'multipart'],
    ['a small body', 'POST', '/files?path=/a', { 'content-type': 'application/octet-stream', 'content-length': '1000' }, undefined],
    ['no path in the query', 'POST', '/files', { 'content-type': multipart, 'content-length': large }, undefined],
    [
      'a compressed body',
      'POST',
      '/files?path=/a',
      { 'content-type': 'application/octet-stream', 'content-length': large, 'content-encoding': 'gzip' },
      undefined,
    ],
    ['a form without a boundary', 'POST', '/files?path=/a', { 'content-type': 'multipart/form-data', 'content-length': large }, undefined],
    ['another content type', 'POST', '/files?path=/a', { 'content-type': 'text/plain', 'content-length': large }, undefined],
    ['no body', 'POST', '/files?path=/a', { 'content-type': 'application/octet-stream' }, undefined],
    ['a GET', 'GET', '/files?path=/a', {}, undefined],
    [
      'another path',
      'POST',
      '/filesystem.Filesystem/Stat?path=/a',
      { 'content-type': 'application/octet-stream', 'content-length': large },
      undefined,
    ],
  ])('%s', (_what, method, agentPath, headers, kind) => {
    expect(bulkUploadKind(method, agentPath, headers)).toBe(kind);
  });
});

/** A request whose body arrives in `pieces` (split anywhere, as a socket would). */
function request(body: Buffer, pieces = 7): IncomingMessage {
  const size = Math.ceil(body.length / pieces);
  const chunks = Array.from({ length: pieces }, (_, i) => body.subarray(i * size, (i + 1) * size)).filter((chunk) => chunk.length > 0);
  return Object.assign(Readable.from(chunks), { headers: { 'content-type': multipart } }) as unknown as IncomingMessage;
}

function form(parts: Array<{ name: string; value: Buffer | string }>, ending = '--\r\n'): Buffer {
  return Buffer.concat([
    ...parts.flatMap(({ name, value }) => [
      Buffer.from(
        `--${boundary}\r\nContent-Disposition: form-data; name="${name}"${typeof value === 'string' ? '' : '; filename="f"'}\r\n\r\n`,
      ),
      Buffer.from(value),
      Buffer.from('\r\n'),
    ]),
    Buffer.from(`--${boundary}${ending}`),
  ]);
}

async function collect(source: AsyncIterable<Buffer>): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of source) chunks.push(chunk);
  return Buffer.concat(chunks);
}

describe('splitUpload', () => {
  // Bytes that look like the start of a delimiter inside the file must stay file bytes.
  const file = Buffer.concat([Buffer.alloc(100_000, 1), Buffer.from(`\r\n--${boundary.slice(0, 5)}`), Buffer.alloc(100_000, 2)]);

  it("gives a form's first-part file, and skips fields after it", async () => {
    const split = await splitUpload(
      request(
        form([
          { name: 'file', value: file },
          { name: 'note', value: 'hi' },
        ]),
      ),
      'multipart',
    );
    expect('file' in split).toBe(true);
    if ('file' in split) expect((await collect(split.file)).equals(file)).toBe(true);
  });

  it("refuses a second file and a form cut off, as invalid_argument, after the first file's bytes", async () => {
    for (const body of [
      form([
        { name: 'file', value: file },
        { name: 'file', value: 'again' },
      ]),
      form([{ name: 'file', value: file }], ''),
    ]) {
      const split = await splitUpload(request(body), 'multipart');
      if (!('file' in split)) throw new Error('expected the file to be taken');
      const error = await collect(split.file).catch((e: unknown) => e);
      expect(error).toBeInstanceOf(CapsuleError);
      expect((error as CapsuleError).code).toBe('invalid_argument');
      expect((error as CapsuleError).message).toMatch(/^error reading form: /);
    }
  });

  it('gives back the whole body, byte for byte, when the file is not the first part or the head is not a form', async () => {
    for (const body of [
      form([
        { name: 'note', value: 'first' },
        { name: 'file', value: file },
      ]),
      Buffer.concat([Buffer.alloc(200 * 1024, 0x61), form([{ name: 'file', value: file }])]),
      Buffer.from('not a form at all'),
    ]) {
      const split = await splitUpload(request(body), 'multipart');
      expect('relay' in split).toBe(true);
      if ('relay' in split) expect((await collect(split.relay)).equals(body)).toBe(true);
    }
  });

  it('passes a raw body through whole', async () => {
    const split = await splitUpload(request(file), 'raw');
    if (!('file' in split)) throw new Error('expected a raw body to be taken');
    expect((await collect(split.file)).equals(file)).toBe(true);
  });
});
