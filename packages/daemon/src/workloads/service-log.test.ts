import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { lastLines, ServiceLog } from './service-log.js';

const dirs: string[] = [];
afterEach(() => {
  for (const dir of dirs.splice(0)) fs.rmSync(dir, { recursive: true, force: true });
});

function tempLog(maxBytes: number, now?: () => number): ServiceLog {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'service-log-'));
  dirs.push(dir);
  return new ServiceLog(path.join(dir, 'web'), maxBytes, now);
}

describe('a workload service log', () => {
  it('keeps at most the current file and one older past its cap', () => {
    const log = tempLog(100);
    for (let i = 0; i < 50; i++) log.append(`line ${String(i).padStart(2, '0')}\n`);
    const whole = log.read({}).data.toString();
    expect(whole.length).toBeLessThanOrEqual(2 * 100 + 8);
    expect(whole.endsWith('line 49\n')).toBe(true);
    // The logs and their time indexes, nothing more (the newest file's index may not exist yet).
    const files = fs.readdirSync(path.dirname(log.file));
    expect(files).toEqual(expect.arrayContaining(['service.log', 'service.log.1', 'service.log.1.times']));
    for (const file of files) expect(file).toMatch(/^service\.log(\.1)?(\.times)?$/);
  });

  it('answers what follows an offset, and from the start once the file rotated under it', () => {
    const log = tempLog(1000);
    log.append('one\n');
    const first = log.read({});
    log.append('two\n');
    expect(log.read({ offset: first.next }).data.toString()).toBe('two\n');
    expect(log.read({ offset: 10_000 }).data.toString()).toBe('one\ntwo\n');
  });

  it('answers what was written since a time, from the start of the line it began in, across a rotation', () => {
    let clock = 10_000;
    const log = tempLog(40, () => clock);
    log.append('early\n');
    clock += 5000;
    log.append('half a ');
    clock += 500; // Within a second of the last mark: no mark of its own.
    log.append('line\n');
    clock += 5000;
    log.append('late one\n');
    log.append('late two that makes the file rotate\n');
    expect(log.read({ sinceMs: 10_000 }).data.toString()).toBe('early\nhalf a line\nlate one\nlate two that makes the file rotate\n');
    expect(log.read({ sinceMs: 15_000 }).data.toString()).toBe('half a line\nlate one\nlate two that makes the file rotate\n');
    // To the second: a time inside a second answers from that second's first output, so nothing written since is missed.
    expect(log.read({ sinceMs: 15_400 }).data.toString()).toBe('half a line\nlate one\nlate two that makes the file rotate\n');
    expect(log.read({ sinceMs: 16_000 }).data.toString()).toBe('late one\nlate two that makes the file rotate\n');
    expect(log.read({ sinceMs: 20_500, tail: 1 }).data.toString()).toBe('late two that makes the file rotate\n');
    expect(log.read({ sinceMs: 99_000 }).data.toString()).toBe('');
    // The current file's marks count from the end of the older file.
    clock += 5000;
    log.append('after\n');
    expect(log.read({ sinceMs: 25_000 }).data.toString()).toBe('after\n');
    expect(log.read({ sinceMs: 16_000 }).data.toString()).toBe('late one\nlate two that makes the file rotate\nafter\n');
  });

  it('leaves out, with since, output kept before there was a time index', () => {
    const log = tempLog(1000, () => 50_000);
    fs.mkdirSync(path.dirname(log.file), { recursive: true });
    fs.writeFileSync(log.file, 'from an older daemon\n');
    log.append('new\n');
    expect(log.read({}).data.toString()).toBe('from an older daemon\nnew\n');
    expect(log.read({ sinceMs: 0 }).data.toString()).toBe('new\n');
  });

  it('answers its last lines', () => {
    expect(lastLines(Buffer.from('a\nb\nc\n'), 2).toString()).toBe('b\nc\n');
    expect(lastLines(Buffer.from('a\nb\nc'), 1).toString()).toBe('c');
    expect(lastLines(Buffer.from('a\nb\n'), 5).toString()).toBe('a\nb\n');
    expect(lastLines(Buffer.from('a\n'), 0).toString()).toBe('');
  });
});
