import type { Sandbox as SandboxInfo } from '@capsule/protocol';
import { describe, expect, it } from 'vitest';
import { statsRowOf, statsTable } from './stats-format.js';

const sandbox = (id: string, state: string, name: string | null = null) => ({ id, name, state, memoryMiB: 512 }) as SandboxInfo;

describe('statsTable', () => {
  it("shows each sandbox's newest point like docker stats, and -- for what is not measured", () => {
    const busy = statsRowOf(sandbox('sb_busy', 'running', 'web'), [
      { timestamp: '2026-12-07T15:00:00.000Z', cpuPercent: 5 },
      {
        timestamp: '2026-12-07T15:00:05.000Z',
        cpuPercent: 99.5,
        memoryRssBytes: 128 * 1024 * 1024,
        memoryPrivateBytes: 64 * 1024 * 1024,
        diskAllocatedBytes: 3 * 1024 * 1024,
        networkReceivedBytes: 2048,
        networkTransmittedBytes: 5 * 1024 * 1024,
      },
    ]);
    expect(busy.point?.cpuPercent).toBe(99.5);
    expect(busy.memoryLimitBytes).toBe(512 * 1024 * 1024);
    const fresh = statsRowOf(sandbox('sb_fresh', 'running'), []);
    expect(fresh.point).toBeNull();
    const paused = statsRowOf(sandbox('sb_paused', 'paused'), [
      { timestamp: '2026-12-07T15:00:00.000Z', cpuPercent: 3, memoryRssBytes: 1 },
    ]);
    expect(statsTable([busy, fresh, paused]).split('\n')).toEqual([
      'SANDBOX ID   NAME   CPU %    MEM USAGE / LIMIT       MEM %    PRIVATE MEM   NET I/O             DISK',
      'sb_busy      web    99.50%   128.0 MiB / 512.0 MiB   25.00%   64.0 MiB      2.0 KiB / 5.0 MiB   3.0 MiB',
      'sb_fresh            --       -- / 512.0 MiB          --       --            --                  --',
      'sb_paused           --       -- / 512.0 MiB          --       --            --                  --',
      '',
    ]);
  });
});
