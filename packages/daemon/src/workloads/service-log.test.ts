import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { lastLines, ServiceLog } from './service-log.js';

const dirs: string[] = [];
afterEach(() => {
  for (const dir of dirs.splice(0)) fs.rmSync(dir, { recursive: true, force: true });
});

function tempLog(maxBytes: number): ServiceLog {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'service-log-'));
  dirs.push(dir);
  return new ServiceLog(path.join(dir, 'web'), maxBytes);
}

describe('a workload service log', () => {
  it('keeps at most the current file and one older past its cap', () => {
    const log = tempLog(100);
    for (let i = 0; i < 50; i++) log.append(`line ${String(i).padStart(2, '0')}\n`);
    const whole = log.read({}).data.toString();
    expect(whole.length).toBeLessThanOrEqual(2 * 100 + 8);
    expect(whole.endsWith('line 49\n')).toBe(true);
    expect(fs.readdirSync(path.dirname(log.file)).sort()).toEqual(['service.log', 'service.log.1']);
  });

  it('answers what follows an offset, and from the start once the file rotated under it', () => {
    const log = tempLog(1000);
    log.append('one\n');
    const first = log.read({});
    log.append('two\n');
    expect(log.read({ offset: first.next }).data.toString()).toBe('two\n');
    expect(log.read({ offset: 10_000 }).data.toString()).toBe('one\ntwo\n');
  });

  it('answers its last lines', () => {
    expect(lastLines(Buffer.from('a\nb\nc\n'), 2).toString()).toBe('b\nc\n');
    expect(lastLines(Buffer.from('a\nb\nc'), 1).toString()).toBe('c');
    expect(lastLines(Buffer.from('a\nb\n'), 5).toString()).toBe('a\nb\n');
    expect(lastLines(Buffer.from('a\n'), 0).toString()).toBe('');
  });
});
