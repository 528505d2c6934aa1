import { describe, expect, it } from 'vitest';
import { formatSseComment, formatSseMessage } from './sse.js';

describe('SSE framing', () => {
  it('writes id, event and data lines ended by a blank line', () => {
    expect(formatSseMessage({ id: '3-1', event: 'overflow', data: '{"a":1}' })).toBe('id: 3-1\nevent: overflow\ndata: {"a":1}\n\n');
    expect(formatSseMessage({ data: 'x' })).toBe('data: x\n\n');
  });

  it('splits data on every kind of line break, so no line ends a message early', () => {
    expect(formatSseMessage({ data: 'a\nb\r\nc\rd' })).toBe('data: a\ndata: b\ndata: c\ndata: d\n\n');
  });

  it('refuses an id or event name that would break its line', () => {
    expect(() => formatSseMessage({ id: '1\n2', data: '' })).toThrow(/line break/);
    expect(() => formatSseMessage({ event: 'a\rb', data: '' })).toThrow(/line break/);
    expect(() => formatSseMessage({ id: '1\u00002', data: '' })).toThrow(/NUL/);
  });

  it('keeps a comment on one line', () => {
    expect(formatSseComment('keep\nalive')).toBe(': keep alive\n\n');
  });
});
