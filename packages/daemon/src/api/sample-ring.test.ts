import { describe, expect, it } from 'vitest';
import { SampleRing } from './sample-ring.js';

const at = (...times: number[]) => times.map((t) => ({ at: t }));

describe('SampleRing', () => {
  it('keeps samples oldest first and never more than its capacity', () => {
    const ring = new SampleRing<{ at: number }>(3);
    expect(ring.latest()).toBeUndefined();
    expect(ring.range(0, Infinity)).toEqual([]);
    for (const t of [1, 2, 3, 4, 5]) ring.push({ at: t });
    expect(ring.size).toBe(3);
    expect(ring.range(-Infinity, Infinity)).toEqual(at(3, 4, 5));
    expect(ring.latest()).toEqual({ at: 5 });
  });

  it('answers a range inclusively at both ends, across the wrap-around', () => {
    const ring = new SampleRing<{ at: number }>(4);
    for (const t of [10, 20, 30, 40, 50, 60]) ring.push({ at: t });
    expect(ring.range(30, 50)).toEqual(at(30, 40, 50));
    expect(ring.range(35, 45)).toEqual(at(40));
    expect(ring.range(61, 100)).toEqual([]);
    expect(ring.range(0, 29)).toEqual([]);
  });

  it('refuses a sample older than its newest, so the order holds when the clock steps back', () => {
    const ring = new SampleRing<{ at: number }>(4);
    for (const t of [10, 20, 15, 20]) ring.push({ at: t });
    expect(ring.range(-Infinity, Infinity)).toEqual(at(10, 20, 20));
  });

  it('has a capacity of at least one', () => {
    expect(() => new SampleRing(0)).toThrow(/at least 1/);
  });
});
