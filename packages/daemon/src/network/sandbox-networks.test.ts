import { afterEach, describe, expect, it, vi } from 'vitest';
import { silentLogger } from '../log.js';
import type { Store } from '../store/store.js';
import { SandboxNetworks } from './sandbox-networks.js';

describe('user-mode networking without root', () => {
  afterEach(() => vi.restoreAllMocks());

  it('(uid stubbed to non-root) keeps slirp on the host, unisolated, and says so in a warning the API and doctor report', async () => {
    vi.spyOn(process as { getuid: () => number }, 'getuid').mockReturnValue(1000);
    const warn = vi.spyOn(silentLogger, 'warn');
    const networks = new SandboxNetworks(
      { mode: 'user', tapPool: '10.201.0.0/16', stateDir: '/nonexistent/capsule-state' },
      {} as Store,
      silentLogger,
    );
    await networks.start(async () => false);
    expect(networks.isolationWarning).toMatch(/reach this host's loopback services .* 10\.0\.2\.2.*: capsuled does not run as root$/);
    expect(warn).toHaveBeenCalledWith(expect.anything(), expect.stringMatching(/^NETWORK NOT ISOLATED: /));
    // No namespace to run in: QEMU starts where the daemon is, as before.
    expect(await networks.backendFor('sb_x')).toEqual({ type: 'user' });
    await networks.stop();
  });
});
