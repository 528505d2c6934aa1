// `capsule daemon install|uninstall` run as the bundled CLI into a temporary
// --root, and the units it writes (and the repo's) checked by the real
// `systemd-analyze verify`. systemd is not PID 1 here, so nothing is started.
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { renderDaemonConfigTemplate } from '@capsule/protocol';
import { serviceOwnsDaemon } from './service-install.js';
import { renderServiceUnit, SETUP_CAPSULED_PATH } from './service-unit.js';

const packageDir = path.dirname(path.dirname(fileURLToPath(import.meta.url)));
const repoDir = path.dirname(path.dirname(packageDir));
const cliPath = path.join(packageDir, 'dist', 'main.js');
const daemonPath = path.join(repoDir, 'packages', 'daemon', 'dist', 'main.js');
const repoUnit = path.join(repoDir, 'packaging', 'systemd', 'capsuled.service');

let root: string;
beforeEach(() => {
  root = fs.mkdtempSync(path.join(os.tmpdir(), 'capsule-service-'));
});
afterEach(() => fs.rmSync(root, { recursive: true, force: true }));

function capsule(...args: string[]) {
  const result = spawnSync(process.execPath, [cliPath, ...args], {
    encoding: 'utf8',
    env: { PATH: process.env['PATH'] ?? '', CAPSULED_BIN: daemonPath, CAPSULE_STATE_DIR: path.join(root, 'state') },
  });
  return { status: result.status, stdout: result.stdout, stderr: result.stderr };
}

/** `systemd-analyze verify`: it exits 0 on many mistakes (an unknown key, a bad value) and only warns, so both count. */
function verify(unitFile: string, options: { root?: string } = {}) {
  const args = ['verify', '--man=no', ...(options.root ? [`--root=${options.root}`, path.basename(unitFile)] : [unitFile])];
  const result = spawnSync('systemd-analyze', args, { encoding: 'utf8' });
  if (result.error) throw new Error(`systemd-analyze did not run (scripts/setup installs the systemd package): ${result.error.message}`);
  return { status: result.status, stderr: result.stderr.trim() };
}

function mode(file: string): string {
  return (fs.statSync(file).mode & 0o777).toString(8);
}

