// `capsule stats` rows: one sandbox's newest metrics point as docker stats
// shows a container (CPU %, memory use / limit, memory %, net I/O, disk). Pure
// functions of their inputs, so tests pin the output; never asks the daemon.
import type { Sandbox as SandboxInfo, SandboxMetricsPoint } from '@capsule/protocol';
import { formatBytes, renderTable } from './human-format.js';

const MIB = 1024 * 1024;

/** What `--json` prints per sandbox: its identity, its memory limit, and its newest point (null before the first one). */
export interface StatsRow {
  id: string;
  name: string | null;
  state: string;
  memoryLimitBytes: number;
  point: SandboxMetricsPoint | null;
}

export function statsRowOf(sandbox: SandboxInfo, points: readonly SandboxMetricsPoint[]): StatsRow {
  return {
    id: sandbox.id,
    name: sandbox.name,
    state: sandbox.state,
    memoryLimitBytes: sandbox.memoryMiB * MIB,
    point: points.at(-1) ?? null,
  };
}

/**
 * The table: MEM USAGE is the resident memory of the sandbox's QEMU (its cost
 * on the host), LIMIT the guest's memory size, NET I/O what its NIC received
 * / sent (TAP networking only); a value not measured (yet) is `--`.
 */
export function statsTable(rows: readonly StatsRow[]): string {
  const unknown = '--';
  return renderTable(
    ['SANDBOX ID', 'NAME', 'CPU %', 'MEM USAGE / LIMIT', 'MEM %', 'PRIVATE MEM', 'NET I/O', 'DISK'],
    rows.map(({ id, name, state, memoryLimitBytes, point }) => {
      const rss = point?.memoryRssBytes;
      const running = state === 'running';
      return [
        id,
        name ?? '',
        running && point?.cpuPercent !== undefined ? `${point.cpuPercent.toFixed(2)}%` : unknown,
        `${running && rss !== undefined ? formatBytes(rss) : unknown} / ${formatBytes(memoryLimitBytes)}`,
        running && rss !== undefined ? `${((rss / memoryLimitBytes) * 100).toFixed(2)}%` : unknown,
        running && point?.memoryPrivateBytes !== undefined ? formatBytes(point.memoryPrivateBytes) : unknown,
        point?.networkReceivedBytes !== undefined && point.networkTransmittedBytes !== undefined
          ? `${formatBytes(point.networkReceivedBytes)} / ${formatBytes(point.networkTransmittedBytes)}`
          : unknown,
        point?.diskAllocatedBytes !== undefined ? formatBytes(point.diskAllocatedBytes) : unknown,
      ];
    }),
  );
}
