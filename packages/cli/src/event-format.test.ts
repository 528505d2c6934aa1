import { describe, expect, it } from 'vitest';
import { collectEventFilter, formatEventLine, parseSince } from './event-format.js';

describe('capsule events', () => {
  it('prints a sandbox event with its template, reason and message', () => {
    expect(
      formatEventLine({
        id: '3-0',
        type: 'sandbox.killed',
        at: '2026-01-02T03:04:05.000Z',
        sandboxId: 'sb_a',
        template: 'base',
        state: 'killed',
        reason: 'timeout',
        message: 'ran out',
      }),
    ).toBe('2026-01-02T03:04:05.000Z  sandbox.killed    sb_a (base)  timeout: ran out\n');
    expect(formatEventLine({ id: '3-1', type: 'image.pulled', at: 't', image: 'alpine:3', reason: 'user' })).toBe(
      't  image.pulled      alpine:3  user\n',
    );
  });

  it('takes --since as an event id or a duration ago', () => {
    expect(parseSince('42-7')).toBe('42-7');
    expect(parseSince('10m', Date.parse('2026-01-01T01:00:00Z'))).toBe('2026-01-01T00:50:00.000Z');
    expect(() => parseSince('yesterday')).toThrow(/not a duration/);
  });

  it('adds up repeated --filter values and refuses unknown keys', () => {
    const filters = collectEventFilter('type=sandbox.killed', collectEventFilter('sandbox=sb_a,sb_b'));
    expect(filters).toEqual({ sandboxes: ['sb_a', 'sb_b'], templates: [], types: ['sandbox.killed'] });
    expect(() => collectEventFilter('state=running')).toThrow(/must be sandbox=ID/);
    expect(() => collectEventFilter('sandbox=')).toThrow(/must be sandbox=ID/);
  });
});
