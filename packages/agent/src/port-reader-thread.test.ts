// The port reader thread against a regular file (no virtio port here): a file
// read returns what is there and then 0, like a port whose host wrote some
// bytes and left. Checks order, read boundaries, wrap-around and backpressure
// of a small ring, EOF records, and errors.
import { appendFileSync, closeSync, mkdtempSync, openSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, describe, expect, it } from 'vitest';
import { PortReaderThread } from './port-reader-thread.js';

const dir = mkdtempSync(join(tmpdir(), 'capsule-port-reader-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function pattern(length: number, seed: number): Buffer {
  const bytes = Buffer.alloc(length);
  for (let i = 0; i < length; i++) bytes[i] = (i * 7 + seed) % 251;
  return bytes;
}

/** Reads batches until `dataBytes` bytes and then an EOF have arrived. */
async function readUntilEof(reader: PortReaderThread, dataBytes: number) {
  const reads: Buffer[] = [];
  let batches = 0;
  let received = 0;
  for (;;) {
    const batch = await reader.readBatch();
    batches += 1;
    expect(batch.length).toBeGreaterThan(0);
    for (const read of batch) {
      reads.push(read);
      received += read.length;
    }
    if (received >= dataBytes && reads.at(-1)!.length === 0) return { reads, batches };
  }
}

describe('PortReaderThread', () => {
  it('returns every read in order, one record per read, through a ring smaller than the data', async () => {
    const path = join(dir, 'data');
    const first = pattern(50_000, 1);
    writeFileSync(path, first);
    const fd = openSync(path, 'r');
    // A ring of three reads: the worker wraps around and waits for the main thread many times.
    const reader = new PortReaderThread({ fd, readBytes: 1000, ringBytes: 3 * 1004, pollIntervalMs: 5 });
    try {
      const { reads } = await readUntilEof(reader, first.length);
      const data = reads.filter((read) => read.length > 0);
      expect(data.every((read) => read.length <= 1000)).toBe(true);
      expect(data.length).toBe(50);
      expect(Buffer.concat(data).equals(first)).toBe(true);
      expect(reads.filter((read) => read.length === 0)).toHaveLength(1);

      // A run of reads of 0 (no host) is reported once, not once per poll.
      await sleep(50);
      const more = pattern(2500, 2);
      appendFileSync(path, more);
      const next = await readUntilEof(reader, more.length);
      expect(next.reads.filter((read) => read.length === 0)).toHaveLength(1);
      expect(Buffer.concat(next.reads).equals(more)).toBe(true);
    } finally {
      await reader.stop();
      closeSync(fd);
    }
  });

  it('hands back reads that stay valid while later reads come in', async () => {
    const path = join(dir, 'kept');
    const content = pattern(20_000, 3);
    writeFileSync(path, content);
    const fd = openSync(path, 'r');
    const reader = new PortReaderThread({ fd, readBytes: 4096, ringBytes: 8192, pollIntervalMs: 5 });
    try {
      const kept: Buffer[] = [];
      for (let received = 0; received < content.length; ) {
        for (const read of await reader.readBatch()) {
          kept.push(read);
          received += read.length;
        }
      }
      expect(Buffer.concat(kept).subarray(0, content.length).equals(content)).toBe(true);
    } finally {
      await reader.stop();
      closeSync(fd);
    }
  });

  it('rejects with the read error, and reports it again after a backoff', async () => {
    const fd = openSync(dir, 'r'); // read(2) of a directory fails with EISDIR
    const reader = new PortReaderThread({ fd, errorBackoffMs: 5 });
    try {
      await expect(reader.readBatch()).rejects.toThrow(/EISDIR/);
      await expect(reader.readBatch()).rejects.toThrow(/EISDIR/);
    } finally {
      await reader.stop();
      closeSync(fd);
    }
  });

  it('refuses a ring that cannot hold one full read', () => {
    expect(() => new PortReaderThread({ fd: 0, readBytes: 4096, ringBytes: 4096 })).toThrow(/ring/);
  });
});
