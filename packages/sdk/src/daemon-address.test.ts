import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { daemonAddressOf, parseDaemonUrl } from './daemon-address.js';
import { originOf } from './daemon-tls.js';

describe('which daemon a client talks to', () => {
  it('reads CAPSULE_HOST as https unless it says http://, with the key and the pin from the environment', () => {
    const env = { CAPSULE_HOST: 'https://capsule.example.com:3000', CAPSULE_API_KEY: 'e2b_k', CAPSULE_TLS_FINGERPRINT: 'AB:CD' };
    expect(daemonAddressOf({}, env)).toEqual({
      host: 'capsule.example.com',
      port: 3000,
      apiKey: 'e2b_k',
      tls: { fingerprintSha256: 'AB:CD' },
    });
    expect(daemonAddressOf({}, { CAPSULE_HOST: '10.0.0.5:3000' })).toMatchObject({ host: '10.0.0.5', port: 3000, tls: {} });
    expect(daemonAddressOf({}, { CAPSULE_HOST: 'http://127.0.0.1:3000' })).toMatchObject({ host: '127.0.0.1', port: 3000, tls: false });
  });

  it('trusts the PEM file CAPSULE_TLS_CA names', () => {
    const file = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'capsule-ca-')), 'ca.pem');
    fs.writeFileSync(file, 'PEM');
    expect(daemonAddressOf({}, { CAPSULE_HOST: 'https://h:1', CAPSULE_TLS_CA: file })).toMatchObject({ tls: { ca: Buffer.from('PEM') } });
    expect(() => daemonAddressOf({}, { CAPSULE_HOST: 'https://h:1', CAPSULE_TLS_CA: `${file}.missing` })).toThrow(
      /cannot be read \(ENOENT\)/,
    );
  });

  it('lets explicit options win: a socket path, or a host with its own tls setting', () => {
    const env = { CAPSULE_HOST: 'https://remote:3000', CAPSULE_TLS_FINGERPRINT: 'AB' };
    expect(daemonAddressOf({ socketPath: '/tmp/s.sock' }, env)).toEqual({ socketPath: '/tmp/s.sock', apiKey: undefined });
    expect(daemonAddressOf({ host: 'h', port: 1, tls: false }, env)).toMatchObject({ host: 'h', port: 1, tls: false });
    expect(daemonAddressOf({ host: 'h', tls: { fingerprintSha256: 'CD' } }, env)).toMatchObject({
      host: 'h',
      port: 443,
      tls: { fingerprintSha256: 'CD' },
    });
    expect(daemonAddressOf({}, { CAPSULE_SOCKET: '/run/x.sock' })).toEqual({ socketPath: '/run/x.sock', apiKey: undefined });
  });

  it('names the scheme it speaks in its origin', () => {
    expect(originOf({ host: 'h', port: 3000 })).toBe('https://h:3000');
    expect(originOf({ host: '::1', port: 3000, tls: false })).toBe('http://[::1]:3000');
    expect(originOf({ socketPath: '/s' })).toBe('http://capsuled');
  });

  it('refuses a CAPSULE_HOST it cannot read, saying the form it wants', () => {
    for (const bad of ['ftp://h:1', 'https://', 'h:99999', 'https://h:1/path']) {
      expect(() => parseDaemonUrl(bad), bad).toThrow(/CAPSULE_HOST must be https:\/\/host:port/);
    }
  });
});
