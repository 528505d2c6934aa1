import { describe, expect, it } from 'vitest';
import { CapsuleError } from './errors.js';
import { parseNdjson } from './ndjson.js';

async function* chunksOf(...parts: (string | Buffer)[]): AsyncGenerator<Uint8Array> {
  for (const part of parts) yield typeof part === 'string' ? Buffer.from(part) : part;
}

async function collect(source: AsyncIterable<Uint8Array>, maxLineBytes?: number): Promise<unknown[]> {
  const values: unknown[] = [];
  for await (const value of parseNdjson(source, maxLineBytes === undefined ? {} : { maxLineBytes })) values.push(value);
  return values;
}

describe('parseNdjson', () => {
  it('yields one value per line however the bytes are chunked, even one byte at a time', async () => {
    const text = '{"a":1}\n{"b":"é ✓"}\r\n\n{"c":[1,2]}\n';
    const bytes = Buffer.from(text);
    const expected = [{ a: 1 }, { b: 'é ✓' }, { c: [1, 2] }];
    expect(await collect(chunksOf(bytes))).toEqual(expected);
    const oneByteChunks = [...bytes].map((byte) => Buffer.from([byte]));
    expect(await collect(chunksOf(...oneByteChunks))).toEqual(expected);
    for (let cut = 1; cut < bytes.length; cut++) {
      expect(await collect(chunksOf(bytes.subarray(0, cut), bytes.subarray(cut)))).toEqual(expected);
    }
  });

  it('parses a last line that has no newline', async () => {
    expect(await collect(chunksOf('{"a":1}\n{"b"', ':2}'))).toEqual([{ a: 1 }, { b: 2 }]);
  });

  it('rejects a line longer than the limit, also when it arrives in small chunks', async () => {
    const long = `{"data":"${'x'.repeat(100)}"}\n`;
    await expect(collect(chunksOf(long), 64)).rejects.toMatchObject({ code: 'protocol_error' });
    const pieces = long.match(/.{1,10}/gs) ?? [];
    await expect(collect(chunksOf(...pieces), 64)).rejects.toThrow(/longer than 64 bytes/);
    expect(await collect(chunksOf(long), 200)).toHaveLength(1);
  });

  it('rejects a line that is not JSON with its line number', async () => {
    const error = await collect(chunksOf('{"a":1}\nnot json\n')).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(CapsuleError);
    expect((error as CapsuleError).message).toMatch(/line 2/);
  });
});
