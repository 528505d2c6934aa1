// Declarative workloads with real VMs: a file refused whole when two of its
// workloads claim one host port; a web workload (python3 on a host port, an
// HTTP health check) becomes Ready and serves; a command that exits at once
// ends in crash_loop after maxRetries; an unchanged apply keeps every sandbox;
// a daemon kill -9 changes nothing; a killed QEMU comes back, and so does a
// command whose health check fails; an env change
// replaces only its workload; state stopped then running keeps a volume's
// data; a workload from an image pulled from a real registry serves with the
// image's Entrypoint + Cmd. Only the volume's workload and the image's boot
// cold. Real QEMU microVMs, real daemon, real registry.
import http from 'node:http';
import { afterAll, beforeAll, describe, expect } from 'vitest';
import { eventually, it, readEventStream, TestDaemon } from './fixture.js';
import { pushImage, removeAllImages, webImage } from './oci/test-images.js';
import { TestRegistry } from './oci/test-registry.js';

const START_TIMEOUT_MS = 120_000;
/** Ports of the host's loopback, away from the usual ones and other test files'. */
const WEB_PORT = 20_000 + Math.floor(Math.random() * 20_000);
const SITE_PORT = WEB_PORT + 1;

/** Serves its GREETING on a host port; no volume, so that each of its sandboxes restores the warm snapshot. */
function webWorkload(greeting: string) {
  return {
    kind: 'Workload',
    name: 'web',
    template: 'base',
    command: [
      'sh',
      '-c',
      'mkdir -p /srv/www && echo "$GREETING" > /srv/www/greeting.txt && exec python3 -m http.server 8080 --directory /srv/www',
    ],
    env: { GREETING: greeting },
    ports: [{ guest: 8080, host: WEB_PORT }],
    restart: { policy: 'always', maxRetries: 5, backoff: '1s' },
    health: { http: { port: 8080, path: '/greeting.txt' }, interval: '1s', timeout: '2s', retries: 3, startPeriod: '30s' },
  };
}

/** Holds a volume (its sandboxes boot cold). */
function dataWorkload(state: 'running' | 'stopped') {
  return {
    kind: 'Workload',
    name: 'data',
    template: 'base',
    command: ['sh', '-c', 'while true; do sleep 3600; done'],
    volumes: [{ name: 'workload-data', mount: '/data', size: '64M' }],
    state,
  };
}

const crashing = {
  kind: 'Workload',
  name: 'crashing',
  template: 'base',
  command: ['sh', '-c', 'echo boom; exit 3'],
  restart: { policy: 'on-failure', maxRetries: 2, backoff: '200ms' },
};

/** GET of a host port on loopback: status and body, or undefined while nothing answers. */
async function fetchHost(path: string, port = WEB_PORT): Promise<{ status: number; body: string } | undefined> {
  return await new Promise((resolve) => {
    const req = http.get({ host: '127.0.0.1', port, path, timeout: 5000 }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => (body += chunk));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
      res.on('error', () => resolve(undefined));
    });
    req.on('error', () => resolve(undefined));
    req.on('timeout', () => req.destroy());
  });
}

