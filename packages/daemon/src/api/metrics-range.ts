// The `start` and `end` of a metrics history query: Unix seconds (what the
// e2b SDK sends) or ISO 8601 times, checked and turned into a window of
// milliseconds. Never reads a clock: the caller says what now is.
import { CapsuleError } from '../errors.js';

const HINT = 'give start and end as Unix seconds (e.g. 1765000000) or ISO 8601 times (e.g. 2026-12-07T15:00:00Z), start not after end';
/** Times outside these years are typos, not queries (and beyond what Date can hold). */
const EARLIEST_MS = Date.UTC(2000, 0, 1);
const LATEST_MS = Date.UTC(3000, 0, 1);

/** The query schema of both history routes (ours and e2b's); `parseMetricsRange` checks the values. */
export const MetricsRangeQuery = {
  type: 'object',
  properties: {
    start: { type: 'string', maxLength: 64, description: 'Unix seconds or ISO 8601; default: the oldest point kept' },
    end: { type: 'string', maxLength: 64, description: 'Unix seconds or ISO 8601; default: now' },
  },
} as const;

export interface TimeWindow {
  startMs: number;
  endMs: number;
}

/** A window from query values; a missing start is the oldest point kept (`nowMs - retentionMs`), a missing end is now. */
export function parseMetricsRange(
  query: { start?: string | number | undefined; end?: string | number | undefined },
  nowMs: number,
  retentionMs: number,
): TimeWindow {
  const startMs = query.start === undefined || query.start === '' ? nowMs - retentionMs : parseQueryTime('start', query.start);
  const endMs = query.end === undefined || query.end === '' ? nowMs : parseQueryTime('end', query.end);
  if (startMs > endMs) {
    throw new CapsuleError(
      'invalid_argument',
      `start (${new Date(startMs).toISOString()}) is after end (${new Date(endMs).toISOString()})`,
      {
        hint: HINT,
      },
    );
  }
  return { startMs, endMs };
}

/** A query's time (`name` says which, for the error): Unix seconds or ISO 8601, in milliseconds. */
export function parseQueryTime(name: string, value: string | number, hint = HINT): number {
  const text = String(value).trim();
  const ms = /^\d{1,12}(\.\d{1,9})?$/.test(text) ? Number(text) * 1000 : /^\d{4}-\d\d-\d\dT/.test(text) ? Date.parse(text) : NaN;
  if (!Number.isFinite(ms) || ms < EARLIEST_MS || ms > LATEST_MS) {
    throw new CapsuleError('invalid_argument', `${name} "${text.slice(0, 64)}" is not a time between the years 2000 and 3000`, { hint });
  }
  return ms;
}
