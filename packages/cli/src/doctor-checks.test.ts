import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { DaemonInfo } from '@capsule/sdk';
import { afterAll, describe, expect, it } from 'vitest';
import { checkTapNetworking, type TapProbes } from './doctor-checks.js';

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
