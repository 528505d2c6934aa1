import { InvalidArgumentError } from 'commander';
import { afterEach, describe, expect, it, vi } from 'vitest';
import {
  collectCidr,
  collectEnv,
  collectMetadata,
  parseCpuCount,
  parseDepth,
  parseDurationMs,
  parseKeyValue,
  parseKillSignal,
  parseMemoryMiB,
  parseOnOff,
  parsePid,
  parseSinceTime,
  collectVolume,
  parseVolumeSize,
} from './option-parsers.js';
import { toCreateRequest } from './create-request.js';

describe('parseMemoryMiB', () => {
  it.each([
    ['512', 512],
    ['512M', 512],
    ['512m', 512],
    ['512MiB', 512],
    ['512MB', 512],
    ['1G', 1024],
    ['1g', 1024],
    ['1.5GiB', 1536],
    ['2gb', 2048],
    ['262144K', 256],
    ['64G', 65536],
  ])('reads %s as %i MiB', (text, mib) => {
    expect(parseMemoryMiB(text)).toBe(mib);
  });

  it.each(['', 'lots', '1X', '-512', '1.5', '100K', '64', '65G', '1T'])('rejects %j', (text) => {
    expect(() => parseMemoryMiB(text)).toThrow(InvalidArgumentError);
  });
});

describe('parseCpuCount', () => {
  it('accepts whole numbers within the limits', () => {
    expect(parseCpuCount('1')).toBe(1);
    expect(parseCpuCount('64')).toBe(64);
  });
  it.each(['0', '65', '1.5', 'two', ''])('rejects %j', (text) => {
    expect(() => parseCpuCount(text)).toThrow(InvalidArgumentError);
  });
});

describe('parseDurationMs', () => {
  it.each([
    ['30', 30_000],
    ['0', 0],
    ['1.5', 1500],
    ['500ms', 500],
    ['30s', 30_000],
    ['5m', 300_000],
    ['1h', 3_600_000],
    ['1m30s', 90_000],
    ['1h0m5s', 3_605_000],
  ])('reads %s as %i ms', (text, ms) => {
    expect(parseDurationMs(text)).toBe(ms);
  });
  it.each(['', 'soon', '5 m', '5d', '1m30', '-1s', 's'])('rejects %j', (text) => {
    expect(() => parseDurationMs(text)).toThrow(InvalidArgumentError);
  });
});

describe('parseSinceTime', () => {
  const now = Date.UTC(2026, 11, 7, 12, 0, 0);
  it.each([
    ['10m', now - 600_000],
    ['1h30m', now - 5_400_000],
    ['2026-12-07T11:00:00Z', Date.UTC(2026, 11, 7, 11)],
    ['2026-12-07T12:00:00+01:00', Date.UTC(2026, 11, 7, 11)],
    ['1765000000', 1_765_000_000_000],
  ])('reads %s', (text, ms) => {
    expect(parseSinceTime(text, now).getTime()).toBe(ms);
  });
  it.each(['', 'yesterday', '10 m', '2026-13-45T00:00:00Z', '-5m'])('rejects %j', (text) => {
    expect(() => parseSinceTime(text, now)).toThrow(InvalidArgumentError);
  });
});

describe('key=value options', () => {
  afterEach(() => vi.unstubAllEnvs());

  it('splits at the first = and keeps empty values', () => {
    expect(parseKeyValue('A=b=c', 'x')).toEqual(['A', 'b=c']);
    expect(parseKeyValue('A=', 'x')).toEqual(['A', '']);
    expect(() => parseKeyValue('=b', 'x')).toThrow(InvalidArgumentError);
  });

  it('collects repeated --env into one map, later values winning, and copies bare names from this shell', () => {
    vi.stubEnv('CAPSULE_TEST_TOKEN', 's3cret');
    let env = collectEnv('A=1');
    env = collectEnv('B=x=y', env);
    env = collectEnv('A=2', env);
    env = collectEnv('CAPSULE_TEST_TOKEN', env);
    expect(env).toEqual({ A: '2', B: 'x=y', CAPSULE_TEST_TOKEN: 's3cret' });
    expect(() => collectEnv('CAPSULE_TEST_UNSET_VARIABLE')).toThrow(/not set in this shell/);
    expect(() => collectEnv('not a name')).toThrow(InvalidArgumentError);
  });

  it('collects --metadata and requires K=V', () => {
    expect(collectMetadata('team=ml', collectMetadata('owner=ann'))).toEqual({ owner: 'ann', team: 'ml' });
    expect(() => collectMetadata('team')).toThrow(InvalidArgumentError);
  });
});

