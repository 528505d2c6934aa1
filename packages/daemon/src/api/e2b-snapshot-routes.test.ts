import { describe, expect, it } from 'vitest';
import { CapsuleError } from '../errors.js';
import { snapshotTemplateName, toE2bSnapshot } from './e2b-snapshot-routes.js';

describe('e2b snapshots', () => {
  it('names a snapshot after the template it is, with no tags', () => {
    expect(toE2bSnapshot('my-snap')).toEqual({ snapshotID: 'my-snap', names: ['my-snap'] });
  });

  it('takes a good name as it is and makes up a fresh one when none is given', () => {
    expect(snapshotTemplateName('my-snap.v2_a')).toBe('my-snap.v2_a');
    const made = [snapshotTemplateName(undefined), snapshotTemplateName(undefined)];
    for (const name of made) expect(name).toMatch(/^snapshot-[0-9a-f]{8}$/);
    expect(made[0]).not.toBe(made[1]);
  });

  it("refuses names that cannot name a Capsule template, with Capsule's code and a hint", () => {
    for (const bad of ['', 'Upper', 'has space', '-lead', 'team/snap', 'snap:v1', 'a'.repeat(64)]) {
      let err: unknown;
      try {
        snapshotTemplateName(bad);
      } catch (e) {
        err = e;
      }
      expect(err, bad).toBeInstanceOf(CapsuleError);
      expect((err as CapsuleError).code).toBe('invalid_argument');
      expect((err as CapsuleError).hint).toMatch(/lower-case letters, digits/);
    }
  });
});
