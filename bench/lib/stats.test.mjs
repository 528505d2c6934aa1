import { describe, expect, it } from 'vitest';
import { percentile, summarize } from './stats.mjs';

describe('percentile', () => {
  it('takes the nearest rank, always a measured value', () => {
    const values = [5, 1, 4, 2, 3];
    expect(percentile(values, 50)).toBe(3);
    expect(percentile(values, 95)).toBe(5);
    expect(percentile(values, 0)).toBe(1);
    expect(percentile(values, 100)).toBe(5);
    expect(percentile([10, 20, 30, 40], 50)).toBe(20);
  });

  it('of 20 samples, p95 is the 19th smallest, not the maximum', () => {
    const values = Array.from({ length: 20 }, (_, i) => 20 - i);
    expect(percentile(values, 95)).toBe(19);
  });

  it('does not reorder its input', () => {
    const values = [3, 1, 2];
    percentile(values, 50);
    expect(values).toEqual([3, 1, 2]);
  });

  it('refuses no values and a p outside 0..100', () => {
    expect(() => percentile([], 50)).toThrow(/no values/);
    expect(() => percentile([1], 101)).toThrow(/outside/);
    expect(() => percentile([1], Number.NaN)).toThrow(/outside/);
  });
});

describe('summarize', () => {
  it('gives p95 only from 5 samples on', () => {
    expect(summarize([1, 2, 3, 4]).p95).toBeUndefined();
    expect(summarize([1, 2, 3, 4, 5])).toEqual({ n: 5, p50: 3, p95: 5, min: 1, max: 5, mean: 3 });
  });
});
