// The config file as a real daemon reads it: settings from the file under the
// environment's, and a start refused on a bad line with the file and line.
// Real daemons, no VM (the file turns warm snapshots off).
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { DaemonInfo, DaemonSettingsReport } from '@capsule/protocol';
import { afterAll, describe, expect } from 'vitest';
import { it, TestDaemon } from './fixture.js';

describe('the config file (real daemons)', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'capsule-config-'));
  fs.chmodSync(dir, 0o755);
  const file = path.join(dir, 'capsuled.env');
  const daemons: TestDaemon[] = [];
  afterAll(async () => {
    for (const daemon of daemons) await daemon.destroy();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('gives the daemon the settings the environment does not', async () => {
    fs.writeFileSync(file, 'CAPSULE_WARM_SNAPSHOTS=off\nCAPSULE_DOMAIN=from-file.test\nCAPSULE_STATE_DIR=/nonexistent/state\n', {
      mode: 0o600,
    });
    const daemon = new TestDaemon({ CAPSULE_CONFIG_FILE: file });
    daemons.push(daemon);
    await daemon.start();
    const info = (await daemon.request('GET', '/v1/info')).body as DaemonInfo;
    expect(info.domain).toBe('from-file.test');
    // The fixture's environment names the state folder: it wins over the file.
    expect(info.stateDir).toBe(daemon.stateDir);
    expect(daemon.log()).toContain('settings read from the config file');
    // `capsule daemon config` reads where each came from.
    const report = (await daemon.request('GET', '/v1/system/config')).body as DaemonSettingsReport;
    expect(report.configFile).toBe(file);
    const source = (name: string) => report.settings.find((s) => s.name === name);
    expect(source('CAPSULE_DOMAIN')).toMatchObject({ value: 'from-file.test', source: 'config file' });
    expect(source('CAPSULE_STATE_DIR')).toMatchObject({ value: daemon.stateDir, source: 'environment' });
    expect(source('CAPSULE_WARM_POOL_IDLE_MS')).toMatchObject({ value: '300000', source: 'default' });
  });

  it('refuses to start on a line it cannot use, naming the file and the line', async () => {
    fs.writeFileSync(file, 'CAPSULE_WARM_SNAPSHOTS=off\nCAPSULE_NETWROK=tap\n', { mode: 0o600 });
    const daemon = new TestDaemon({ CAPSULE_CONFIG_FILE: file });
    daemons.push(daemon);
    await expect(daemon.start()).rejects.toThrow(`capsuled: ${file} line 2: CAPSULE_NETWROK is not a capsuled setting`);
    expect(daemon.ended?.code).toBe(1);
  });
});
