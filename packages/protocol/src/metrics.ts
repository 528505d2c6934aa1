// The REST shapes of a sandbox's metrics history: points sampled by the daemon
// every few seconds, each with the host's view of the VM and, on some points,
// the guest's own. Nothing here may import daemon or client code.
import { Type, type Static } from '@sinclair/typebox';

/** The guest's own view, from its agent (envd's /metrics): the numbers e2b's `getMetrics` reports. */
export const GuestMetrics = Type.Object({
  cpuCount: Type.Integer({ description: 'Logical CPUs the guest sees' }),
  cpuUsedPct: Type.Number({ description: "Busy share of the guest's CPUs since its previous guest sample, in percent (0-100)" }),
  memUsedBytes: Type.Integer({ description: 'Guest memory in use (total - available)' }),
  memTotalBytes: Type.Integer(),
  diskUsedBytes: Type.Integer({ description: "Used space of the guest's root filesystem" }),
  diskTotalBytes: Type.Integer(),
});
export type GuestMetrics = Static<typeof GuestMetrics>;

/** One sample of a sandbox; a host field is absent when it could not be read (the VM was not running). */
export const SandboxMetricsPoint = Type.Object({
  timestamp: Type.String({ format: 'date-time' }),
  cpuSeconds: Type.Optional(Type.Number({ description: "CPU time of the sandbox's QEMU (user + system) since it started" })),
  cpuPercent: Type.Optional(
    Type.Number({ description: 'CPU used since the previous point, in percent of one host core (200 = two cores busy)' }),
  ),
  memoryRssBytes: Type.Optional(
    Type.Integer({ description: "Resident memory of the sandbox's QEMU, pages shared with its template included" }),
  ),
  memoryPrivateBytes: Type.Optional(
    Type.Integer({
      description: "The QEMU's anonymous resident memory (RssAnon): what only it holds, what removing the sandbox gives back",
    }),
  ),
  diskAllocatedBytes: Type.Optional(Type.Integer({ description: "Disk blocks held by the sandbox's own overlay (what it wrote)" })),
  networkReceivedBytes: Type.Optional(
    Type.Integer({
      description: "TAP networking only: bytes the sandbox's NIC received since its network was set up, from its tap device's counters",
    }),
  ),
  networkTransmittedBytes: Type.Optional(
    Type.Integer({ description: "TAP networking only: bytes the sandbox's NIC sent since its network was set up" }),
  ),
  guest: Type.Optional(GuestMetrics),
});
export type SandboxMetricsPoint = Static<typeof SandboxMetricsPoint>;

export const SandboxMetrics = Type.Object({
  sandboxId: Type.String(),
  /** How often points are taken (0: sampling is off and there is no history). */
  intervalMs: Type.Integer(),
  /** Every how many points the guest is asked for its own view. */
  guestEveryPoints: Type.Integer(),
  /** How far back the history reaches at most. */
  retentionMs: Type.Integer(),
  points: Type.Array(SandboxMetricsPoint),
});
export type SandboxMetrics = Static<typeof SandboxMetrics>;
