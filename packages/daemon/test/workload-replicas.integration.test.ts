// Workloads of several replicas, and workloads through a host reboot: an env
// change replaces two replicas one at a time, some replica ready at every
// moment we look, each replica's sandbox new, and the log since the change
// holds only the new replicas' output; scaling down to one keeps the
// replica that stays. A workload's resources.disk sizes its root disk. Then a simulated host reboot (daemon and every QEMU
// killed, runtime folder gone) brings back both running workloads with their
// commands. Real QEMU microVMs, real daemon; every sandbox restores the warm
// snapshot (no volume, no host port), and the one with a disk of its own boots
// again from it.
import fs from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, beforeAll, describe, expect } from 'vitest';
import { eventually, it, readEventStream, TestDaemon } from './fixture.js';

const START_TIMEOUT_MS = 120_000;

/** Serves its GREETING on port 8080 in each replica, health-checked there. */
function apiWorkload(greeting: string, replicas: number) {
  return {
    kind: 'Workload',
    name: 'api',
    template: 'base',
    command: [
      'sh',
      '-c',
      'mkdir -p /srv/www && echo "$GREETING" > /srv/www/g.txt && exec python3 -m http.server 8080 --directory /srv/www',
    ],
    env: { GREETING: greeting },
    replicas,
    restart: { policy: 'always', maxRetries: 5, backoff: '1s' },
    health: { http: { port: 8080, path: '/g.txt' }, interval: '1s', timeout: '3s', retries: 3, startPeriod: '60s' },
  };
}

/** Writes when its command started, then idles; no health check. */
const worker = {
  kind: 'Workload',
  name: 'worker',
  template: 'base',
  command: ['sh', '-c', 'date +%s%N > /tmp/started && exec sleep 100000'],
};

interface WorkloadView {
  conditions: { type: string; status: boolean; reason: string }[];
  sandboxes: { id: string; state: string; replica: number; ready: boolean; upToDate: boolean }[];
  replicas: number;
}

