import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { DaemonInfo, JailSupport } from '@capsule/sdk';
import { afterAll, describe, expect, it } from 'vitest';
import { checkJail, checkTapNetworking, type TapProbes } from './doctor-checks.js';

describe('checkTapNetworking', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'capsule-doctor-'));
  const tun = path.join(dir, 'tun');
  fs.writeFileSync(tun, '');
  afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));
  const probes = (over: Partial<TapProbes> = {}): TapProbes => ({ isRoot: true, tunDevice: tun, hasTool: async () => true, ...over });
  const info = (network: 'user' | 'tap') => ({ network }) as DaemonInfo;

  it('says TAP mode would work when the host has everything', async () => {
    expect(await checkTapNetworking(info('user'), probes())).toEqual({
      name: 'network',
      status: 'ok',
      detail: 'capsuled uses user-mode networking; TAP mode would work here too',
    });
    expect((await checkTapNetworking(info('tap'), probes())).status).toBe('ok');
  });

  it('lists what TAP mode lacks, as a failure only when the daemon uses it', async () => {
    const lacking = probes({ isRoot: false, tunDevice: path.join(dir, 'no-tun'), hasTool: async (tool) => tool !== 'nft' });
    const user = await checkTapNetworking(info('user'), lacking);
    expect(user.status).toBe('ok');
    expect(user.detail).toMatch(/TAP mode needs root, .*no-tun, nft \(/);
    const tap = await checkTapNetworking(info('tap'), lacking);
    expect(tap.status).toBe('fail');
    expect(tap.detail).toMatch(/root, .*no-tun, nft/);
    // With no daemon to ask, the mode comes from the default.
    expect((await checkTapNetworking(undefined, lacking)).detail).toMatch(
      /^user-mode networking unless CAPSULE_NETWORK=tap; TAP mode needs/,
    );
  });

  it('warns when the daemon says its user-mode sandboxes are not isolated', async () => {
    const unisolated = {
      network: 'user',
      networkWarning: 'sandboxes reach this host through 10.0.2.2: capsuled does not run as root',
    } as DaemonInfo;
    expect(await checkTapNetworking(unisolated, probes())).toEqual({
      name: 'network',
      status: 'warn',
      detail: `capsuled uses user-mode networking, NOT isolated: ${unisolated.networkWarning}`,
    });
  });
});

describe('checkJail', () => {
  const support: JailSupport = {
    userNamespaces: true,
    cgroup: { version: 1, controllers: ['cpu', 'memory', 'pids'] },
    seccomp: true,
    bubblewrap: '0.8.0',
  };
  const info = (enabled: boolean, over: Partial<JailSupport> = {}) =>
    ({ jail: { enabled, support: { ...support, ...over } } }) as DaemonInfo;

  it('is ok when the daemon jails VMMs, and says what the host supports', () => {
    expect(checkJail(info(true))).toEqual({
      name: 'jail',
      status: 'ok',
      detail: "capsuled jails each sandbox's QEMU; host: user namespaces yes, cgroup v1 (cpu, memory, pids), seccomp yes, bubblewrap 0.8.0",
    });
  });

  it('warns in capitals when the jail is off, whatever the host supports', () => {
    const off = checkJail(info(false));
    expect(off.status).toBe('warn');
    expect(off.detail).toMatch(/^JAIL OFF \(CAPSULE_JAIL=off\): every QEMU runs as root, unconfined/);
    expect(off.detail).toMatch(/This host could jail them: unset CAPSULE_JAIL/);
    const offAndLacking = checkJail(info(false, { bubblewrap: undefined, cgroup: { version: 'none', controllers: [] } }));
    expect(offAndLacking.status).toBe('warn');
    expect(offAndLacking.detail).toMatch(/Jailing here needs cgroups with memory, cpu and pids, bubblewrap \(apt-get install bubblewrap\)/);
    expect(offAndLacking.detail).toMatch(/no usable cgroups, seccomp yes, no bubblewrap$/);
  });

  it('fails when the jail is on but the host lacks what it needs', () => {
    const lacking = checkJail(info(true, { userNamespaces: false, seccomp: false }));
    expect(lacking.status).toBe('fail');
    expect(lacking.detail).toMatch(/lacks user namespaces .*, seccomp/);
  });

  it('warns about a daemon from before the jail', () => {
    expect(checkJail({ version: '0.0.9' } as DaemonInfo)).toMatchObject({
      status: 'warn',
      detail: expect.stringMatching(/^JAIL OFF: capsuled 0\.0\.9 predates/),
    });
  });

  it('cannot tell without a daemon, and says so', () => {
    expect(checkJail(undefined)).toMatchObject({ name: 'jail', status: 'warn', detail: expect.stringMatching(/not running/) });
  });
});
