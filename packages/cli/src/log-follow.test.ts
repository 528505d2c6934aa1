import { describe, expect, it } from 'vitest';
import { lastLines, newPart } from './log-follow.js';

describe('following a console log', () => {
  it('keeps the last N lines, a partial last line included', () => {
    expect(lastLines('a\nb\nc\n', 2)).toBe('b\nc\n');
    expect(lastLines('a\nb\nc', 2)).toBe('b\nc');
    expect(lastLines('a\nb\n', 5)).toBe('a\nb\n');
    expect(lastLines('a\nb\n', 0)).toBe('');
  });

  it('prints only what a read adds, also when the log was cut at its start meanwhile', () => {
    expect(newPart('', 'boot\n')).toEqual({ text: 'boot\n', cut: false });
    expect(newPart('boot\nready\n', 'boot\nready\nmore\n')).toEqual({ text: 'more\n', cut: false });
    // The daemon serves the log's tail: its start has gone, its end is what was printed.
    const long = Array.from({ length: 2000 }, (_, i) => `line ${i}\n`).join('');
    expect(newPart(long, `${long.slice(2000)}more\n`)).toEqual({ text: 'more\n', cut: false });
    expect(newPart('boot\nready\n', 'boot\nready\n')).toEqual({ text: '', cut: false });
  });

  it('says when the log moved on further than one read holds', () => {
    expect(newPart('old line\n', 'all new\n')).toEqual({ text: 'all new\n', cut: true });
  });
});