describe('parseForkCount', () => {
  it('takes 1 to 16, nothing else', async () => {
    const { parseForkCount } = await import('./option-parsers.js');
    expect(parseForkCount('3')).toBe(3);
    for (const bad of ['0', '17', '-1', '2.5', 'x']) expect(() => parseForkCount(bad), bad).toThrow();
  });
});

describe('parseKillSignal', () => {
  it.each([
    ['KILL', 'SIGKILL'],
    ['sigkill', 'SIGKILL'],
    ['9', 'SIGKILL'],
    ['TERM', 'SIGTERM'],
    ['SIGTERM', 'SIGTERM'],
    [' 15 ', 'SIGTERM'],
  ])('%s → %s', (value, signal) => {
    expect(parseKillSignal(value)).toBe(signal);
  });

  it.each(['HUP', 'SIGINT', '2', '', 'KILLER'])('refuses %j, naming the signals it can send', (value) => {
    expect(() => parseKillSignal(value)).toThrow(/KILL or TERM/);
  });
});

describe('parsePid and parseDepth', () => {
  it('take whole numbers from 1', () => {
    expect(parsePid('42')).toBe(42);
    expect(parseDepth('3')).toBe(3);
    for (const bad of ['0', '-1', '1.5', 'abc', '', '4294967296']) expect(() => parsePid(bad)).toThrow(InvalidArgumentError);
    for (const bad of ['0', 'x', '2.5']) expect(() => parseDepth(bad)).toThrow(InvalidArgumentError);
  });
});

describe('network options', () => {
  it('reads on/off and collects IPv4 networks, refusing anything else as a usage error', () => {
    expect(parseOnOff('on')).toBe(true);
    expect(parseOnOff('off')).toBe(false);
    expect(() => parseOnOff('yes')).toThrow(InvalidArgumentError);
    expect(collectCidr('1.2.3.4', collectCidr('10.0.0.0/8', undefined))).toEqual(['10.0.0.0/8', '1.2.3.4']);
    for (const bad of ['example.com', '10.0.0.0/', '::/0']) expect(() => collectCidr(bad, undefined), bad).toThrow(InvalidArgumentError);
  });

  it('asks for no internet only when --no-internet is given, and sends both lists when either is', () => {
    expect(toCreateRequest({ internet: true })).not.toHaveProperty('internet');
    expect(toCreateRequest({ internet: false })).toMatchObject({ internet: false });
    expect(toCreateRequest({ egressDeny: ['0.0.0.0/0'] })).toMatchObject({ egress: { allow: [], deny: ['0.0.0.0/0'] } });
    expect(toCreateRequest({})).not.toHaveProperty('egress');
  });
});

describe('collectVolume (-v)', () => {
  it('reads NAME:/PATH and NAME:/PATH:ro, repeated, into the create request', () => {
    const volumes = collectVolume('cache:/cache:ro', collectVolume('data:/data'));
    expect(volumes).toEqual([
      { name: 'data', mount: '/data' },
      { name: 'cache', mount: '/cache', readOnly: true },
    ]);
    expect(collectVolume('data:/data:rw')).toEqual([{ name: 'data', mount: '/data' }]);
    expect(toCreateRequest({ volume: volumes }).volumes).toEqual(volumes);
    expect(toCreateRequest({}).volumes).toBeUndefined();
  });

  it.each(['data', 'data:', 'data:rel/path', 'Data:/d', ':/d', 'data:/d:rx', 'data:/d:ro:x', 'a_b:/d'])('refuses %s', (value) => {
    expect(() => collectVolume(value)).toThrow(InvalidArgumentError);
  });
});

describe('parseVolumeSize', () => {
  it('keeps a size within the limits as given, for the daemon to read', () => {
    expect(parseVolumeSize(' 10G ')).toBe('10G');
    expect(parseVolumeSize('512M')).toBe('512M');
    expect(() => parseVolumeSize('1M')).toThrow(InvalidArgumentError);
    expect(() => parseVolumeSize('ten')).toThrow(InvalidArgumentError);
  });
});
