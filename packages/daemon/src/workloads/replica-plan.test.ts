import { describe, expect, it } from 'vitest';
import { nextReplicaStep, type ReplicaView, workloadConditions } from './replica-plan.js';

const replica = (slot: number, upToDate: boolean, phase = 'ready'): ReplicaView => ({ slot, upToDate, phase });

/**
 * Plays a rollout to its end: each step is applied, and a replica added
 * becomes ready before the next look. Returns the steps and the fewest
 * replicas that were ready at any moment.
 */
function rollout(start: ReplicaView[], desired: number, exclusive: boolean) {
  let replicas = [...start];
  const steps: string[] = [];
  let fewestReady = Number.POSITIVE_INFINITY;
  for (let i = 0; i < 50; i++) {
    fewestReady = Math.min(fewestReady, replicas.filter((r) => r.phase === 'ready').length);
    const step = nextReplicaStep(replicas, desired, exclusive);
    if (step.action === 'done') return { steps, fewestReady, replicas };
    if (step.action === 'wait') {
      // The new replica passes its health check.
      replicas = replicas.map((r) => ({ ...r, phase: 'ready' }));
      steps.push('ready');
    } else if (step.action === 'add') {
      replicas.push(replica(step.slot, true, 'starting'));
      steps.push(`add ${step.slot} (${step.reason})`);
    } else {
      replicas = replicas.filter((r) => r.slot !== step.slot);
      steps.push(`remove ${step.slot} (${step.reason})`);
    }
  }
  throw new Error(`no end after 50 steps: ${steps.join(', ')}`);
}

describe('the replica planner', () => {
  it('replaces replicas one at a time, each new one ready before an old one goes', () => {
    const { steps, fewestReady, replicas } = rollout([replica(0, false), replica(1, false)], 2, false);
    expect(steps).toEqual(['add 2 (drift)', 'ready', 'remove 1 (drift)', 'add 1 (drift)', 'ready', 'remove 0 (drift)']);
    expect(fewestReady).toBe(2);
    expect(replicas.every((r) => r.upToDate)).toBe(true);
  });

  it('with a single replica keeps it serving until its successor is ready', () => {
    const { steps, fewestReady } = rollout([replica(0, false)], 1, false);
    expect(steps).toEqual(['add 1 (drift)', 'ready', 'remove 0 (drift)']);
    expect(fewestReady).toBe(1);
  });

  it('stops the old replica before starting the new one when they cannot run side by side (host port, read-write volume)', () => {
    expect(rollout([replica(0, false)], 1, true).steps).toEqual(['remove 0 (drift)', 'add 0 (scale_up)']);
  });

  it('scales up and down without replacing the replicas that stay', () => {
    expect(rollout([replica(0, true)], 3, false).steps).toEqual(['add 1 (scale_up)', 'add 2 (scale_up)']);
    // The one not ready goes first, then the highest number.
    expect(rollout([replica(0, true), replica(1, true, 'backoff'), replica(2, true)], 1, false).steps).toEqual([
      'remove 1 (scale_down)',
      'remove 2 (scale_down)',
    ]);
  });

  it('scales and replaces at once without fewer ready replicas than asked for', () => {
    const up = rollout([replica(0, false), replica(1, false)], 3, false);
    expect(up.fewestReady).toBe(2);
    expect(up.replicas.filter((r) => r.upToDate)).toHaveLength(3);
    const down = rollout([replica(0, false), replica(1, false)], 1, false);
    expect(down.steps[0]).toBe('remove 1 (drift)');
    expect(down.fewestReady).toBe(1);
    expect(down.replicas).toEqual([expect.objectContaining({ upToDate: true })]);
  });

  it('removes an old replica that serves nothing at once, and waits for a new one that is not ready', () => {
    expect(nextReplicaStep([replica(0, false, 'crash_loop'), replica(1, false)], 2, false)).toEqual({
      action: 'remove',
      slot: 0,
      reason: 'drift',
    });
    expect(nextReplicaStep([replica(0, false), replica(1, true, 'health_pending')], 1, false)).toEqual({ action: 'wait' });
    // A new replica that crash-loops holds the rollout: the old one keeps serving.
    expect(nextReplicaStep([replica(0, false), replica(1, true, 'crash_loop')], 1, false)).toEqual({ action: 'wait' });
  });
});

describe("a workload's conditions from its replicas", () => {
  it('is Ready when as many replicas as asked for are ready', () => {
    expect(workloadConditions('running', 2, [replica(0, true), replica(1, true)])).toMatchObject({
      Ready: { status: true, message: '2 of 2 replicas ready' },
      Progressing: { status: false },
      Degraded: { status: false },
    });
    expect(workloadConditions('running', 2, [replica(0, true), replica(1, true, 'health_pending')])).toMatchObject({
      Ready: { status: false, reason: 'health_pending', message: '1 of 2 replicas ready' },
      Progressing: { status: true, reason: 'health_pending' },
    });
  });

  it('stays Ready and Progressing through a rolling replacement', () => {
    expect(workloadConditions('running', 1, [replica(0, false), replica(1, true, 'starting')])).toMatchObject({
      Ready: { status: true },
      Progressing: { status: true, reason: 'rolling' },
    });
  });

  it('is Degraded when a replica crash-loops, naming it', () => {
    const crashed = { ...replica(1, true, 'crash_loop'), message: '3 failures in a row' };
    expect(workloadConditions('running', 2, [replica(0, true), crashed])).toMatchObject({
      Ready: { status: false, reason: 'crash_loop' },
      Progressing: { status: false, reason: 'crash_loop' },
      Degraded: { status: true, reason: 'crash_loop', message: 'replica 1: 3 failures in a row' },
    });
  });

  it('is neither when stopped, and Ready false with completed when every replica ended well', () => {
    expect(workloadConditions('stopped', 2, [replica(0, true)])).toMatchObject({
      Ready: { status: false, reason: 'stopped' },
      Progressing: { status: false, reason: 'stopped' },
    });
    expect(workloadConditions('running', 1, [replica(0, true, 'completed')])).toMatchObject({
      Ready: { status: false, reason: 'completed' },
      Progressing: { status: false, reason: 'not_restarted' },
      Degraded: { status: false },
    });
  });
});
