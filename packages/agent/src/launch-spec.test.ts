import { chmodSync, mkdirSync, mkdtempSync, realpathSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Code, ConnectError } from '@connectrpc/connect';
import { afterAll, describe, expect, it } from 'vitest';
import { buildLaunchSpec, buildProcessEnv, DEFAULT_PATH, findExecutable, resolveWorkingDirectory } from './launch-spec.js';
import type { UnixUser } from './users.js';

const dir = realpathSync(mkdtempSync(join(tmpdir(), 'capsule-agent-launch-')));
const home = join(dir, 'home');
const bin = join(dir, 'bin');
mkdirSync(join(home, 'project'), { recursive: true });
mkdirSync(bin);
writeFileSync(join(bin, 'tool'), '#!/bin/sh\n');
chmodSync(join(bin, 'tool'), 0o755);
writeFileSync(join(bin, 'not-executable'), 'data');
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const user: UnixUser = { name: 'someone', uid: 1234, gid: 1234, home, shell: '/bin/sh' };

function codeOf(fn: () => unknown): Code | undefined {
  try {
    fn();
  } catch (error) {
    return error instanceof ConnectError ? error.code : undefined;
  }
  return undefined;
}

describe('launch spec', () => {
  it('builds the environment from defaults, agent envs and request envs, in that order', () => {
    expect(buildProcessEnv(user, { LANG: 'de_DE.UTF-8', A: '1' }, { A: '0', B: '2' })).toEqual({
      PATH: DEFAULT_PATH,
      HOME: home,
      USER: 'someone',
      LOGNAME: 'someone',
      LANG: 'de_DE.UTF-8',
      A: '1',
      B: '2',
    });
  });

  it('resolves the working directory the way envd does', () => {
    expect(resolveWorkingDirectory(undefined, user)).toBe(home);
    expect(resolveWorkingDirectory('', user)).toBe(home);
    expect(resolveWorkingDirectory('~/project', user)).toBe(join(home, 'project'));
    expect(resolveWorkingDirectory('project', user)).toBe(join(home, 'project'));
    expect(resolveWorkingDirectory(dir, user)).toBe(dir);
    expect(codeOf(() => resolveWorkingDirectory('~other/x', user))).toBe(Code.InvalidArgument);
    expect(codeOf(() => resolveWorkingDirectory('/no/such/dir', user))).toBe(Code.InvalidArgument);
    expect(codeOf(() => resolveWorkingDirectory(join(bin, 'tool'), user))).toBe(Code.InvalidArgument);
  });

  it('finds executables on the given PATH only', () => {
    expect(findExecutable('tool', `/nonexistent:${bin}`, dir)).toBe(join(bin, 'tool'));
    expect(findExecutable('tool', '/usr/bin', dir)).toBeUndefined();
    expect(findExecutable('not-executable', bin, dir)).toBeUndefined();
    expect(findExecutable('./bin/tool', '', dir)).toBe(join(bin, 'tool'));
  });

  it('refuses empty commands, NUL bytes, bad env names and unknown commands', () => {
    const spec = buildLaunchSpec({ cmd: 'tool', args: ['a'], envs: { PATH: bin }, cwd: '~' }, user);
    expect(spec).toMatchObject({ file: join(bin, 'tool'), argv0: 'tool', args: ['a'], cwd: home });
    expect(codeOf(() => buildLaunchSpec({ cmd: '', args: [], envs: {} }, user))).toBe(Code.InvalidArgument);
    expect(codeOf(() => buildLaunchSpec({ cmd: 'tool', args: ['a\0b'], envs: { PATH: bin } }, user))).toBe(Code.InvalidArgument);
    expect(codeOf(() => buildLaunchSpec({ cmd: 'tool', args: [], envs: { PATH: bin, 'A=B': 'x' } }, user))).toBe(Code.InvalidArgument);
    expect(codeOf(() => buildLaunchSpec({ cmd: 'missing-tool', args: [], envs: { PATH: bin } }, user))).toBe(Code.InvalidArgument);
  });
});
