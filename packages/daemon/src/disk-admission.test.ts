import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { assertDiskRoom, freeDiskMiB } from './disk-admission.js';

describe('disk admission', () => {
  it('reads the free disk of a folder, or of its nearest existing parent', () => {
    const free = freeDiskMiB(os.tmpdir());
    expect(free).toBeGreaterThan(0);
    expect(Math.abs(freeDiskMiB(path.join(os.tmpdir(), 'not', 'made', 'yet')) - free)).toBeLessThan(64);
  });

  it('refuses with insufficient_storage, naming the folder and the setting, when free disk is below the reserve', () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'capsule-disk-'));
    try {
      expect(() => assertDiskRoom({ diskReserveMiB: 1 }, 'pull an image', [dir])).not.toThrow();
      const refusal = (() => {
        try {
          assertDiskRoom({ diskReserveMiB: 1024 ** 3 }, 'pull an image', [dir]);
        } catch (err) {
          return err;
        }
        return undefined;
      })();
      expect(refusal).toMatchObject({ code: 'insufficient_storage', status: 507 });
      expect((refusal as Error).message).toMatch(new RegExp(`^cannot pull an image: ${dir} has \\d+ MiB of disk free`));
      expect((refusal as { hint: string }).hint).toMatch(/CAPSULE_DISK_RESERVE_MIB/);
      // 0 turns the check off.
      expect(() => assertDiskRoom({ diskReserveMiB: 0 }, 'pull an image', [dir])).not.toThrow();
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});
