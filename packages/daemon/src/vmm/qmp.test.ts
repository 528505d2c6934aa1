// QMP against a real QEMU, started paused (-S) with the real guest kernel: the
// same process start that the "bare QEMU" benchmark floor measures.
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readManifest } from '../guest/manifest.js';
import { waitForExit } from '../launcher.js';
import { QmpClient, QmpError } from './qmp.js';

const manifest = readManifest(process.env.CAPSULE_CACHE_DIR ?? '/var/cache/capsule');

describe.skipIf(!manifest)('QMP client (real QEMU)', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'qmp-'));
  const socketPath = path.join(dir, 'qmp.sock');
  let pid = 0;
  let qmp: QmpClient;

  beforeAll(async () => {
    const child = spawn(
      'qemu-system-x86_64',
      [
        '-M',
        'microvm',
        '-accel',
        'tcg',
        '-m',
        '128M',
        '-nodefaults',
        '-nographic',
        '-S',
        '-kernel',
        manifest!.kernel,
        '-qmp',
        `unix:${socketPath},server=on,wait=off`,
      ],
      { stdio: 'ignore' },
    );
    pid = child.pid!;
    qmp = await QmpClient.connect(socketPath, { timeoutMs: 10_000 });
  });
  afterAll(async () => {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // Already gone.
    }
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('negotiates and matches replies to commands', async () => {
    const [status, name] = await Promise.all([
      qmp.execute<{ status: string }>('query-status'),
      qmp.execute<{ name?: string }>('query-name'),
    ]);
    expect(status.status).toBe('prelaunch');
    expect(name).toEqual({});
  });

  it('rejects with the QMP error for a bad command', async () => {
    const err = await qmp.execute('no-such-command').catch((e: unknown) => e);
    expect(err).toBeInstanceOf(QmpError);
    expect((err as QmpError).errorClass).toBe('CommandNotFound');
  });

  it('delivers events and closes when QEMU quits', async () => {
    const resumed = qmp.waitForEvent((e) => e.event === 'RESUME', 5000);
    await qmp.execute('cont');
    expect((await resumed).event).toBe('RESUME');
    const closed = new Promise<void>((r) => qmp.once('close', () => r()));
    await qmp.execute('quit').catch(() => undefined);
    await closed;
    expect(qmp.isClosed).toBe(true);
    await expect(qmp.execute('query-status')).rejects.toThrow(/closed/);
    expect(await waitForExit(pid, 5000)).toBe(true);
  });
});