describe('workload replicas and host reboots (real QEMU microVMs)', () => {
  const daemon = new TestDaemon({ CAPSULE_WARM_POOL_SIZE: '0' });
  beforeAll(async () => {
    await daemon.start(START_TIMEOUT_MS);
    await daemon.waitForWarmSnapshot(600_000);
  }, 700_000);
  afterAll(() => daemon.destroy());

  const apply = async (documents: unknown[]) => {
    const res = await daemon.request('POST', '/v1/workloads/apply', { documents, source: 'replicas.yaml' });
    expect(res.status, res.text).toBe(200);
    return res.body.changes as { name: string; action: string; fields: string[] }[];
  };
  const workload = async (name: string) => (await daemon.request('GET', `/v1/workloads/${name}`)).body as WorkloadView;
  const condition = (w: WorkloadView, type: string) => w.conditions.find((c) => c.type === type);
  /** Ready, every replica of the current spec and none of an older one. */
  const settled = async (name: string, timeoutMs: number, what: string, test: (w: WorkloadView) => boolean = () => true) =>
    await eventually(
      async () => {
        const w = await workload(name);
        const done =
          condition(w, 'Ready')?.status &&
          !condition(w, 'Progressing')?.status &&
          w.sandboxes.length === w.replicas &&
          w.sandboxes.every((s) => s.ready && s.upToDate);
        return done && test(w) ? w : undefined;
      },
      timeoutMs,
      what,
    );
  const greetingOf = async (sandboxId: string) => (await daemon.api.exec(sandboxId, ['cat', '/srv/www/g.txt'])).stdout;

  it('replaces two replicas one at a time on an env change, one always ready, and scales down keeping the one that stays', async () => {
    expect(await apply([apiWorkload('one', 2)])).toEqual([{ name: 'api', action: 'create', fields: [] }]);
    const first = await settled('api', 600_000, 'two replicas ready');
    const firstIds = first.sandboxes.map((s) => s.id);
    expect(new Set(firstIds).size).toBe(2);
    expect(first.sandboxes.map((s) => s.replica).sort()).toEqual([0, 1]);

    const eventsFrom = new Date().toISOString();
    // Looked at all through the replacement: some replica is ready each time.
    let watching = true;
    let fewestReady = Number.POSITIVE_INFINITY;
    let looks = 0;
    const watcher = (async () => {
      while (watching) {
        const w = await workload('api');
        fewestReady = Math.min(fewestReady, w.sandboxes.filter((s) => s.ready).length);
        looks++;
        await sleep(250);
      }
    })();
    try {
      expect(await apply([apiWorkload('two', 2)])).toEqual([{ name: 'api', action: 'replace', fields: ['env'] }]);
      const replaced = await settled('api', 900_000, 'both replicas replaced', (w) => w.sandboxes.every((s) => !firstIds.includes(s.id)));
      watching = false;
      await watcher;
      expect(looks).toBeGreaterThan(10);
      expect(fewestReady).toBeGreaterThanOrEqual(1);
      for (const sandbox of replaced.sandboxes) expect(await greetingOf(sandbox.id)).toBe('two\n');
      for (const id of firstIds) expect(daemon.qemuPids(id)).toEqual([]);

      // The log since the change holds the new replicas' starts only; a time to come, nothing.
      const logsSince = async (since: string) => await daemon.request('GET', `/v1/workloads/api/logs?since=${encodeURIComponent(since)}`);
      const sinceChange = (await logsSince(eventsFrom)).text;
      expect(sinceChange.match(/^\[capsule [^\]]+\] replica \d: starting /gm)).toHaveLength(2);
      expect((await logsSince(new Date(Date.now() + 60_000).toISOString())).text).toBe('');
      expect((await logsSince('yesterday')).status).toBe(400);

      // Scaling down replaces nothing: the replica that stays keeps its sandbox.
      const keptIds = replaced.sandboxes.map((s) => s.id);
      expect(await apply([apiWorkload('two', 1)])).toEqual([{ name: 'api', action: 'update', fields: ['replicas'] }]);
      const scaled = await settled('api', 120_000, 'one replica left', (w) => w.sandboxes.length === 1);
      expect(keptIds).toContain(scaled.sandboxes[0]!.id);

      // Each step is an event with its reason: two replicas added and two removed for the drift, one removed for the scale-down.
      const events = await readEventStream(daemon, `/v1/events?type=workload&since=${encodeURIComponent(eventsFrom)}`);
      expect(events.match(/"type":"workload\.replaced"[^\n]*"reason":"drift"/g)).toHaveLength(4);
      expect(events.match(/"type":"workload\.scaled"[^\n]*"reason":"scale_down"/g)).toHaveLength(1);
    } finally {
      watching = false;
      await watcher;
    }
  }, 1_800_000);

  it('gives a workload the root disk its resources ask for, and replaces its VM when that changes', async () => {
    const roomy = (disk: string) => ({ ...worker, name: 'roomy', resources: { disk } });
    await apply([roomy('8G')]);
    const made = await settled('roomy', 600_000, 'roomy ready');
    const sizeMiB = Number(
      (await daemon.api.exec(made.sandboxes[0]!.id, ['sh', '-c', "df -B1M --output=size / | tail -1 | tr -d ' '"])).stdout,
    );
    expect(sizeMiB).toBeGreaterThan(7500);
    expect(sizeMiB).toBeLessThanOrEqual(8192);
    const plan = await daemon.request('POST', '/v1/workloads/apply', { documents: [roomy('9G')], source: 'replicas.yaml', dryRun: true });
    expect(plan.body.changes).toEqual([{ name: 'roomy', action: 'replace', fields: ['resources'] }]);
    expect((await daemon.request('DELETE', '/v1/workloads/roomy')).status).toBe(204);
  }, 900_000);

  it('brings back both running workloads after a simulated host reboot', async () => {
    await apply([apiWorkload('two', 1), worker]);
    const api = await settled('api', 120_000, 'api ready');
    const work = await settled('worker', 600_000, 'worker ready');
    const startedBefore = (await daemon.api.exec(work.sandboxes[0]!.id, ['cat', '/tmp/started'])).stdout;
    expect(startedBefore).toMatch(/^\d+\n$/);

    // The reboot: the daemon and every QEMU die at once, and /run goes with the host.
    await daemon.kill9();
    for (const pid of daemon.qemuPids()) process.kill(pid, 'SIGKILL');
    await eventually(() => (daemon.qemuPids().length === 0 ? true : undefined), 30_000, 'every QEMU to be gone');
    fs.rmSync(daemon.runtimeDir, { recursive: true, force: true });
    await daemon.start(START_TIMEOUT_MS);

    // The same sandboxes boot again, and each workload's command is started again in its own.
    const apiBack = await settled('api', 600_000, 'api back', (w) => w.sandboxes[0]?.state === 'running');
    expect(apiBack.sandboxes.map((s) => s.id)).toEqual(api.sandboxes.map((s) => s.id));
    expect(await greetingOf(apiBack.sandboxes[0]!.id)).toBe('two\n');
    const workBack = await settled('worker', 600_000, 'worker back', (w) => w.sandboxes[0]?.state === 'running');
    expect(workBack.sandboxes.map((s) => s.id)).toEqual(work.sandboxes.map((s) => s.id));
    const startedAfter = await eventually(
      async () => {
        const read = await daemon.api.exec(workBack.sandboxes[0]!.id, ['cat', '/tmp/started']);
        // The shell creates the file before date writes into it: an empty read is the command starting, not done.
        return read.exitCode === 0 && /^\d+\n$/.test(read.stdout) && read.stdout !== startedBefore ? read.stdout : undefined;
      },
      120_000,
      "worker's command to run again",
    );
    expect(Number(startedAfter)).toBeGreaterThan(Number(startedBefore));

    for (const name of ['api', 'worker']) expect((await daemon.request('DELETE', `/v1/workloads/${name}`)).status).toBe(204);
    expect(await daemon.api.sandboxes()).toEqual([]);
  }, 1_800_000);
});
