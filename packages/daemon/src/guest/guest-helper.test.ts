// capsule-guest-helper, built here as prepare builds it, with input that never
// reaches a system call: these tests run on the host and must not change its
// clock or entropy pool.
import { execFileSync, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { guestHelperSource } from '../repo-paths.js';

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'guest-helper-'));
const helper = path.join(dir, 'capsule-guest-helper');
execFileSync('gcc', ['-static', '-O2', '-Wall', '-Werror', '-s', '-o', helper, guestHelperSource]);
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

describe('capsule-guest-helper', () => {
  it('refuses malformed commands with exit status 2', () => {
    for (const args of [
      [],
      ['bogus'],
      ['settime', '1'],
      ['settime', 'x', '0'],
      ['settime', '1', '1000000000'],
      ['reseed', 'abc'],
      ['reseed', 'zz'],
    ]) {
      expect(spawnSync(helper, args).status, args.join(' ')).toBe(2);
    }
  });

  it('answers one line per request in serve mode, and ends with its input', () => {
    const input = `${['reseed zz', '', 'settime 1 x', 'nonsense', `reseed ${'ab'.repeat(600)}`, 'x'.repeat(3000)].join('\n')}\n`;
    const res = spawnSync(helper, ['serve'], { input, encoding: 'utf8', timeout: 5000 });
    expect(res.status).toBe(0);
    expect(res.stdout.trim().split('\n')).toEqual([
      'error: reseed failed (code 2)',
      'error: settime failed (code 2)',
      'error: nonsense failed (code 2)',
      'error: reseed failed (code 2)',
      'error: line too long',
    ]);
  });

  const id = '0123456789abcdef0123456789abcdef';

  /** A framed upload: each chunk as a 4-byte big-endian length and its bytes, then (if `end`) the empty frame. */
  const frames = (chunks: Buffer[], end = true) =>
    Buffer.concat([
      ...chunks.flatMap((chunk) => [
        Buffer.from([chunk.length >>> 24, (chunk.length >>> 16) & 0xff, (chunk.length >>> 8) & 0xff, chunk.length & 0xff]),
        chunk,
      ]),
      ...(end ? [Buffer.alloc(4)] : []),
    ]);

  it("bulk-recv skips stale bytes up to its transfer's header, then writes the frames' bytes up to the empty frame", () => {
    const stale = Buffer.concat([Buffer.from(`CAPSBULK${'f'.repeat(32)}`), Buffer.alloc(5000, 7), Buffer.from('CAPSBU')]);
    const body = Buffer.alloc(3 * 1024 * 1024 + 17);
    for (let i = 0; i < body.length; i++) body[i] = (i * 31) & 0xff;
    // Frames of uneven sizes, one larger than the helper's buffer.
    const chunks = [body.subarray(0, 1), body.subarray(1, 70_000), body.subarray(70_000, 2_000_000), body.subarray(2_000_000)];
    const input = Buffer.concat([stale, Buffer.from(`CAPSBULK${id}`), frames(chunks), Buffer.from('past the end')]);
    const res = spawnSync(helper, ['bulk-recv', id], { input, timeout: 10_000, maxBuffer: 8 * 1024 * 1024 });
    expect(res.status, res.stderr.toString()).toBe(0);
    expect(res.stdout.equals(body)).toBe(true);
  });

  it('bulk-recv cuts out many lengths that fall anywhere in its reads, split across them too', () => {
    // Frames of 1 to ~5000 bytes: several lengths within one read of the pipe, some of them split by a read's end.
    const chunks: Buffer[] = [];
    let seed = 7;
    for (let i = 0; i < 3000; i++) {
      seed = (seed * 1103515245 + 12345) & 0x7fffffff;
      const chunk = Buffer.alloc(1 + (seed % 5000));
      for (let j = 0; j < chunk.length; j++) chunk[j] = (i + j * 7) & 0xff;
      chunks.push(chunk);
    }
    const res = spawnSync(helper, ['bulk-recv', id], {
      input: Buffer.concat([Buffer.from(`CAPSBULK${id}`), frames(chunks)]),
      timeout: 10_000,
      maxBuffer: 32 * 1024 * 1024,
    });
    expect(res.status, res.stderr.toString()).toBe(0);
    expect(res.stdout.equals(Buffer.concat(chunks))).toBe(true);
  });

  it('bulk-recv fails a transfer that ends without its empty frame, or sends an oversized frame', () => {
    const cut = spawnSync(helper, ['bulk-recv', id], {
      input: Buffer.concat([Buffer.from(`CAPSBULK${id}`), frames([Buffer.alloc(1000, 1)], false)]),
      timeout: 1500,
    });
    // Its stdin (the port) ends: a read of 0 means "no host yet", so it waits (here until killed) and never succeeds.
    expect(cut.status).not.toBe(0);
    expect(cut.stdout.length).toBe(0);
    const huge = spawnSync(helper, ['bulk-recv', id], {
      input: Buffer.concat([Buffer.from(`CAPSBULK${id}`), Buffer.from([0x7f, 0, 0, 0])]),
      timeout: 10_000,
    });
    expect(huge.status).toBe(3);
    expect(huge.stdout.length).toBe(0);
  });

  it('bulk-send writes its header and exactly the announced bytes, and fails on a short file', () => {
    const file = path.join(dir, 'send.bin');
    fs.writeFileSync(file, 'hello world');
    const fd = fs.openSync(file, 'r');
    try {
      const res = spawnSync(helper, ['bulk-send', id, '5'], { stdio: [fd, 'pipe', 'pipe'], timeout: 5000 });
      expect(res.status).toBe(0);
      expect(res.stdout.toString()).toBe(`CAPSBULK${id}hello`);
    } finally {
      fs.closeSync(fd);
    }
    const short = fs.openSync(file, 'r');
    try {
      expect(spawnSync(helper, ['bulk-send', id, '100'], { stdio: [short, 'pipe', 'pipe'], timeout: 5000 }).status).toBe(4);
    } finally {
      fs.closeSync(short);
    }
  });

  it('refuses malformed bulk arguments with exit status 2', () => {
    for (const args of [
      ['bulk-recv', 'abc'],
      ['bulk-recv', id, '1'],
      ['bulk-send', id, 'x'],
      ['bulk-send', id.toUpperCase().replace(/[A-F]/g, 'g'), '1'],
      ['bulk-send', id],
    ]) {
      expect(spawnSync(helper, args, { input: '', timeout: 5000 }).status, args.join(' ')).toBe(2);
    }
  });
});
