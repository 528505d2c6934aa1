// `capsule context`: a daemon on another host by name, over the real TLS
// listener of a real capsuled (no VM needed). The certificate pinned when the
// context was added is the only one accepted afterwards.
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cliMain, TestDaemon } from '../../daemon/test/fixture.js';

interface TlsInfo {
  tcpAddress: string;
  tls: { fingerprintSha256: string };
}

describe('capsule context against a real daemon over TLS', () => {
  const daemon = new TestDaemon({ CAPSULE_LISTEN: '127.0.0.1:0' });
  const config = fs.mkdtempSync(path.join(os.tmpdir(), 'capsule-contexts-'));
  const contextsFile = path.join(config, 'capsule', 'contexts.json');
  let info: TlsInfo;
  let apiKey: string;
  const capsule = (...args: string[]) =>
    spawnSync(process.execPath, [cliMain, ...args], {
      // No socket to fall back on, and no daemon to start: whatever answers came over TCP.
      env: { ...daemon.env, CAPSULE_SOCKET: path.join(config, 'no.sock'), CAPSULED_BIN: '/bin/false', XDG_CONFIG_HOME: config },
      encoding: 'utf8',
      timeout: 60_000,
    });

  beforeAll(async () => {
    await daemon.start();
    info = (await daemon.request<TlsInfo>('GET', '/v1/info')).body;
    apiKey = (await daemon.api.createApiKey('context')).key;
  });
  afterAll(async () => {
    await daemon.destroy();
    fs.rmSync(config, { recursive: true, force: true });
  });

  it('adds a context, pinning the certificate it is shown, in a file only its user can read', () => {
    const added = capsule('context', 'add', 'far', '--host', `https://${info.tcpAddress}`, '--key', apiKey);
    expect(added.status, added.stderr).toBe(0);
    expect(added.stderr).toContain(info.tls.fingerprintSha256);
    expect((fs.statSync(contextsFile).mode & 0o777).toString(8)).toBe('600');
    expect((fs.statSync(path.dirname(contextsFile)).mode & 0o777).toString(8)).toBe('700');
    const listed = JSON.parse(capsule('context', 'ls', '--json').stdout);
    expect(listed).toEqual([
      expect.objectContaining({ name: 'default', current: true }),
      expect.objectContaining({
        name: 'far',
        host: `https://${info.tcpAddress}`,
        fingerprintSha256: info.tls.fingerprintSha256,
        current: false,
      }),
    ]);
    expect(JSON.stringify(listed)).not.toContain(apiKey);
  });

  it('reaches the daemon through the context, by flag or as the current one, over TCP and never its socket', () => {
    expect(capsule('--context', 'far', 'ls', '--json')).toMatchObject({ status: 0, stdout: '[]\n' });
    expect(capsule('ls', '--json').status).toBe(125); // the default: this host's socket, which is not there
    expect(capsule('context', 'use', 'far').status).toBe(0);
    expect(capsule('ls', '--json')).toMatchObject({ status: 0, stdout: '[]\n' });
    expect(capsule('context', 'use', 'default').status).toBe(0);
  });

  it('refuses a daemon showing another certificate than the pinned one: possible impersonation', () => {
    const file = JSON.parse(fs.readFileSync(contextsFile, 'utf8'));
    file.contexts.far.fingerprintSha256 = `${'AA:'.repeat(31)}AA`;
    fs.writeFileSync(contextsFile, JSON.stringify(file));
    const refused = capsule('--context', 'far', 'ls');
    expect(refused.status).toBe(125);
    expect(refused.stderr).toContain('possible impersonation');
    // Pinned ahead and not matching: not added.
    const wrongAhead = capsule('context', 'add', 'near', '--host', `https://${info.tcpAddress}`, '--key', apiKey, '--fingerprint', 'BB:CC');
    expect(wrongAhead.status).toBe(125);
    expect(wrongAhead.stderr).toContain('possible impersonation');
    expect(capsule('context', 'ls', '--json').stdout).not.toContain('near');
    // Pinned ahead and matching: added.
    expect(
      capsule(
        'context',
        'add',
        'near',
        '--host',
        `https://${info.tcpAddress}`,
        '--key',
        apiKey,
        '--fingerprint',
        info.tls.fingerprintSha256,
      ).status,
    ).toBe(0);
    expect(capsule('--context', 'near', 'ls', '--json')).toMatchObject({ status: 0, stdout: '[]\n' });
  });

  it('removes contexts, and names a missing one with a hint', () => {
    expect(capsule('context', 'rm', 'far', 'near')).toMatchObject({ status: 0, stdout: 'far\nnear\n' });
    const missing = capsule('--context', 'far', 'ls');
    expect(missing.status).not.toBe(0);
    expect(missing.stderr).toContain('there is no context "far"');
    expect(capsule('context', 'add', 'Bad Name', '--host', `https://${info.tcpAddress}`).status).not.toBe(0);
  });
});
