import { PassThrough } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { ByteProgress } from './byte-progress.js';

async function* chunks(...sizes: number[]): AsyncGenerator<Uint8Array> {
  for (const size of sizes) yield new Uint8Array(size);
}

describe('ByteProgress', () => {
  it('counts the bytes passing through, unchanged, against the total when there is one', async () => {
    const progress = new ByteProgress('Exporting data', 4096, { enabled: false });
    const seen: number[] = [];
    for await (const chunk of progress.count(chunks(1024, 1024))) seen.push(chunk.length);
    expect(seen).toEqual([1024, 1024]);
    expect(progress.line()).toBe('Exporting data 2.0 KiB / 4.0 KiB');
    expect(new ByteProgress('Importing data', undefined, { enabled: false }).line()).toBe('Importing data 0 B');
  });

  it('draws plain lines off a terminal, and nothing when disabled', async () => {
    const written: string[] = [];
    const stream = new PassThrough() as unknown as NodeJS.WriteStream;
    stream.write = ((text: string) => written.push(text) > 0) as NodeJS.WriteStream['write'];
    const progress = new ByteProgress('Importing data', undefined, { enabled: true, stream });
    for await (const _ of progress.count(chunks(512))) {
      // drained
    }
    progress.finish();
    expect(written).toEqual(['Importing data 512 B\n', 'Importing data 512 B\n']);
    const silent = new ByteProgress('x', 1, { enabled: false, stream });
    silent.finish();
    expect(written).toHaveLength(2);
  });
});
