import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { BuildStepCache } from './build-step-cache.js';

/** The backing chain of a qcow2 file, as qemu-img reads it. */
function chainOf(file: string): string[] {
  return (
    JSON.parse(execFileSync('qemu-img', ['info', '-U', '--backing-chain', '--output=json', file], { encoding: 'utf8' })) as {
      filename: string;
    }[]
  ).map((i) => i.filename);
}

describe('BuildStepCache (real qemu-img)', () => {
  let dir: string;
  let base: string;
  let cache: BuildStepCache;

  beforeEach(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'capsule-steps-'));
    base = path.join(dir, 'base.ext4');
    fs.writeFileSync(base, Buffer.alloc(1024 * 1024));
    cache = new BuildStepCache(path.join(dir, 'steps'));
  });
  afterEach(() => fs.rmSync(dir, { recursive: true, force: true }));

  /** A frozen overlay as a build leaves it: a temporary name whose header names `backing`. */
  function overlay(backing: string, format: 'raw' | 'qcow2'): string {
    const file = cache.newOverlayPath();
    execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', '-F', format, '-b', backing, file]);
    return file;
  }

  it('commits overlays as a chain, with entries for steps that wrote nothing', async () => {
    const first = overlay(base, 'raw');
    const second = overlay(first, 'qcow2');
    const last = await cache.commit(undefined, [
      { key: 'k-env' },
      { key: 'k-run1', delta: first },
      { key: 'k-user' },
      { key: 'k-run2', delta: second },
    ]);
    const env = await cache.lookup('k-env');
    expect(env).toBeDefined();
    expect(env!.disk).toBeUndefined();
    const run1 = (await cache.lookup('k-run1'))!.disk!;
    expect((await cache.lookup('k-user'))!.disk).toBe(run1);
    expect((await cache.lookup('k-run2'))!.disk).toBe(last);
    // The second overlay was pointed at the first one's new name; no temporary name is left.
    expect(chainOf(last!)).toEqual([last, run1, base]);
    expect(fs.readdirSync(cache.dir).filter((n) => n.startsWith('.overlay-'))).toEqual([]);
    expect(await cache.lookup('k-unknown')).toBeUndefined();
  });

  it('ignores an entry whose chain lost a file or had one rewritten after it was made', async () => {
    await cache.commit(undefined, [{ key: 'k1', delta: overlay(base, 'raw') }]);
    expect(await cache.lookup('k1')).toBeDefined();
    // The FROM's disk built again at the same path (a template removed and made again):
    const later = new Date(Date.now() + 5000);
    fs.utimesSync(base, later, later);
    expect(await cache.lookup('k1')).toBeUndefined();
    fs.rmSync(base);
    expect(await cache.lookup('k1')).toBeUndefined();
  });

  it('prunes every entry and overlay, but not what a build still running uses', async () => {
    await cache.commit(undefined, [{ key: 'k1', delta: overlay(base, 'raw') }, { key: 'k2' }]);
    const leasedDisk = await cache.commit(undefined, [{ key: 'k3', delta: overlay(base, 'raw') }]);
    const running = overlay(base, 'raw'); // this process's: a build in progress
    const lease = cache.lease();
    lease.add([leasedDisk!]);
    fs.writeFileSync(path.join(cache.dir, '.overlay-999999999-dead.qcow2'), 'x');
    fs.writeFileSync(path.join(cache.dir, '.lease-999999999-dead.json'), JSON.stringify([path.join(cache.dir, 'k1.json')]));
    expect(cache.prune().entries).toBe(3);
    const left = fs.readdirSync(cache.dir);
    expect(left.filter((n) => !n.startsWith('.lease-')).sort()).toEqual([path.basename(leasedDisk!), path.basename(running)].sort());
    lease.release();
    expect(cache.prune().entries).toBe(0);
    expect(fs.readdirSync(cache.dir)).toEqual([path.basename(running)]);
  });

  it("removes at start the overlays and leases a killed daemon's build left, and keeps entries and running builds'", async () => {
    const disk = await cache.commit(undefined, [{ key: 'k1', delta: overlay(base, 'raw') }]);
    const running = overlay(base, 'raw'); // this process's: a build in progress
    const lease = cache.lease();
    lease.add([disk!]);
    fs.writeFileSync(path.join(cache.dir, '.overlay-999999999-dead.qcow2'), 'x');
    fs.writeFileSync(path.join(cache.dir, '.lease-999999999-dead.json'), JSON.stringify([disk]));
    cache.removeAbandoned();
    const left = fs.readdirSync(cache.dir);
    expect(left.filter((n) => n.includes('999999999'))).toEqual([]);
    expect(left).toEqual(expect.arrayContaining(['k1.json', path.basename(disk!), path.basename(running)]));
    expect(left.filter((n) => n.startsWith('.lease-'))).toHaveLength(1);
    lease.release();
  });
});