describe('capsule daemon install', () => {
  it('writes a unit with the real node and capsuled that systemd-analyze verifies, and a commented config file', () => {
    const install = capsule('daemon', 'install', '--root', root);
    const unit = path.join(root, 'etc/systemd/system/capsuled.service');
    const config = path.join(root, 'etc/capsule/capsuled.env');
    expect(install).toEqual({
      status: 0,
      stdout: `Wrote ${unit}\nWrote ${config}\nInstalled under ${root}; systemctl was not run.\n`,
      stderr: '',
    });
    const text = fs.readFileSync(unit, 'utf8');
    expect(text).toContain(`\nExecStart=${fs.realpathSync(process.execPath)} ${fs.realpathSync(daemonPath)} serve\n`);
    expect(text).toContain('\nKillMode=process\n');
    expect(mode(unit)).toBe('644');
    expect(verify(unit)).toEqual({ status: 0, stderr: '' });
    // The command systemd would run starts this capsuled (asked for its version rather than to serve).
    const [program = '', ...args] = (/^ExecStart=(.*) serve$/m.exec(text)?.[1] ?? '').split(' ');
    expect(spawnSync(program, [...args, '--version'], { encoding: 'utf8' })).toMatchObject({
      status: 0,
      stdout: expect.stringMatching(/^\d+\.\d+/),
    });

    // Every setting is there, commented out, so the file changes nothing until edited.
    expect(fs.readFileSync(config, 'utf8')).toBe(renderDaemonConfigTemplate());
    expect(renderDaemonConfigTemplate()).toMatch(/^# CAPSULE_NETWORK=user +# user or tap$/m);
    expect(
      renderDaemonConfigTemplate()
        .split('\n')
        .filter((line) => line !== '' && !line.startsWith('#')),
    ).toEqual([]);
    expect(mode(config)).toBe('600');
  });

  it('never overwrites an edited config file, and leaves an unchanged unit alone', () => {
    expect(capsule('daemon', 'install', '--root', root).status).toBe(0);
    const config = path.join(root, 'etc/capsule/capsuled.env');
    fs.writeFileSync(config, 'CAPSULE_NETWORK=tap\n');
    const again = capsule('daemon', 'install', '--root', root);
    expect(again.status).toBe(0);
    expect(again.stdout).toContain(`Unchanged ${path.join(root, 'etc/systemd/system/capsuled.service')}\n`);
    expect(again.stdout).toContain(`Kept (already there, never overwritten) ${config}\n`);
    expect(fs.readFileSync(config, 'utf8')).toBe('CAPSULE_NETWORK=tap\n');
  });

  it('--dry-run prints what it would write and writes nothing', () => {
    const dryRun = capsule('daemon', 'install', '--dry-run', '--root', root);
    expect(dryRun.status).toBe(0);
    expect(dryRun.stdout).toContain(`# ${path.join(root, 'etc/systemd/system/capsuled.service')} (new, mode 0644):\n`);
    expect(dryRun.stdout).toContain('KillMode=process');
    expect(dryRun.stdout).toContain('# CAPSULE_STATE_DIR=/var/lib/capsule');
    expect(dryRun.stdout).toContain('# then it would run:\n(none: systemd is not running here)\n');
    expect(fs.readdirSync(root)).toEqual([]);
  });

  it('uninstall removes the unit and keeps the config file', () => {
    expect(capsule('daemon', 'install', '--root', root).status).toBe(0);
    fs.writeFileSync(path.join(root, 'etc/capsule/capsuled.env'), 'CAPSULE_NETWORK=tap\n');
    const uninstall = capsule('daemon', 'uninstall', '--root', root);
    expect(uninstall.status).toBe(0);
    expect(uninstall.stdout).toContain(`Removed ${path.join(root, 'etc/systemd/system/capsuled.service')}`);
    expect(uninstall.stdout).toContain(`Kept ${path.join(root, 'etc/capsule/capsuled.env')} (capsuled still reads it)`);
    expect(fs.existsSync(path.join(root, 'etc/systemd/system/capsuled.service'))).toBe(false);
    expect(fs.readFileSync(path.join(root, 'etc/capsule/capsuled.env'), 'utf8')).toBe('CAPSULE_NETWORK=tap\n');
    expect(capsule('daemon', 'uninstall', '--root', root).stdout).toMatch(/^capsuled\.service is not installed/);
  });

  it('says what to do when it cannot write', () => {
    fs.writeFileSync(path.join(root, 'etc'), 'a file where a folder should be');
    const install = capsule('daemon', 'install', '--root', root);
    expect(install.status).toBe(125);
    expect(install.stderr).toMatch(/^capsule: Cannot write .*capsuled\.service: ENOTDIR/);
  });
});

describe('the unit file', () => {
  it("in the repo is the installer's unit with scripts/setup's path, and systemd-analyze verifies it", () => {
    expect(
      fs.readFileSync(repoUnit, 'utf8'),
      'packaging/systemd/capsuled.service is stale; rewrite it with: npx esbuild packages/cli/src/service-unit.ts --format=esm ' +
        "--platform=node --outfile=/tmp/unit.mjs && node -e \"import('/tmp/unit.mjs').then((m) => " +
        'process.stdout.write(m.renderServiceUnit([m.SETUP_CAPSULED_PATH])))" > packaging/systemd/capsuled.service',
    ).toBe(renderServiceUnit([SETUP_CAPSULED_PATH]));
    // In a root of its own, with systemd's units and a stand-in capsuled, so that the check does not depend on this host's setup.
    fs.cpSync('/usr/lib/systemd/system', path.join(root, 'usr/lib/systemd/system'), { recursive: true, verbatimSymlinks: true });
    fs.mkdirSync(path.join(root, 'etc/systemd/system'), { recursive: true });
    fs.copyFileSync(repoUnit, path.join(root, 'etc/systemd/system/capsuled.service'));
    const standIn = path.join(root, SETUP_CAPSULED_PATH);
    fs.mkdirSync(path.dirname(standIn), { recursive: true });
    fs.writeFileSync(standIn, '#!/bin/sh\n', { mode: 0o755 });
    expect(verify('capsuled.service', { root })).toEqual({ status: 0, stderr: '' });
    fs.rmSync(standIn);
    expect(verify('capsuled.service', { root }).stderr).toMatch(/capsuled is not executable/);
  });

  it('fails verification when broken, so the checks above can fail', () => {
    const good = renderServiceUnit([fs.realpathSync(process.execPath), fs.realpathSync(daemonPath)]);
    const broken = {
      'misspelt-key.service': good.replace('Restart=on-failure', 'Restrat=on-failure'),
      'bad-value.service': good.replace('KillMode=process', 'KillMode=processes'),
      'missing-binary.service': good.replace(/^ExecStart=\S+/m, 'ExecStart=/nonexistent/node'),
    };
    for (const [name, text] of Object.entries(broken)) {
      expect(text, name).not.toBe(good);
      fs.writeFileSync(path.join(root, name), text);
      const result = verify(path.join(root, name));
      expect(result.stderr, name).not.toBe('');
    }
    fs.writeFileSync(path.join(root, 'good.service'), good);
    expect(verify(path.join(root, 'good.service'))).toEqual({ status: 0, stderr: '' });
  });

  it('takes only plain absolute paths, since systemd expands % and $ in ExecStart', () => {
    for (const bad of ['relative/node', '/opt/my node', '/opt/%h/node', '/opt/$HOME/node', '/opt/"x"'])
      expect(() => renderServiceUnit([bad]), bad).toThrow(/cannot put/);
  });
});

describe('who starts the daemon', () => {
  it('is the service only when its unit is installed, systemd runs, and the socket is the default one', () => {
    const socket = '/run/capsule/capsuled.sock';
    expect(serviceOwnsDaemon(socket, root)).toBe(false);
    fs.mkdirSync(path.join(root, 'etc/systemd/system'), { recursive: true });
    fs.writeFileSync(path.join(root, 'etc/systemd/system/capsuled.service'), '');
    expect(serviceOwnsDaemon(socket, root)).toBe(false);
    fs.mkdirSync(path.join(root, 'run/systemd/system'), { recursive: true });
    expect(serviceOwnsDaemon(socket, root)).toBe(true);
    expect(serviceOwnsDaemon(path.join(root, 'private.sock'), root)).toBe(false);
  });
});
