import { describe, expect, it } from 'vitest';
import { addRatios, resultRecord } from './registry.mjs';

const spec = {
  id: 'warm',
  title: 'warm create',
  unit: 'ms',
  baselines: [
    { id: 'floor', label: 'the floor' },
    { id: 'restore', label: '10 restores', factor: 10 },
  ],
};

describe('resultRecord', () => {
  it("summarizes samples, and keeps a case's title and note", () => {
    const record = resultRecord(spec, { samples: [3, 1, 2, 5, 4], note: 'pool refilled', title: 'warm create, 5' });
    expect(record).toMatchObject({ id: 'warm', title: 'warm create, 5', status: 'ok', n: 5, p50: 3, p95: 5, note: 'pool refilled' });
  });

  it('reports a feature not landed as not available with its reason, never a figure', () => {
    expect(resultRecord(spec, { unavailable: 'no route' })).toMatchObject({ status: 'not available', reason: 'no route' });
    expect(resultRecord(spec, { unavailable: 'no route' }).p50).toBeUndefined();
  });

  it('marks missing, failed or non-numeric outcomes as failed', () => {
    expect(resultRecord(spec, undefined).status).toBe('failed');
    expect(resultRecord(spec, { failed: 'boom' })).toMatchObject({ status: 'failed', reason: 'boom' });
    expect(resultRecord(spec, [1, Number.NaN]).status).toBe('failed');
    expect(resultRecord(spec, []).status).toBe('failed');
  });
});

describe('addRatios', () => {
  it("divides by each measured baseline's p50 (times its factor) and skips baselines that did not run", () => {
    const results = addRatios([
      resultRecord({ id: 'floor', title: 'floor', unit: 'ms' }, [20, 20, 20]),
      resultRecord({ id: 'restore', title: 'restore', unit: 'ms' }, { unavailable: 'off' }),
      resultRecord(spec, [100, 100, 100]),
    ]);
    expect(results[2].ratios).toEqual([{ to: 'floor', label: 'the floor', value: 5 }]);
    expect(results[1].ratios).toBeUndefined();
  });

  it('gives no ratio to a baseline of zero or less', () => {
    const results = addRatios([
      resultRecord({ id: 'floor', title: 'floor', unit: 'MiB' }, [-0.5]),
      resultRecord({ ...spec, baselines: [{ id: 'floor', label: 'the floor' }] }, [100]),
    ]);
    expect(results[1].ratios).toEqual([]);
  });
});