describe('declarative workloads (real QEMU microVMs)', () => {
  const daemon = new TestDaemon({ CAPSULE_WARM_POOL_SIZE: '0' });
  beforeAll(async () => {
    await daemon.start(START_TIMEOUT_MS);
    await daemon.waitForWarmSnapshot(600_000);
  }, 700_000);
  afterAll(() => daemon.destroy());

  const apply = async (documents: unknown[], dryRun = false) => {
    const res = await daemon.request('POST', '/v1/workloads/apply', { documents, source: 'test.yaml', dryRun });
    expect(res.status, res.text).toBe(200);
    return res.body.changes as { name: string; action: string; fields: string[] }[];
  };
  const workload = async (name: string) => (await daemon.request('GET', `/v1/workloads/${name}`)).body;
  const condition = (w: { conditions: { type: string; status: boolean; reason: string }[] }, type: string) =>
    w.conditions.find((c) => c.type === type);
  const ready = async (name: string, timeoutMs = 240_000) =>
    await eventually(
      async () => {
        const w = await workload(name);
        return condition(w, 'Ready')?.status ? w : undefined;
      },
      timeoutMs,
      `${name} to be Ready`,
    );

  it('refuses a whole file before anything starts when two workloads claim one host port', async () => {
    const other = { kind: 'Workload', name: 'other', template: 'base', ports: [{ guest: 80, host: WEB_PORT }] };
    const res = await daemon.request('POST', '/v1/workloads/apply', { documents: [webWorkload('one'), other] });
    expect(res.status).toBe(400);
    expect(res.body.error.message).toContain(
      `document 2 (other): ports[0].host: host port ${WEB_PORT} is also claimed by document 1 (web)`,
    );
    expect((await daemon.request('GET', '/v1/workloads')).body.workloads).toEqual([]);
    expect(await daemon.api.sandboxes()).toEqual([]);
  });

  it('keeps services running through re-applies, a daemon kill -9, a QEMU crash, an env change and a stop', async () => {
    const eventsFrom = new Date().toISOString();
    expect(await apply([webWorkload('one'), crashing, dataWorkload('running')])).toEqual([
      { name: 'web', action: 'create', fields: [] },
      { name: 'crashing', action: 'create', fields: [] },
      { name: 'data', action: 'create', fields: [] },
    ]);

    // Ready once its health check passes, and serving on the host port.
    const first = await ready('web');
    const webSandbox = first.sandboxes[0].id as string;
    expect(await fetchHost('/greeting.txt')).toEqual({ status: 200, body: 'one\n' });

    // Another file's workload may not take its host port: refused before anything is made, naming both.
    const other = { kind: 'Workload', name: 'other', template: 'base', ports: [{ guest: 80, host: WEB_PORT }] };
    const clash = await daemon.request('POST', '/v1/workloads/apply', { documents: [other], source: 'other.yaml' });
    expect(clash.status).toBe(409);
    expect(clash.body.error).toMatchObject({ code: 'host_port_unavailable' });
    expect(clash.body.error.message).toContain(`document 1 (other): ports[0].host: host port ${WEB_PORT} is held by workload web`);
    expect((await daemon.request('GET', '/v1/workloads/other')).status).toBe(404);

    // A command that exits at once: restarted maxRetries times, then left Degraded.
    const degraded = await eventually(
      async () => {
        const w = await workload('crashing');
        return condition(w, 'Degraded')?.status ? w : undefined;
      },
      120_000,
      'crashing to be Degraded',
    );
    expect(condition(degraded, 'Degraded')?.reason).toBe('crash_loop');
    expect(degraded.restarts).toBe(2);
    expect(degraded.lastExit).toMatchObject({ reason: 'exited', exitCode: 3 });
    const crashingSandbox = degraded.sandboxes[0].id as string;
    const logs = await daemon.request('GET', '/v1/workloads/crashing/logs');
    expect(logs.text.match(/^boom$/gm)).toHaveLength(3);

    // Applied again unchanged: nothing is replaced.
    const dataSandbox = (await ready('data')).sandboxes[0].id as string;
    expect(await apply([webWorkload('one'), crashing, dataWorkload('running')])).toEqual([
      { name: 'web', action: 'unchanged', fields: [] },
      { name: 'crashing', action: 'unchanged', fields: [] },
      { name: 'data', action: 'unchanged', fields: [] },
    ]);

    // A daemon kill -9 changes nothing: the same VM serves, still Ready, followed again.
    const qemuBefore = daemon.qemuPids(webSandbox);
    await daemon.kill9();
    await daemon.start(START_TIMEOUT_MS);
    expect(daemon.qemuPids(webSandbox)).toEqual(qemuBefore);
    expect(await fetchHost('/greeting.txt')).toEqual({ status: 200, body: 'one\n' });
    await eventually(async () => ((await workload('web')).sandboxes[0]?.id === webSandbox ? true : undefined), 30_000, 'web reattached');
    expect(condition(await workload('web'), 'Ready')?.status).toBe(true);
    expect((await workload('web')).restarts).toBe(0);

    // Its QEMU killed: a new VM within the backoff.
    process.kill(qemuBefore[0]!, 'SIGKILL');
    const revived = await eventually(
      async () => {
        const w = await workload('web');
        return w.sandboxes[0]?.id !== webSandbox && condition(w, 'Ready')?.status ? w : undefined;
      },
      180_000,
      'web back after its QEMU was killed',
    );
    expect(revived.restarts).toBe(1);
    expect(await fetchHost('/greeting.txt')).toEqual({ status: 200, body: 'one\n' });

    // Its health endpoint failing: the command is killed and started again in the same VM, which makes the file anew.
    const removed = await daemon.api.exec(revived.sandboxes[0].id, ['rm', '/srv/www/greeting.txt'], { user: 'root' });
    expect(removed.exitCode, removed.stderr).toBe(0);
    const healed = await eventually(
      async () => {
        const w = await workload('web');
        return w.restarts === 2 && condition(w, 'Ready')?.status ? w : undefined;
      },
      120_000,
      'web restarted after failing its health check',
    );
    expect(healed.sandboxes[0].id).toBe(revived.sandboxes[0].id);
    expect(healed.lastExit).toMatchObject({ reason: 'unhealthy' });

    // An env change: diff names it, apply replaces only that workload.
    expect(await apply([webWorkload('two'), crashing, dataWorkload('running')], true)).toEqual([
      { name: 'web', action: 'replace', fields: ['env'] },
      { name: 'crashing', action: 'unchanged', fields: [] },
      { name: 'data', action: 'unchanged', fields: [] },
    ]);
    await apply([webWorkload('two'), crashing, dataWorkload('running')]);
    const replaced = await eventually(
      async () => {
        const w = await workload('web');
        return w.sandboxes[0]?.id !== revived.sandboxes[0].id && condition(w, 'Ready')?.status ? w : undefined;
      },
      180_000,
      'web replaced',
    );
    expect(replaced.sandboxes).toHaveLength(1);
    expect(await fetchHost('/greeting.txt')).toEqual({ status: 200, body: 'two\n' });
    expect((await workload('crashing')).sandboxes[0].id).toBe(crashingSandbox);
    expect((await workload('data')).sandboxes[0].id).toBe(dataSandbox);

    // state: stopped keeps the disk and the volume; running again finds the volume's data.
    const wrote = await daemon.api.exec(dataSandbox, ['sh', '-c', 'echo kept > /data/kept.txt && sync'], { user: 'root' });
    expect(wrote.exitCode, wrote.stderr).toBe(0);
    await apply([webWorkload('two'), crashing, dataWorkload('stopped')]);
    await eventually(async () => ((await workload('data')).sandboxes[0]?.state === 'stopped' ? true : undefined), 120_000, 'data stopped');
    expect(daemon.qemuPids(dataSandbox)).toEqual([]);
    await apply([webWorkload('two'), crashing, dataWorkload('running')]);
    expect((await ready('data', 300_000)).sandboxes[0].id).toBe(dataSandbox);
    const read = await daemon.api.exec(dataSandbox, ['cat', '/data/kept.txt']);
    expect(read.stdout).toBe('kept\n');

    // Each action is in the event history with its reason.
    const events = await readEventStream(daemon, `/v1/events?type=workload&since=${encodeURIComponent(eventsFrom)}`);
    for (const expected of [
      'workload.created',
      'workload.ready',
      'workload.unhealthy',
      'workload.degraded',
      'workload.replaced',
      'workload.stopped',
    ])
      expect(events).toContain(`"type":"${expected}"`);
    expect(events).toContain('"reason":"crash_loop"');

    for (const name of ['web', 'crashing', 'data']) expect((await daemon.request('DELETE', `/v1/workloads/${name}`)).status).toBe(204);
    expect(await daemon.api.sandboxes()).toEqual([]);
  }, 1_500_000);

  it("runs a workload from an image pulled from a registry, the image's Entrypoint + Cmd its service", async () => {
    const registry = await TestRegistry.start();
    try {
      await pushImage(registry, 'e2e/site', 'v1', webImage());
      const ref = `${registry.host}/e2e/site:v1`;
      const eventsFrom = new Date().toISOString();
      const site = {
        kind: 'Workload',
        name: 'site',
        image: ref,
        ports: [{ guest: 8081, host: SITE_PORT }],
        health: { http: { port: 8081, path: '/' }, interval: '1s', timeout: '2s', retries: 3, startPeriod: '60s' },
      };
      expect(await apply([site])).toEqual([{ name: 'site', action: 'create', fields: [] }]);
      expect(await ready('site', 600_000)).toMatchObject({ image: ref, template: expect.stringMatching(/^workload-image-[0-9a-f]{16}$/) });
      expect(await fetchHost('/', SITE_PORT)).toEqual({ status: 200, body: 'hello from httpd\n' });
      const events = await readEventStream(daemon, `/v1/events?type=workload&since=${encodeURIComponent(eventsFrom)}`);
      expect(events).toContain('"type":"workload.pulling"');
      // Once no workload names the image, the template made for it goes with the next resync (the image stays).
      const { template } = (await daemon.request('GET', '/v1/workloads/site')).body as { template: string };
      expect((await daemon.request('DELETE', '/v1/workloads/site')).status).toBe(204);
      await eventually(async () => ((await daemon.request('GET', `/v1/templates/${template}`)).status === 404 ? true : undefined), 60_000);
      expect((await daemon.api.images()).length).toBeGreaterThan(0);
    } finally {
      await daemon.request('DELETE', '/v1/workloads/site');
      await removeAllImages(daemon);
      await registry.stop();
    }
  }, 900_000);
});
