// What a workload's replicas should do next, and what they add up to: pure
// functions of the replicas' rows, so that rolling replacement, scaling and
// the conditions are decided in one place and tested without VMs. Nothing
// here touches a sandbox, the store or a clock.
import type { WorkloadCondition, WorkloadConditionType } from '@capsule/protocol';

/** starting, health_pending, ready, backoff: on its way; crash_loop, exited, completed: left alone until someone acts; stopped. */
export type ReplicaPhase = 'starting' | 'health_pending' | 'ready' | 'backoff' | 'crash_loop' | 'exited' | 'completed' | 'stopped';

export interface ReplicaView {
  slot: number;
  /** Made for the workload's current spec (its VM fields). */
  upToDate: boolean;
  phase: string;
  message?: string | null | undefined;
}

export type ReplicaStep =
  /** drift: a new replica to take over from one of an older spec; scale_up: one more. */
  | { action: 'add'; slot: number; reason: 'drift' | 'scale_up' }
  | { action: 'remove'; slot: number; reason: 'drift' | 'scale_down' }
  /** A new replica is on its way: the next step waits for it to be ready. */
  | { action: 'wait' }
  | { action: 'done' };

/** A replica the reconciler leaves alone until an apply, start or restart gives it a new chance. */
export function isSettled(phase: string): boolean {
  return phase === 'crash_loop' || phase === 'exited' || phase === 'completed';
}

/**
 * The next step towards `desired` replicas of the current spec. A rolling
 * replacement never lowers the number of ready replicas below `desired`: it
 * adds one new replica, waits until it is ready, then removes one old one.
 * An old replica that serves nothing goes at once. When the replicas cannot
 * run side by side (`exclusive`: a host port or a read-write volume, which
 * one VM holds), an old one goes first and its successor starts after it.
 * Scaling alone adds or removes replicas and replaces none.
 */
export function nextReplicaStep(replicas: readonly ReplicaView[], desired: number, exclusive: boolean): ReplicaStep {
  const current = replicas.filter((r) => r.upToDate);
  const outdated = replicas.filter((r) => !r.upToDate);
  const ready = replicas.filter((r) => r.phase === 'ready').length;
  const idleOutdated = outdated.filter((r) => r.phase !== 'ready');
  if (idleOutdated.length > 0) return { action: 'remove', slot: leastUseful(idleOutdated), reason: 'drift' };
  if (current.length > desired) return { action: 'remove', slot: leastUseful(current), reason: 'scale_down' };
  if (outdated.length > 0) {
    if (exclusive || ready > desired) return { action: 'remove', slot: leastUseful(outdated), reason: 'drift' };
    if (current.length < desired && current.every((r) => r.phase === 'ready'))
      return { action: 'add', slot: freeSlot(replicas), reason: 'drift' };
    return { action: 'wait' };
  }
  if (current.length < desired) return { action: 'add', slot: freeSlot(replicas), reason: 'scale_up' };
  return { action: 'done' };
}

/** The replica whose removal costs least: one that is not ready, else the highest number. */
function leastUseful(replicas: readonly ReplicaView[]): number {
  const sorted = [...replicas].sort((a, b) => Number(a.phase === 'ready') - Number(b.phase === 'ready') || b.slot - a.slot);
  return sorted[0]!.slot;
}

function freeSlot(replicas: readonly ReplicaView[]): number {
  let slot = 0;
  while (replicas.some((r) => r.slot === slot)) slot++;
  return slot;
}

export type ConditionChange = Partial<
  Record<WorkloadConditionType, Pick<WorkloadCondition, 'status' | 'reason'> & { message?: string | undefined }>
>;

/**
 * A workload's conditions from its replicas: Ready when at least `desired`
 * replicas are ready (all of them, outside a rolling replacement);
 * Degraded when a replica of the current spec gave up (crash_loop) or failed
 * under its restart policy; Progressing while replicas are made, replaced,
 * removed or restarted.
 */
export function workloadConditions(state: 'running' | 'stopped', desired: number, replicas: readonly ReplicaView[]): ConditionChange {
  if (state === 'stopped')
    return {
      Ready: { status: false, reason: 'stopped' },
      Progressing: { status: false, reason: 'stopped' },
      Degraded: { status: false, reason: 'stopped' },
    };
  const current = replicas.filter((r) => r.upToDate);
  const ready = replicas.filter((r) => r.phase === 'ready').length;
  const readyMessage = `${ready} of ${desired} replica${desired === 1 ? '' : 's'} ready`;
  const failed = current.find((r) => r.phase === 'crash_loop' || r.phase === 'exited');
  const completed = current.length > 0 && current.every((r) => r.phase === 'completed');
  const unready = current.find((r) => r.phase !== 'ready');
  const outdated = replicas.length - current.length;

  let progressing: { status: boolean; reason: string; message?: string };
  if (outdated > 0) progressing = { status: true, reason: 'rolling', message: `${outdated} replica(s) of an older spec left to replace` };
  else if (current.length !== desired)
    progressing = { status: true, reason: 'scaling', message: `${current.length} of ${desired} replicas` };
  else if (unready && !isSettled(unready.phase))
    progressing = { status: true, reason: unready.phase, message: `replica ${unready.slot}: ${unready.message ?? unready.phase}` };
  else if (failed) progressing = { status: false, reason: failed.phase === 'crash_loop' ? 'crash_loop' : 'not_restarted' };
  else if (completed) progressing = { status: false, reason: 'not_restarted' };
  else progressing = { status: false, reason: 'ready' };

  return {
    Ready:
      ready >= desired
        ? { status: true, reason: 'running', message: readyMessage }
        : { status: false, reason: completed ? 'completed' : (unready?.phase ?? 'starting'), message: readyMessage },
    Progressing: progressing,
    Degraded: failed
      ? {
          status: true,
          reason: failed.phase,
          message: `replica ${failed.slot}: ${failed.message ?? failed.phase}`,
        }
      : { status: false, reason: 'none' },
  };
}
