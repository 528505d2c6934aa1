import { describe, expect, it } from 'vitest';
import type { RecordedEvent } from '../store/event-feed.js';
import { advance, eventType, formatCursor, matches, parseCursor, parseFilter, seen } from './event-view.js';

const created: RecordedEvent = {
  kind: 'sandbox',
  id: 5,
  sandboxId: 'sb_a',
  template: 'base',
  state: 'starting',
  reason: 'user',
  message: null,
  at: 't',
};
const killed: RecordedEvent = { ...created, id: 9, state: 'killed', reason: 'timeout' };
const built: RecordedEvent = {
  kind: 'resource',
  id: 2,
  type: 'template.built',
  template: 'web',
  image: null,
  workload: null,
  reason: 'user',
  message: null,
  at: 't',
};

describe('event cursors', () => {
  it('round-trip and refuse anything else', () => {
    expect(parseCursor(formatCursor({ sandbox: 12, resource: 3 }))).toEqual({ sandbox: 12, resource: 3 });
    for (const bad of ['12', '1-2-3', '-1-2', 'a-b', '']) expect(parseCursor(bad)).toBeUndefined();
  });

  it('advance per history, so an event of one never hides an unseen one of the other', () => {
    const cursor = advance({ sandbox: 0, resource: 0 }, killed);
    expect(cursor).toEqual({ sandbox: 9, resource: 0 });
    expect(seen(cursor, created)).toBe(true);
    expect(seen(cursor, built)).toBe(false);
  });
});

describe('event filters', () => {
  it('name the first row of a sandbox its creation', () => {
    expect(eventType(created)).toBe('sandbox.created');
    expect(eventType(killed)).toBe('sandbox.killed');
  });

  it('match types, families, sandboxes and templates', () => {
    expect(matches(parseFilter({ type: 'sandbox.killed' }), killed)).toBe(true);
    expect(matches(parseFilter({ type: 'sandbox.killed' }), created)).toBe(false);
    expect(matches(parseFilter({ type: 'template' }), built)).toBe(true);
    expect(matches(parseFilter({ sandbox: 'sb_b,sb_a' }), killed)).toBe(true);
    expect(matches(parseFilter({ sandbox: 'sb_a' }), built)).toBe(false);
    expect(matches(parseFilter({ template: 'web' }), built)).toBe(true);
    expect(matches(parseFilter({ template: 'web' }), killed)).toBe(false);
  });

  it('refuse an unknown type rather than stream nothing', () => {
    expect(() => parseFilter({ type: 'sandbox.kiled' })).toThrow(/unknown event type/);
  });
});
