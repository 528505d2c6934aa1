import { X509Certificate } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { silentLogger } from '../log.js';
import { GENERATED_CERT_FILE, GENERATED_KEY_FILE, tightenStateModes } from '../state-files.js';
import { certNames, loadTlsIdentity } from './tls.js';

const folders: string[] = [];
function stateDir(): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'capsule-tls-'));
  folders.push(dir);
  return dir;
}
afterEach(() => {
  for (const dir of folders.splice(0)) fs.rmSync(dir, { recursive: true, force: true });
});

const mode = (file: string) => (fs.statSync(file).mode & 0o777).toString(8);

describe('the TCP listener certificate', () => {
  it('covers the listen host, loopback, the domain and every sandbox host name under it', () => {
    expect(certNames(['0.0.0.0', 'capsule.example.com'])).toEqual([
      'localhost',
      '127.0.0.1',
      '::1',
      'capsule.example.com',
      '*.capsule.example.com',
    ]);
    expect(certNames(['10.0.0.5', 'localhost'])).toEqual(['localhost', '127.0.0.1', '::1', '10.0.0.5']);
  });

  it('tightens a kept certificate or key that others could read (at daemon start), and keeps the same certificate', () => {
    const dir = stateDir();
    const made = loadTlsIdentity({ stateDir: dir, names: ['127.0.0.1'], log: silentLogger });
    fs.chmodSync(path.join(dir, GENERATED_KEY_FILE), 0o644);
    tightenStateModes(dir, silentLogger);
    const kept = loadTlsIdentity({ stateDir: dir, names: ['127.0.0.1'], log: silentLogger });
    expect(kept.fingerprintSha256).toBe(made.fingerprintSha256);
    expect(mode(path.join(dir, GENERATED_KEY_FILE))).toBe('600');
  });

  it('makes a new pair when only a key was left (a first start cut short), never when a certificate was', () => {
    const dir = stateDir();
    loadTlsIdentity({ stateDir: dir, names: [], log: silentLogger });
    fs.rmSync(path.join(dir, GENERATED_CERT_FILE));
    const made = loadTlsIdentity({ stateDir: dir, names: [], log: silentLogger });
    expect(new X509Certificate(fs.readFileSync(path.join(dir, GENERATED_CERT_FILE))).fingerprint256).toBe(made.fingerprintSha256);
    fs.rmSync(path.join(dir, GENERATED_KEY_FILE));
    expect(() => loadTlsIdentity({ stateDir: dir, names: [], log: silentLogger })).toThrow(/has no key beside it/);
  });

  it("refuses an operator key that is not the certificate's, naming both variables", () => {
    const a = loadTlsIdentity({ stateDir: stateDir(), names: [], log: silentLogger });
    const otherDir = stateDir();
    loadTlsIdentity({ stateDir: otherDir, names: [], log: silentLogger });
    expect(() =>
      loadTlsIdentity({
        stateDir: stateDir(),
        names: [],
        certFile: a.certificatePath,
        keyFile: path.join(otherDir, GENERATED_KEY_FILE),
        log: silentLogger,
      }),
    ).toThrow(/cannot be used: .*CAPSULE_TLS_CERT and CAPSULE_TLS_KEY must be/);
  });
});
