// Issue #4's load case with real microVMs: 100 exec calls at once, spread over
// 10 sandboxes, through the daemon's API. Every one must complete, with its own
// output and exit code: no call may be dropped, mixed up or failed by load.
import { afterAll, beforeAll, describe, expect } from 'vitest';
import { it, TestDaemon } from './fixture.js';

describe('100 concurrent exec calls over 10 sandboxes (real QEMU microVMs)', () => {
  const daemon = new TestDaemon({ CAPSULE_WARM_POOL_SIZE: '0' });
  const ids: string[] = [];
  beforeAll(async () => {
    await daemon.start();
    for (let i = 0; i < 10; i++) {
      ids.push((await daemon.api.createSandbox({ timeoutMs: 10 * 60_000 })).id);
    }
  });
  afterAll(() => daemon.destroy());

  it('completes every call with its own output and exit code', async () => {
    const calls = Array.from({ length: 100 }, (_, i) => {
      const id = ids[i % ids.length]!;
      return daemon
        .request('POST', `/v1/sandboxes/${id}/exec`, { cmd: ['sh', '-c', `echo call-${i} $(hostname); exit ${i % 7}`] })
        .then((res) => ({ i, id, res }));
    });
    const results = await Promise.all(calls);
    const failures = results.filter(({ res }) => res.status !== 200);
    expect(failures.map(({ i, res }) => `${i}: ${res.status} ${res.text}`)).toEqual([]);
    for (const { i, id, res } of results) {
      expect(res.body.exitCode).toBe(i % 7);
      expect(res.body.stdout).toBe(`call-${i} ${id.replace('_', '-')}\n`);
    }
  });
});
