// The tar reader's bounds on what a hostile archive can make it hold or count
// (image-limits.ts); the daemon-level proof, with RSS measured and the
// entry-count bomb (too slow for a unit test), is test/image-bombs.integration.test.ts.
import { Readable } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { makeTar, paxHeader, paxRecord } from '../../test/oci/tar-writer.js';
import { LIMITS } from './image-limits.js';
import { readTar } from './tar-reader.js';

async function readAll(chunks: Iterable<Buffer>): Promise<number> {
  let entries = 0;
  for await (const { body } of readTar(Readable.from(chunks))) {
    for await (const _ of body) void _;
    entries++;
  }
  return entries;
}

describe('readTar bounds', () => {
  it('refuses an xattr value above the kernel ceiling, and keeps one at it', async () => {
    await expect(readAll([makeTar([{ path: 'f', xattrs: { 'user.a': Buffer.alloc(LIMITS.xattrValueBytes + 1) } }])])).rejects.toMatchObject(
      {
        code: 'image_invalid',
        message: expect.stringContaining('extended attribute'),
      },
    );
    await expect(readAll([makeTar([{ path: 'f', xattrs: { 'user.a': Buffer.alloc(LIMITS.xattrValueBytes) } }])])).resolves.toBe(1);
  });

  it('refuses global pax headers that add up past their bound', async () => {
    const pile = Array.from({ length: 4 }, (_, i) => ({
      path: '',
      globalPax: { [`comment.${i}`]: Buffer.alloc(LIMITS.globalPaxBytes / 3) },
    }));
    await expect(readAll([makeTar([...pile, { path: 'f' }])])).rejects.toThrow(/global pax headers/);
  });

  it('refuses one extended header above its bound without reading it', async () => {
    await expect(readAll([makeTar([{ path: 'f', pax: { comment: Buffer.alloc(LIMITS.paxHeaderBytes) } }])])).rejects.toThrow(
      /extended header of/,
    );
  });

  it('refuses endless extended headers with no entry between them', async () => {
    const headers = Array.from({ length: 100 }, () => paxHeader([paxRecord('comment', 'x')])).flat();
    await expect(readAll([...headers, Buffer.alloc(1024)])).rejects.toThrow(/in a row/);
  });
});
