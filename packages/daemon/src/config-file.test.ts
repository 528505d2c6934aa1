import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { DAEMON_SETTINGS, renderDaemonConfigTemplate } from '@capsule/protocol';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { loadConfig } from './config.js';
import { applyConfigFile, ConfigFileError, parseConfigFile } from './config-file.js';

let dir: string;
let file: string;

beforeEach(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'capsule-config-'));
  fs.chmodSync(dir, 0o755);
  file = path.join(dir, 'capsuled.env');
});
afterEach(() => fs.rmSync(dir, { recursive: true, force: true }));

function writeConfig(text: string, mode = 0o600): void {
  fs.writeFileSync(file, text, { mode });
  fs.chmodSync(file, mode);
}

describe('the config file', () => {
  it('fills in what the environment does not set: the environment wins, even when it sets a variable to empty', () => {
    writeConfig('# comment\n\nCAPSULE_NETWORK=tap\nCAPSULE_ACCEL=tcg\nexport CAPSULE_LOG_LEVEL="debug"  # quoted\nCAPSULE_DOMAIN=\n');
    const env: NodeJS.ProcessEnv = { CAPSULE_CONFIG_FILE: file, CAPSULE_ACCEL: 'kvm', CAPSULE_LOG_LEVEL: '' };
    expect(applyConfigFile(env)).toBe(file);
    expect(env).toEqual({ CAPSULE_CONFIG_FILE: file, CAPSULE_NETWORK: 'tap', CAPSULE_ACCEL: 'kvm', CAPSULE_LOG_LEVEL: '' });
  });

  it('is optional at the default path, required when named, and off when named empty', () => {
    expect(applyConfigFile({}, path.join(dir, 'absent.env'))).toBeUndefined();
    writeConfig('CAPSULE_NETWORK=tap\n');
    const fromDefault: NodeJS.ProcessEnv = {};
    expect(applyConfigFile(fromDefault, file)).toBe(file);
    expect(fromDefault).toEqual({ CAPSULE_NETWORK: 'tap' });
    expect(() => applyConfigFile({ CAPSULE_CONFIG_FILE: path.join(dir, 'missing.env') })).toThrow(
      /cannot read the config file .*missing\.env/,
    );
    const env = { CAPSULE_CONFIG_FILE: '' };
    expect(applyConfigFile(env, file)).toBeUndefined();
    expect(env).toEqual({ CAPSULE_CONFIG_FILE: '' });
  });

  it('names the file and line of a line that is not a setting', () => {
    const text = 'CAPSULE_NETWORK=tap\nCAPSULE_ACCEL kvm\n';
    expect(() => parseConfigFile(text, '/x.env')).toThrow(ConfigFileError);
    expect(() => parseConfigFile(text, '/x.env')).toThrow('/x.env line 2: expected NAME=VALUE');
    expect(() => parseConfigFile('=kvm\n', '/x.env')).toThrow('/x.env line 1: expected NAME=VALUE');
  });

  it("refuses a name that is not a setting (a typo, another program's variable) and a setting given twice", () => {
    expect(() => parseConfigFile('\nCAPSULE_NETWROK=tap\n', '/x.env')).toThrow('/x.env line 2: CAPSULE_NETWROK is not a capsuled setting');
    expect(() => parseConfigFile('NODE_OPTIONS=--inspect\n', '/x.env')).toThrow(/line 1: NODE_OPTIONS is not/);
    expect(() => parseConfigFile('CAPSULE_CONFIG_FILE=/y\n', '/x.env')).toThrow(/CAPSULE_CONFIG_FILE is not/);
    expect(() => parseConfigFile('CAPSULE_ACCEL=tcg\nCAPSULE_ACCEL=kvm\n', '/x.env')).toThrow(/line 2: CAPSULE_ACCEL is set twice/);
  });

  it('refuses a file or folder others could write, with the command that fixes it', () => {
    writeConfig('CAPSULE_NETWORK=tap\n', 0o666);
    expect(() => applyConfigFile({ CAPSULE_CONFIG_FILE: file })).toThrow(
      new RegExp(`${file} is writable by everyone \\(mode 0666\\).*chmod 600 ${file}`),
    );
    writeConfig('CAPSULE_NETWORK=tap\n', 0o620);
    fs.chownSync(file, 0, 4242);
    expect(() => applyConfigFile({ CAPSULE_CONFIG_FILE: file })).toThrow(/is writable by group 4242/);
    writeConfig('CAPSULE_NETWORK=tap\n', 0o600);
    fs.chownSync(file, 4242, 0);
    expect(() => applyConfigFile({ CAPSULE_CONFIG_FILE: file })).toThrow(/is owned by uid 4242.*chown root:root/);
    fs.chownSync(file, 0, 0);
    fs.chmodSync(dir, 0o777);
    expect(() => applyConfigFile({ CAPSULE_CONFIG_FILE: file })).toThrow(new RegExp(`${dir} is writable by everyone.*chmod 755 ${dir}`));
    fs.chmodSync(dir, 0o755);
    const env = { CAPSULE_CONFIG_FILE: file };
    applyConfigFile(env);
    expect(env).toMatchObject({ CAPSULE_NETWORK: 'tap' });
  });

  it("install's template changes nothing as it is, nor with every line uncommented: its defaults are the daemon's", () => {
    const template = renderDaemonConfigTemplate();
    expect(parseConfigFile(template, '/x.env')).toEqual({});
    const uncommented = template.replace(/^# (CAPSULE_)/gm, '$1');
    const settings = parseConfigFile(uncommented, '/x.env');
    expect(Object.keys(settings).length).toBeGreaterThan(10);
    expect(loadConfig(settings)).toEqual(loadConfig({}));
  });

  it('knows every CAPSULE_* variable the daemon reads, and only those', () => {
    const src = path.join(import.meta.dirname);
    const read = new Set<string>();
    for (const entry of fs.readdirSync(src, { recursive: true, withFileTypes: true })) {
      if (!entry.isFile() || !entry.name.endsWith('.ts') || entry.name.endsWith('.test.ts')) continue;
      const text = fs.readFileSync(path.join(entry.parentPath, entry.name), 'utf8');
      for (const [name] of text.matchAll(/CAPSULE_[A-Z0-9_]*[A-Z0-9]/g)) read.add(name);
    }
    // Not settings: the file's own path, and the test-only delays (test-only-delay.ts).
    read.delete('CAPSULE_CONFIG_FILE');
    for (const name of read) if (name.startsWith('CAPSULE_TEST_DELAY')) read.delete(name);
    expect([...read].sort()).toEqual(DAEMON_SETTINGS.map((setting) => setting.name).sort());
  });
});
