import { create } from '@bufbuild/protobuf';
import { timestampFromDate } from '@bufbuild/protobuf/wkt';
import { EntryInfoSchema, FileType } from '@capsule/protocol/agent';
import { describe, expect, it } from 'vitest';
import { CapsuleError, InvalidArgumentError } from './errors.js';
import { parseWriteAnswer, toEntryInfo, writeBody } from './files.js';

async function bytesOf(chunks: AsyncIterable<Uint8Array>): Promise<string> {
  const parts: Buffer[] = [];
  for await (const chunk of chunks) parts.push(Buffer.from(chunk));
  return Buffer.concat(parts).toString('utf8');
}

describe('writeBody', () => {
  it('gives the bytes and, when known up front, the length of every kind of data', async () => {
    const text = writeBody('héllo');
    expect(text.length).toBe(6);
    expect(await bytesOf(text.chunks)).toBe('héllo');
    expect(writeBody(new Uint8Array([1, 2, 3])).length).toBe(3);
    expect(writeBody(new ArrayBuffer(5)).length).toBe(5);
    const blob = writeBody(new Blob(['ab', 'cd']));
    expect(blob.length).toBe(4);
    expect(await bytesOf(blob.chunks)).toBe('abcd');
    const web = writeBody(new Blob(['web']).stream());
    expect(web.length).toBeUndefined();
    expect(await bytesOf(web.chunks)).toBe('web');
    const iterable = writeBody(
      (async function* () {
        yield 'a';
        yield Buffer.from('b');
      })(),
    );
    expect(await bytesOf(iterable.chunks)).toBe('ab');
  });

  it('refuses what is not data, and streams that yield something else', async () => {
    expect(() => writeBody(42 as never)).toThrow(InvalidArgumentError);
    const bad = writeBody(
      (async function* () {
        yield 7 as never;
      })(),
    );
    await expect(bytesOf(bad.chunks)).rejects.toBeInstanceOf(InvalidArgumentError);
  });
});

describe('toEntryInfo', () => {
  it("converts the agent's entry", () => {
    const modified = new Date('2026-01-02T03:04:05Z');
    const entry = create(EntryInfoSchema, {
      name: 'a',
      type: FileType.DIRECTORY,
      path: '/a',
      size: 4096n,
      mode: 0o40755,
      permissions: 'drwxr-xr-x',
      owner: 'root',
      group: 'root',
      modifiedTime: timestampFromDate(modified),
    });
    expect(toEntryInfo(entry)).toEqual({
      name: 'a',
      type: 'dir',
      path: '/a',
      size: 4096,
      mode: 0o40755,
      permissions: 'drwxr-xr-x',
      owner: 'root',
      group: 'root',
      modifiedTime: modified,
      isSymlink: false,
      symlinkTarget: undefined,
    });
  });

  it('refuses impossible sizes and a missing entry', () => {
    expect(() => toEntryInfo(create(EntryInfoSchema, { size: -1n }))).toThrow(CapsuleError);
    expect(() => toEntryInfo(create(EntryInfoSchema, { size: 2n ** 60n }))).toThrow(/impossible size/);
    expect(() => toEntryInfo(undefined)).toThrow(/without an entry/);
  });
});

describe('parseWriteAnswer', () => {
  it('reads the first written file and refuses anything else', () => {
    expect(parseWriteAnswer('[{"path":"/a/b","name":"b","type":"file"}]', '/a/b')).toEqual({ path: '/a/b', name: 'b', type: 'file' });
    for (const bad of ['', '[]', '{}', '[{"path":1}]', 'not json']) expect(() => parseWriteAnswer(bad, '/a')).toThrow(CapsuleError);
  });
});
