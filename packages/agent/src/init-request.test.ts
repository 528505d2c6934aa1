import { describe, expect, it } from 'vitest';
import { guestHelperArgs } from './guest-helper.js';
import { InitRequestError, parseInitRequest, parseRfc3339Nanos } from './init-request.js';
import { clockNeedsSetting, MAX_CLOCK_LAG_MS, MAX_CLOCK_LEAD_MS } from './init-route.js';

const parse = (body: unknown) => parseInitRequest(Buffer.from(JSON.stringify(body)));

describe('POST /init request parsing', () => {
  it('reads RFC 3339 timestamps to the nanosecond, with zones', () => {
    expect(parseRfc3339Nanos('1970-01-01T00:00:01Z')).toBe(1_000_000_000n);
    expect(parseRfc3339Nanos('2026-01-02T03:04:05.123456789Z')).toBe(1767323045123456789n);
    expect(parseRfc3339Nanos('2026-01-02T04:04:05.5+01:00')).toBe(1767323045500000000n);
    expect(parseRfc3339Nanos('2026-01-01T22:04:05-05:00')).toBe(1767323045000000000n);
    for (const bad of [
      '2026-01-02 03:04:05Z',
      '2026-13-01T00:00:00Z',
      '2026-04-31T00:00:00Z',
      '1969-12-31T23:59:59Z',
      '2026-01-02T03:04:05',
      '2026-01-02T03:04:05.1234567890Z',
    ]) {
      expect(parseRfc3339Nanos(bad), bad).toBeUndefined();
    }
  });

  it('normalises what it accepts and leaves out what is empty', () => {
    expect(parse({ defaultUser: '', defaultWorkdir: '', entropy: 'AB'.repeat(32), accessToken: null })).toMatchObject({
      defaultUser: undefined,
      defaultWorkdir: undefined,
      entropyHex: 'ab'.repeat(32),
      accessToken: undefined,
    });
    expect(parseInitRequest(Buffer.from('  '))).toMatchObject({ envVars: undefined, timestampNs: undefined });
  });

  it('refuses hostnames outside 1-63 of [a-z0-9-] and entropy outside 32-512 bytes', () => {
    for (const hostname of ['sb-1', 'a', 'a'.repeat(63), '0abc']) expect(parse({ hostname }).hostname).toBe(hostname);
    for (const hostname of ['', 'A', 'sb_1', '-a', 'a-', 'a'.repeat(64), 'a.b']) {
      expect(() => parse({ hostname }), hostname).toThrow(InitRequestError);
    }
    expect(parse({ entropy: '00'.repeat(512) }).entropyHex).toHaveLength(1024);
    expect(() => parse({ entropy: '00'.repeat(513) })).toThrow(InitRequestError);
    expect(() => parse({ entropy: '00'.repeat(31) })).toThrow(InitRequestError);
  });

  it('sets the clock only when the guest lags or leads beyond the tolerances', () => {
    const host = 1_767_323_045_000n * 1_000_000n;
    const hostMs = 1_767_323_045_000;
    expect(clockNeedsSetting(hostMs, host)).toBe(false);
    expect(clockNeedsSetting(hostMs + 200, host)).toBe(false); // request transit
    expect(clockNeedsSetting(hostMs - MAX_CLOCK_LAG_MS - 1, host)).toBe(true);
    expect(clockNeedsSetting(hostMs - 3_600_000, host)).toBe(true); // restored from an hour-old snapshot
    expect(clockNeedsSetting(hostMs + MAX_CLOCK_LEAD_MS + 1, host)).toBe(true);
  });

  it('builds one helper argv for clock and entropy', () => {
    expect(guestHelperArgs({ setClockNs: 1_767_323_045_000_000_123n, reseedHex: 'ab' })).toEqual([
      'settime',
      '1767323045',
      '123',
      'reseed',
      'ab',
    ]);
    expect(guestHelperArgs({ reseedHex: 'ab' })).toEqual(['reseed', 'ab']);
    expect(guestHelperArgs({})).toEqual([]);
  });
});
