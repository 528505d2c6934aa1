import { describe, expect, it } from 'vitest';
import { boundaryFromContentType, MultipartError, MultipartReader, parseHeaderParameters } from './multipart.js';

const boundary = 'XyZ-boundary';

async function* chunksOf(data: Buffer, size: number) {
  for (let offset = 0; offset < data.length; offset += size) yield data.subarray(offset, offset + size);
}

async function readAll(data: Buffer, chunkSize: number, limits?: { maxParts: number; maxHeaderBytes: number }) {
  const reader = new MultipartReader(chunksOf(data, chunkSize), boundary, limits);
  const parts: Array<{ name: string | undefined; filename: string | undefined; body: string }> = [];
  for (let part = await reader.nextPart(); part; part = await reader.nextPart()) {
    const pieces: Buffer[] = [];
    if (part.name !== 'skipped') for await (const piece of part.body()) pieces.push(piece);
    parts.push({ name: part.name, filename: part.filename, body: Buffer.concat(pieces).toString('latin1') });
  }
  return parts;
}

const body = Buffer.from(
  'preamble to ignore\r\n' +
    `--${boundary}\r\nContent-Disposition: form-data; name="file"; filename="/home/user/dir/a \\"quoted\\".txt"\r\n\r\n` +
    `first\r\n--${boundary.slice(0, 5)} almost a boundary\r\r\n\r\n` +
    `--${boundary}\r\nContent-Disposition: form-data; name="skipped"\r\n\r\nnot read\r\n` +
    `--${boundary}\r\nContent-Disposition: form-data; name="file"; filename="plain.txt"; filename*=UTF-8''%E2%82%AC.txt\r\n\r\n` +
    `\r\n--${boundary}--\r\nepilogue`,
  'latin1',
);

describe('MultipartReader', () => {
  it('reads the same parts whatever the chunk boundaries', async () => {
    const expected = [
      { name: 'file', filename: '/home/user/dir/a "quoted".txt', body: `first\r\n--${boundary.slice(0, 5)} almost a boundary\r\r\n` },
      { name: 'skipped', filename: undefined, body: '' },
      { name: 'file', filename: '€.txt', body: '' },
    ];
    for (let size = 1; size <= body.length; size += size < 40 ? 1 : 37) {
      expect(await readAll(body, size), `chunks of ${size}`).toEqual(expected);
    }
  });

  it('refuses truncated bodies, missing boundaries, too many parts and huge headers', async () => {
    await expect(readAll(body.subarray(0, 150), 16)).rejects.toBeInstanceOf(MultipartError);
    await expect(readAll(Buffer.from('no boundary here'), 4)).rejects.toBeInstanceOf(MultipartError);
    await expect(readAll(body, 64, { maxParts: 2, maxHeaderBytes: 1024 })).rejects.toThrow(/more than 2 parts/);
    const bigHeader = Buffer.from(`--${boundary}\r\nX-Big: ${'a'.repeat(5000)}\r\n\r\nx\r\n--${boundary}--`);
    await expect(readAll(bigHeader, 512, { maxParts: 10, maxHeaderBytes: 4096 })).rejects.toThrow(/headers are larger/);
  });

  it('takes the boundary from the content type and parses header parameters', () => {
    expect(boundaryFromContentType(`multipart/form-data; boundary="${boundary}"`)).toBe(boundary);
    expect(boundaryFromContentType('multipart/form-data; charset=utf-8; boundary=abc')).toBe('abc');
    expect(() => boundaryFromContentType('multipart/form-data')).toThrow(MultipartError);
    expect(() => boundaryFromContentType(`multipart/form-data; boundary=${'a'.repeat(71)}`)).toThrow(MultipartError);
    expect(() => boundaryFromContentType('application/json; boundary=abc')).toThrow(MultipartError);
    expect(parseHeaderParameters('Form-Data; Name="a;b"; filename=c.txt')).toEqual({
      type: 'form-data',
      params: new Map([
        ['name', 'a;b'],
        ['filename', 'c.txt'],
      ]),
    });
  });
});
