import { describe, expect, it } from 'vitest';
import { ansiPaint, colorEnabled, noPaint, painterFor, visibleLength } from './terminal-color.js';

describe('terminal colors', () => {
  const terminal = { isTTY: true };
  it('colors a terminal only, and never under NO_COLOR or TERM=dumb', () => {
    expect(colorEnabled(terminal, {})).toBe(true);
    expect(colorEnabled({ isTTY: false }, {})).toBe(false);
    expect(colorEnabled({}, {})).toBe(false);
    expect(colorEnabled(terminal, { NO_COLOR: '1' })).toBe(false);
    expect(colorEnabled(terminal, { NO_COLOR: '' })).toBe(true);
    expect(colorEnabled(terminal, { TERM: 'dumb' })).toBe(false);
    expect(painterFor(terminal, { NO_COLOR: '1' })).toBe(noPaint);
  });

  it('measures painted text by what shows', () => {
    expect(visibleLength(ansiPaint('running', 'green'))).toBe(7);
  });
});
