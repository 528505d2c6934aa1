import { describe, expect, it } from 'vitest';
import { formatRatio, formatValue, resultsTable, sideBySideTable } from './table.mjs';

describe('formatValue', () => {
  it('rounds milliseconds to what the noise allows and switches to seconds', () => {
    expect(formatValue(1.26, 'ms')).toBe('1.3 ms');
    expect(formatValue(132.4, 'ms')).toBe('132 ms');
    expect(formatValue(4630, 'ms')).toBe('4.63 s');
    expect(formatValue(85_000, 'ms')).toBe('85.0 s');
  });
  it('shows memory and throughput in their units, and nothing for a missing value', () => {
    expect(formatValue(113.4, 'MiB')).toBe('113 MiB');
    expect(formatValue(0.62, 'MiB')).toBe('0.6 MiB');
    expect(formatValue(548.7, 'MB/s')).toBe('549 MB/s');
    expect(formatValue(123.4, 'req/s')).toBe('123 req/s');
    expect(formatValue(4.56, 'req/s')).toBe('4.6 req/s');
    expect(formatValue(undefined, 'ms')).toBe('–');
  });
});

describe('formatRatio', () => {
  it('keeps two significant digits', () => {
    expect(formatRatio(168.2)).toBe('168x');
    expect(formatRatio(4.83)).toBe('4.8x');
    expect(formatRatio(0.0286)).toBe('0.03x');
    expect(formatRatio(Number.POSITIVE_INFINITY)).toBe('–');
    expect(formatRatio(-4834.2)).toBe('–');
    expect(formatRatio(0)).toBe('–');
  });
});

const ok = (id, title, p50, extra = {}) => ({ id, title, unit: 'ms', status: 'ok', n: 20, p50, p95: p50 * 1.5, ...extra });

describe('resultsTable', () => {
  it('prints one line per result with its ratios, and the reason of a result not measured', () => {
    const table = resultsTable([
      ok('floor', 'the floor', 27),
      ok('warm', 'warm | create', 132, {
        ratios: [
          { label: 'the floor', value: 4.89 },
          { label: 'cold boot', value: 0.0287 },
        ],
      }),
      { id: 'files', title: 'upload', unit: 'MB/s', status: 'not available', reason: 'no route yet' },
    ]).split('\n');
    expect(table[0]).toBe('| case | n | p50 | p95 | p50 vs baseline (same run) |');
    expect(table[1]).toBe('| --- | --- | --- | --- | --- |');
    expect(table[2]).toBe('| the floor | 20 | 27 ms | 41 ms |  |');
    expect(table[3]).toBe('| warm \\| create | 20 | 132 ms | 198 ms | 4.9x the floor; 0.03x cold boot |');
    expect(table[4]).toBe('| upload |  | not available: no route yet |  |  |');
  });
});

describe('sideBySideTable', () => {
  it('puts each Capsule figure beside the peer one with their ratio, and says which side did not run', () => {
    const table = sideBySideTable(
      [ok('exec', 'exec', 180), ok('peer-exec', 'podman exec', 120), { id: 'start', status: 'failed', reason: 'x' }],
      [
        { what: 'exec', capsule: 'exec', peer: 'peer-exec' },
        { what: 'start', capsule: 'start', peer: 'peer-start' },
      ],
      'podman',
    ).split('\n');
    expect(table[0]).toBe('| p50 | Capsule | podman | Capsule / podman |');
    expect(table[2]).toBe('| exec | 180 ms | 120 ms | 1.5x |');
    expect(table[3]).toBe('| start | failed | not run | – |');
  });
});
