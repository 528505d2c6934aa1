import { describe, expect, it } from 'vitest';
import { CapsuleError } from '../errors.js';
import { parseMetricsRange } from './metrics-range.js';

const now = Date.UTC(2026, 11, 7, 15, 0, 0);
const retention = 30 * 60_000;

describe('parseMetricsRange', () => {
  it('defaults to the whole retention up to now', () => {
    expect(parseMetricsRange({}, now, retention)).toEqual({ startMs: now - retention, endMs: now });
    expect(parseMetricsRange({ start: '', end: '' }, now, retention)).toEqual({ startMs: now - retention, endMs: now });
  });

  it('reads Unix seconds (whole or not, as text or number) and ISO 8601 times', () => {
    expect(parseMetricsRange({ start: String(now / 1000 - 60), end: now / 1000 }, now, retention)).toEqual({
      startMs: now - 60_000,
      endMs: now,
    });
    expect(parseMetricsRange({ start: '1765119600.5' }, now, retention).startMs).toBe(1765119600500);
    expect(parseMetricsRange({ start: '2026-12-07T14:59:00Z', end: '2026-12-07T16:00:00+01:00' }, now, retention)).toEqual({
      startMs: now - 60_000,
      endMs: now,
    });
  });

  it.each([
    [{ start: 'yesterday' }, /start "yesterday" is not a time/],
    [{ end: '-5' }, /end "-5" is not a time/],
    [{ start: '12' }, /not a time between the years 2000 and 3000/],
    [{ start: '2026-13-45T00:00:00Z' }, /not a time/],
    [{ start: '99999999999999999999' }, /not a time/],
    [{ start: String(now / 1000), end: String(now / 1000 - 1) }, /is after end/],
  ])('refuses %j as invalid_argument with a hint', (query, message) => {
    try {
      parseMetricsRange(query, now, retention);
      expect.unreachable();
    } catch (err) {
      expect(err).toBeInstanceOf(CapsuleError);
      expect((err as CapsuleError).code).toBe('invalid_argument');
      expect((err as CapsuleError).message).toMatch(message);
      expect((err as CapsuleError).hint).toMatch(/Unix seconds/);
    }
  });
});
