import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { forgetHostKeys, knownHostsFile, pinHostKeys, sandboxOfHost } from './ssh-known-hosts.js';

const KEY_A = 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJmZfpM3+UY4csgW9fGLh7mcZU99/5+oS9uHkGeZNLl5';
const KEY_B = 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBw6UeuzdBIVZ/rQdn3gYbpYJzfVP1Mn/j0c64bpRK6w';

describe('Capsule known_hosts', () => {
  let dir: string;
  let file: string;
  beforeEach(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'capsule-known-hosts-'));
    file = knownHostsFile({ XDG_CONFIG_HOME: dir });
  });
  afterEach(() => fs.rmSync(dir, { recursive: true, force: true }));

  it('lives 0600 in a 0700 folder under the config dir, even when the folder existed with looser modes', () => {
    fs.mkdirSync(path.dirname(file), { recursive: true, mode: 0o755 });
    pinHostKeys(file, 'web.capsule', 'sb_one', [KEY_A]);
    expect(file).toBe(path.join(dir, 'capsule', 'ssh', 'known_hosts'));
    expect(fs.statSync(path.dirname(file)).mode & 0o777).toBe(0o700);
    expect(fs.statSync(file).mode & 0o777).toBe(0o600);
    expect(fs.readFileSync(file, 'utf8')).toBe(`web.capsule ${KEY_A} sb_one\n`);
  });

  it('pins on first use, accepts the same keys again and refuses others as a possible impersonation', () => {
    pinHostKeys(file, 'web.capsule', 'sb_one', [KEY_A]);
    pinHostKeys(file, 'web.capsule', 'sb_one', [KEY_A]);
    expect(fs.readFileSync(file, 'utf8').split('\n').filter(Boolean)).toHaveLength(1);
    expect(() => pinHostKeys(file, 'web.capsule', 'sb_one', [KEY_B])).toThrow(/possible impersonation/);
    // Refused, not replaced.
    expect(fs.readFileSync(file, 'utf8')).toContain(KEY_A);
    expect(fs.readFileSync(file, 'utf8')).not.toContain(KEY_B);
  });

  it('names the sandbox the key was pinned for when a name now belongs to another one', () => {
    pinHostKeys(file, 'web.capsule', 'sb_one', [KEY_A]);
    expect(() => pinHostKeys(file, 'web.capsule', 'sb_two', [KEY_B])).toThrow(/for sandbox sb_one/);
  });

  it('forgets a sandbox by name or id: every line of that sandbox, and no other', () => {
    pinHostKeys(file, 'web.capsule', 'sb_one', [KEY_A]);
    pinHostKeys(file, 'sb_one.capsule', 'sb_one', [KEY_A]);
    pinHostKeys(file, 'db.capsule', 'sb_two', [KEY_B]);
    expect(forgetHostKeys(file, 'web')).toBe(2);
    expect(fs.readFileSync(file, 'utf8')).toBe(`db.capsule ${KEY_B} sb_two\n`);
    expect(forgetHostKeys(file, 'sb_two')).toBe(1);
    expect(forgetHostKeys(file, 'nothing')).toBe(0);
  });

  it('reads the sandbox out of the host name ssh was given', () => {
    expect(sandboxOfHost('web.capsule')).toBe('web');
    expect(sandboxOfHost('sb_abc')).toBe('sb_abc');
  });
});
