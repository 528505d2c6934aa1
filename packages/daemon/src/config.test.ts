import { describe, expect, it } from 'vitest';
import { loadConfig, parseDomain, parseListen } from './config.js';

describe('CAPSULE_LISTEN', () => {
  it('takes host:port, [v6]:port and :port (all interfaces), serving TLS', () => {
    expect(parseListen('127.0.0.1:3000')).toEqual({ host: '127.0.0.1', port: 3000, tls: true });
    expect(parseListen('[::1]:0')).toEqual({ host: '::1', port: 0, tls: true });
    expect(parseListen(':8080')).toEqual({ host: '0.0.0.0', port: 8080, tls: true });
    expect(parseListen('localhost:65535')).toEqual({ host: 'localhost', port: 65535, tls: true });
    expect(parseListen('https://127.0.0.1:3000')).toEqual({ host: '127.0.0.1', port: 3000, tls: true });
  });

  it('serves plain HTTP only when asked for by an http:// prefix', () => {
    expect(parseListen('http://127.0.0.1:3000')).toEqual({ host: '127.0.0.1', port: 3000, tls: false });
    expect(parseListen('http://[::1]:0')).toEqual({ host: '::1', port: 0, tls: false });
  });

  it('takes the operator certificate and key together, and never with plain http://', () => {
    expect(loadConfig({ CAPSULE_TLS_CERT: '/c.pem', CAPSULE_TLS_KEY: '/k.pem' })).toMatchObject({
      tlsCertFile: '/c.pem',
      tlsKeyFile: '/k.pem',
    });
    expect(() => loadConfig({ CAPSULE_TLS_CERT: '/c.pem' })).toThrow(/go together/);
    expect(() => loadConfig({ CAPSULE_LISTEN: 'http://127.0.0.1:0', CAPSULE_TLS_CERT: '/c.pem', CAPSULE_TLS_KEY: '/k.pem' })).toThrow(
      /plain http/,
    );
  });

  it('refuses anything else with the form it wants', () => {
    for (const bad of ['3000', '127.0.0.1', '127.0.0.1:65536', 'host:port', '::1:3000', 'a:b:1', 'ftp://h:1', 'http://h']) {
      expect(() => parseListen(bad)).toThrow(/CAPSULE_LISTEN must be host:port/);
    }
  });

  it('is off unless set', () => {
    expect(loadConfig({}).listen).toBeUndefined();
    expect(loadConfig({ CAPSULE_LISTEN: '127.0.0.1:0' }).listen).toEqual({ host: '127.0.0.1', port: 0, tls: true });
  });
});

describe('CAPSULE_DOMAIN', () => {
  it('defaults to localhost and takes a host name with an optional port, lower-cased', () => {
    expect(loadConfig({}).domain).toBe('localhost');
    expect(parseDomain('Capsule.Example.com')).toBe('capsule.example.com');
    expect(parseDomain('localhost:3000')).toBe('localhost:3000');
  });

  it('refuses what cannot end a host name', () => {
    for (const bad of ['', 'http://x', 'a..b', '-a.b', 'a_b.c', 'x:port', 'a/b'])
      expect(() => parseDomain(bad), bad).toThrow(/CAPSULE_DOMAIN/);
  });
});

describe('CAPSULE_DISK_RESERVE_MIB', () => {
  it('keeps 1024 MiB free unless set; 0 turns the check off', () => {
    expect(loadConfig({}).diskReserveMiB).toBe(1024);
    expect(loadConfig({ CAPSULE_DISK_RESERVE_MIB: '0' }).diskReserveMiB).toBe(0);
    expect(() => loadConfig({ CAPSULE_DISK_RESERVE_MIB: '-1' })).toThrow(/whole number/);
  });
});

describe('CAPSULE_JAIL', () => {
  it('jails VMMs unless turned off', () => {
    expect(loadConfig({}).jail).toBe(true);
    expect(loadConfig({ CAPSULE_JAIL: 'on' }).jail).toBe(true);
    expect(loadConfig({ CAPSULE_JAIL: 'off' }).jail).toBe(false);
    expect(() => loadConfig({ CAPSULE_JAIL: 'maybe' })).toThrow(/expected on or off/);
  });
});

describe('CAPSULE_JAIL_IDS', () => {
  it('takes FIRST-LAST, 900000-999999 unless set', () => {
    expect(loadConfig({}).jailIds).toEqual({ first: 900000, count: 100000 });
    expect(loadConfig({ CAPSULE_JAIL_IDS: '500000-500009' }).jailIds).toEqual({ first: 500000, count: 10 });
  });

  it('refuses system ids, ranges too small or past 2^32-2, and anything not a range', () => {
    for (const value of ['0-99999', '999-5000', '500000-500001', '500000-4294967295', '900000', 'a-b', '-1-5', '900000-800000'])
      expect(() => loadConfig({ CAPSULE_JAIL_IDS: value }), value).toThrow(/CAPSULE_JAIL_IDS must be FIRST-LAST/);
  });
});

describe('CAPSULE_VMM_OVERHEAD_MIB', () => {
  it("is the jail's own measured allowance unless set, and a whole number when set", () => {
    expect(loadConfig({}).vmmOverheadMiB).toBeUndefined();
    expect(loadConfig({ CAPSULE_VMM_OVERHEAD_MIB: '64' }).vmmOverheadMiB).toBe(64);
    for (const value of ['-1', '1.5', 'lots']) expect(() => loadConfig({ CAPSULE_VMM_OVERHEAD_MIB: value }), value).toThrow(/whole number/);
  });
});

describe('CAPSULE_TCG_CODE_BUFFER_MIB', () => {
  it('is 64 MiB unless set, and refuses what would retranslate on every command', () => {
    expect(loadConfig({}).tcgCodeBufferMiB).toBe(64);
    expect(loadConfig({ CAPSULE_TCG_CODE_BUFFER_MIB: '256' }).tcgCodeBufferMiB).toBe(256);
    expect(() => loadConfig({ CAPSULE_TCG_CODE_BUFFER_MIB: '8' })).toThrow(/at least 16/);
    for (const value of ['-1', '1.5', 'lots'])
      expect(() => loadConfig({ CAPSULE_TCG_CODE_BUFFER_MIB: value }), value).toThrow(/whole number/);
  });
});
