// Secrets on disk: the state folder, the database and the daemon's secret are
// the owner's only, a daemon tightens what an older one (or a hand) left
// looser, and a damaged secret stops the start instead of being replaced.
// A real daemon and real SQLite; no VM is booted (warm snapshots off).
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, describe, expect } from 'vitest';
import { it, TestDaemon } from './fixture.js';

const modeOf = (file: string) => fs.statSync(file).mode & 0o777;

describe("state files are the owner's only (real daemon, real SQLite)", () => {
  const daemon = new TestDaemon({ CAPSULE_WARM_SNAPSHOTS: 'off' });
  afterAll(() => daemon.destroy());
  const inState = (name: string) => path.join(daemon.stateDir, name);

  it('attack: another local user reads capsule.db or daemon.secret — after start the state folder is 0700 and the database, its WAL files and the secret are 0600', async () => {
    await daemon.start();
    expect(modeOf(daemon.stateDir)).toBe(0o700);
    for (const name of ['capsule.db', 'capsule.db-wal', 'capsule.db-shm', 'daemon.secret']) {
      expect([name, modeOf(inState(name))]).toEqual([name, 0o600]);
    }
  });

  it('attack: files left group/world-readable by an older daemon stay readable — a daemon start tightens them and says so', async () => {
    await daemon.stop();
    fs.chmodSync(daemon.stateDir, 0o755);
    for (const name of ['capsule.db', 'daemon.secret']) fs.chmodSync(inState(name), 0o644);
    fs.writeFileSync(inState('capsuled.log'), 'an old log\n', { mode: 0o644 });
    fs.chmodSync(inState('capsuled.log'), 0o644);
    await daemon.start();
    expect(modeOf(daemon.stateDir)).toBe(0o700);
    for (const name of ['capsule.db', 'daemon.secret', 'capsuled.log']) expect([name, modeOf(inState(name))]).toEqual([name, 0o600]);
    expect(daemon.log()).toMatch(/tightened the mode of .*capsule\.db.*0644.*0600/);
  });

  it('attack: a truncated daemon.secret is silently replaced (every sandbox token changes) — the start fails with a hint and the file is left as it was', async () => {
    await daemon.stop();
    const secret = inState('daemon.secret');
    const truncated = fs.readFileSync(secret).subarray(0, 5);
    fs.writeFileSync(secret, truncated);
    await expect(daemon.start()).rejects.toThrow(/capsuled did not start/);
    expect(daemon.ended?.code).not.toBe(0);
    expect(daemon.log()).toMatch(/daemon\.secret is 5 bytes.*restore it from a backup/);
    expect(fs.readFileSync(secret).equals(truncated)).toBe(true);
  });
});
