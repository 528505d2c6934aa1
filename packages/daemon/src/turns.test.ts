import { describe, expect, it } from 'vitest';
import { Turns } from './turns.js';

const settled = async (promise: Promise<unknown>) => {
  let done = false;
  void promise.then(
    () => (done = true),
    () => (done = true),
  );
  await new Promise((resolve) => setImmediate(resolve));
  return done;
};

describe('Turns', () => {
  it('lets `limit` holders in at once and the next one in line when one leaves', async () => {
    const turns = new Turns(2);
    const never = new AbortController().signal;
    const first = await turns.take(never);
    await turns.take(never);
    const third = turns.take(never);
    const fourth = turns.take(never);
    expect(await settled(third)).toBe(false);
    first();
    first(); // a second release frees nothing more
    expect(await settled(third)).toBe(true);
    expect(await settled(fourth)).toBe(false);
  });

  it('lets a waiter give up without taking a turn from the one behind it', async () => {
    const turns = new Turns(1);
    const release = await turns.take(new AbortController().signal);
    const impatient = new AbortController();
    const givesUp = turns.take(impatient.signal);
    const next = turns.take(new AbortController().signal);
    impatient.abort();
    await expect(givesUp).rejects.toThrow(/gave up/);
    release();
    expect(await settled(next)).toBe(true);
    await expect(turns.take(AbortSignal.abort())).rejects.toThrow(/gave up/);
  });
});
