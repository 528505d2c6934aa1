// The workload routes' REST contract (`/v1/workloads`): an apply request and
// its plan, a workload's status with its conditions, and its log query. The
// spec documents themselves are checked by workload-spec.ts, not by a schema,
// so that every problem names its document and field.
import { Type, type Static } from '@sinclair/typebox';
import { MAX_WORKLOADS_PER_APPLY } from './workload-spec.js';

export const ApplyWorkloadsRequest = Type.Object(
  {
    /** The file's documents, parsed (YAML or JSON); see docs/workloads.md for their fields. */
    documents: Type.Array(Type.Unknown(), { maxItems: MAX_WORKLOADS_PER_APPLY }),
    /** A label for the file (its path); `prune` removes the workloads of this label that the documents no longer hold. */
    source: Type.Optional(Type.String({ minLength: 1, maxLength: 1024 })),
    prune: Type.Optional(Type.Boolean()),
    /** Only say what would change (`capsule diff`). */
    dryRun: Type.Optional(Type.Boolean()),
  },
  { additionalProperties: false },
);
export type ApplyWorkloadsRequest = Static<typeof ApplyWorkloadsRequest>;

export const WorkloadChangeAction = Type.Union([
  Type.Literal('create'),
  /** A field that needs a new VM changed: its sandbox is replaced. */
  Type.Literal('replace'),
  /** Only fields the running sandboxes can keep changed (restart, health, state, replicas: scaling adds or removes sandboxes). */
  Type.Literal('update'),
  Type.Literal('unchanged'),
  Type.Literal('remove'),
]);
export type WorkloadChangeAction = Static<typeof WorkloadChangeAction>;

export const WorkloadChange = Type.Object({
  name: Type.String(),
  action: WorkloadChangeAction,
  /** The top-level fields that differ from the applied spec. */
  fields: Type.Array(Type.String()),
});
export type WorkloadChange = Static<typeof WorkloadChange>;

export const ApplyWorkloadsResult = Type.Object({ dryRun: Type.Boolean(), changes: Type.Array(WorkloadChange) });
export type ApplyWorkloadsResult = Static<typeof ApplyWorkloadsResult>;

export const WorkloadConditionType = Type.Union([Type.Literal('Ready'), Type.Literal('Progressing'), Type.Literal('Degraded')]);
export type WorkloadConditionType = Static<typeof WorkloadConditionType>;

export const WorkloadCondition = Type.Object({
  type: WorkloadConditionType,
  status: Type.Boolean(),
  /** crash_loop, unhealthy, exited, starting, stopped, ... */
  reason: Type.String(),
  message: Type.Optional(Type.String()),
  since: Type.String({ format: 'date-time' }),
});
export type WorkloadCondition = Static<typeof WorkloadCondition>;

export const Workload = Type.Object({
  name: Type.String(),
  /** The label of the file it was applied from. */
  source: Type.Optional(Type.String()),
  /** The template its sandboxes start from (for an image workload, the one made from the image). */
  template: Type.String(),
  /** The image reference, for a workload declared with `image`. */
  image: Type.Optional(Type.String()),
  /** What it should be: `capsule workload stop|start` and the spec's `state` set it. */
  state: Type.Union([Type.Literal('running'), Type.Literal('stopped')]),
  conditions: Type.Array(WorkloadCondition),
  /** Restarts after a failure of its replicas since it was applied (a command, a VM or a failed health check), summed. */
  restarts: Type.Integer(),
  lastExit: Type.Optional(
    Type.Object({
      reason: Type.String(),
      exitCode: Type.Optional(Type.Integer()),
      message: Type.Optional(Type.String()),
      at: Type.String({ format: 'date-time' }),
    }),
  ),
  /** How many replicas (sandboxes) its spec asks for. */
  replicas: Type.Integer({ minimum: 1 }),
  /** One entry per replica that has a sandbox; during a rolling replacement, the new replicas' and the old ones'. */
  sandboxes: Type.Array(
    Type.Object({
      id: Type.String(),
      state: Type.String(),
      /** The replica's number (stable while it lives; a new replica takes the lowest free one). */
      replica: Type.Integer({ minimum: 0 }),
      /** Its command runs and its health check passes (or it has none). */
      ready: Type.Boolean(),
      /** starting, health_pending, ready, backoff, crash_loop, exited, completed, stopped. */
      phase: Type.String(),
      /** false while it runs an older spec that a rolling replacement is about to replace. */
      upToDate: Type.Boolean(),
      restarts: Type.Integer(),
    }),
  ),
  ports: Type.Array(Type.Object({ guest: Type.Integer(), host: Type.Integer(), hostIp: Type.Optional(Type.String()) })),
  volumes: Type.Array(Type.Object({ name: Type.String(), mount: Type.String(), readOnly: Type.Boolean() })),
  /** The applied spec, its defaults filled in. */
  spec: Type.Unknown(),
  createdAt: Type.String({ format: 'date-time' }),
  updatedAt: Type.String({ format: 'date-time' }),
});
export type Workload = Static<typeof Workload>;

export const WorkloadList = Type.Object({ workloads: Type.Array(Workload) });
export type WorkloadList = Static<typeof WorkloadList>;

export const WorkloadLogsQuery = Type.Object(
  {
    /** Only the last N lines. */
    tail: Type.Optional(Type.Integer({ minimum: 0, maximum: 100_000 })),
    /** Bytes of the log to skip (what a follower has read so far); the answer's `x-capsule-log-offset` is the next one. */
    offset: Type.Optional(Type.Integer({ minimum: 0 })),
    /** Only what was written at this time or later (to the second; output kept before the daemon recorded times is left out). Not with `offset`. */
    since: Type.Optional(Type.String({ format: 'date-time' })),
  },
  { additionalProperties: false },
);
export type WorkloadLogsQuery = Static<typeof WorkloadLogsQuery>;

/** The header of a log answer: the offset to ask from next time (the log's size when it was read). */
export const WORKLOAD_LOG_OFFSET_HEADER = 'x-capsule-log-offset';
