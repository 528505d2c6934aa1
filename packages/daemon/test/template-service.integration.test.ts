// End to end, with a real registry and real QEMU microVMs: a template's START
// runs a server before its warm snapshot and READY waits for it, so a sandbox
// from it answers at once; a READY that never passes fails with its output;
// START without a command runs the image's Entrypoint + Cmd; `template
// inspect` shows all of it. Builds cache each step and rerun only from the
// first changed one (also after a failing step); `image prune` collects
// untagged images' blobs and the build-step cache.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect } from 'vitest';
import { runCli, sandboxTest, sharedCacheDir, TestDaemon } from './fixture.js';
import { image, layer, marker, pushImage, removeAllImages, webImage } from './oci/test-images.js';
import { TestRegistry } from './oci/test-registry.js';

function events(
  text: string,
): { type: string; code?: string; message?: string; text?: string; index?: number; instruction?: string; cached?: boolean }[] {
  return text
    .trim()
    .split('\n')
    .filter(Boolean)
    .map((line) => JSON.parse(line) as { type: string });
}

describe('template services and the build cache (real registry, real QEMU microVMs)', () => {
  let registry: TestRegistry;
  let ref: string;
  const daemon = new TestDaemon({ CAPSULE_WARM_POOL_SIZE: '0' });
  const it = sandboxTest(daemon);
  const work = fs.mkdtempSync(path.join(os.tmpdir(), 'capsule-build-'));
  const capsule = (args: string[]) => runCli(daemon, args, 300_000);
  const exec = (id: string, script: string) => daemon.api.exec(id, ['/bin/sh', '-c', script]);
  const build = async (name: string, capsulefile: string) =>
    events((await daemon.request('POST', '/v1/templates/build', { name, capsulefile, contextDir: work })).text);

  beforeAll(async () => {
    registry = await TestRegistry.start();
    await daemon.start();
    const img = webImage();
    await pushImage(registry, 'e2e/web', 'v1', img);
    ref = `${registry.host}/e2e/web:v1`;
  });
  afterAll(async () => {
    await removeAllImages(daemon).catch(() => undefined);
    await daemon.request('POST', '/v1/images/prune').catch(() => undefined);
    await daemon.destroy();
    await registry?.stop();
    fs.rmSync(work, { recursive: true, force: true });
  });

  it('starts START before the warm snapshot once READY passes, so a sandbox answers at once', async ({ newSandbox }) => {
    // The server comes up two seconds after START: READY has to be retried, and a sandbox
    // whose server were started at create could not answer its first request.
    fs.writeFileSync(
      path.join(work, 'Capsulefile'),
      [
        `FROM ${ref}`,
        'RUN echo "served by the template" > /srv/www/index.html',
        'START echo started >> /tmp/starts; sleep 2; exec httpd -f -p 8080 -h /srv/www',
        'READY wget -q -O /dev/null http://127.0.0.1:8080/',
      ].join('\n'),
    );
    const built = await capsule(['template', 'build', '-f', path.join(work, 'Capsulefile'), '-t', 'served']);
    expect(built.status, built.stderr).toBe(0);
    expect(built.stdout).toBe('served\n');

    const sandbox = await newSandbox({ template: 'served' });
    const first = await exec(sandbox.id, 'wget -q -O - http://127.0.0.1:8080/; cat /tmp/starts');
    expect(first.stderr).toBe('');
    expect(first.stdout).toBe('served by the template\nstarted\n');
    // The agent of the sandbox knows the START process (it was started before the snapshot) by its tag.
    const ps = await capsule(['top', sandbox.id]);
    expect(ps.status, ps.stderr).toBe(0);
    expect(ps.stdout).toMatch(/^\d+ +capsule-start +\S+ +\/bin\/sh -c 'echo started/m);
    // A second sandbox runs its own copy of the same started server.
    const other = await newSandbox({ template: 'served' });
    expect((await exec(other.id, 'wget -q -O - http://127.0.0.1:8080/')).stdout).toBe('served by the template\n');

    const inspect = await capsule(['template', 'inspect', 'served', '--json']);
    expect(inspect.status, inspect.stderr).toBe(0);
    const details = JSON.parse(inspect.stdout);
    expect(details).toMatchObject({
      name: 'served',
      source: 'capsulefile',
      from: ref,
      startCommand: ['/bin/sh', '-c', 'echo started >> /tmp/starts; sleep 2; exec httpd -f -p 8080 -h /srv/www'],
      readyCommand: ['/bin/sh', '-c', 'wget -q -O /dev/null http://127.0.0.1:8080/'],
      readyTimeoutMs: 60_000,
      warmSnapshot: 'ready',
    });
    expect(details.imageDigest).toMatch(/^sha256:/);
    expect(details.rootfsDiskBytes).toBeGreaterThan(0);
    expect(details.warmSnapshotDiskBytes).toBeGreaterThan(0);
    const human = await capsule(['template', 'inspect', 'served']);
    expect(human.stdout).toMatch(/^Start +echo started >> \/tmp\/starts; sleep 2; exec httpd -f -p 8080 -h \/srv\/www$/m);
    expect(human.stdout).toMatch(/^Ready +wget -q -O \/dev\/null http:\/\/127.0.0.1:8080\/ \(retried for 1m 0s\)$/m);
    expect(human.stdout).toMatch(/^Warm snapshot +ready \(/m);
  }, 400_000);

  it('fails a template whose READY never passes, with READY and START output', async () => {
    fs.writeFileSync(
      path.join(work, 'Capsulefile'),
      [`FROM ${ref}`, 'START echo "listening soon"; exec sleep 1000', 'READY --timeout=3s echo "not yet" >&2; test -e /tmp/never'].join(
        '\n',
      ),
    );
    const built = await capsule(['template', 'build', '-f', path.join(work, 'Capsulefile'), '-t', 'never-ready']);
    expect(built.status).not.toBe(0);
    expect(built.stderr).toMatch(
      /the warm snapshot of never-ready failed: READY \(echo "not yet" >&2; test -e \/tmp\/never\) did not pass within 3 s \(\d+ attempts\); the last one exited with code 1:\nnot yet\nSTART \(.*\) output:\nlistening soon/,
    );
    const details = await daemon.api.template('never-ready');
    expect(details.warmSnapshot).toBe('failed');
    expect(details.warmSnapshotError).toMatch(/did not pass within 3 s/);
    // A cold create (other resources than the snapshot's) runs START and READY too, and fails the same way.
    const cold = await daemon.request('POST', '/v1/sandboxes', { template: 'never-ready', memoryMiB: 384 });
    expect(cold.status).toBe(422);
    expect(cold.body.error).toMatchObject({ code: 'template_start_failed' });
    expect(cold.body.error.message).toMatch(/did not pass within 3 s/);

    // READY without START is refused before anything boots.
    const readyAlone = (await build('ready-alone', `FROM ${ref}\nREADY true\n`)).at(-1)!;
    expect(readyAlone).toMatchObject({ type: 'error', code: 'invalid_argument', message: 'READY needs a START command' });
  }, 400_000);

  it("runs the image's Entrypoint + Cmd for a bare --start", async ({ newSandbox }) => {
    const created = await capsule([
      'template',
      'create',
      'web',
      '--image',
      ref,
      '--start',
      '--ready',
      'wget -q -O /dev/null http://127.0.0.1:8081/',
    ]);
    expect(created.status, created.stderr).toBe(0);
    const details = await daemon.api.template('web');
    expect(details).toMatchObject({
      source: 'image',
      startCommand: ['/bin/httpd', '-f', '-h', '/srv/www', '-p', '8081'],
      warmSnapshot: 'ready',
    });
    const sandbox = await newSandbox({ template: 'web' });
    expect((await exec(sandbox.id, 'wget -q -O - http://127.0.0.1:8081/')).stdout).toBe('hello from httpd\n');
    // A ready check needs a start command.
    const refused = await daemon.request('POST', '/v1/templates', { name: 'web-ready', image: ref, ready: ['true'] });
    expect(refused.status).toBe(400);
  }, 400_000);

  it('caches each build step: a rebuild reruns only from the first changed step, also after a failing one', async ({ newSandbox }) => {
    fs.writeFileSync(path.join(work, 'a.txt'), 'first a\n');
    const steps = [
      `FROM ${ref}`,
      'RUN cat /proc/sys/kernel/random/uuid > /srv/one',
      'COPY a.txt /srv/a.txt',
      'ENV X=1',
      'RUN cat /srv/one /srv/a.txt > /srv/both; echo "$X" >> /srv/both',
    ];
    const first = await build('steps-1', steps.join('\n'));
    expect(first.at(-1)!.type, JSON.stringify(first.at(-1))).toBe('done');
    expect(first.filter((e) => e.type === 'step' && e.cached)).toEqual([]);
    const one = (await exec((await newSandbox({ template: 'steps-1' })).id, 'cat /srv/one')).stdout;
    expect(one).toMatch(/^[0-9a-f-]{36}\n$/);

    // The copied file changed: step 1 comes from the cache, steps 2-4 run again.
    fs.writeFileSync(path.join(work, 'a.txt'), 'second a\n');
    const second = await build('steps-2', steps.join('\n'));
    expect(second.at(-1)!.type, JSON.stringify(second.at(-1))).toBe('done');
    expect(second.filter((e) => e.type === 'step' && e.index! > 0).map((e) => [e.index, e.cached ?? false])).toEqual([
      [1, true],
      [2, false],
      [3, false],
      [4, false],
    ]);
    expect((await exec((await newSandbox({ template: 'steps-2' })).id, 'cat /srv/both')).stdout).toBe(`${one}second a\n1\n`);

    // A failing step: its output in the error; the steps before it (step 5 ran only in this build) are cached for the next one.
    const failing = (
      await build('steps-3', [...steps, 'RUN echo five > /srv/five', 'RUN echo "broken on purpose" >&2; exit 4'].join('\n'))
    ).at(-1)!;
    expect(failing).toMatchObject({ type: 'error', code: 'build_step_failed' });
    expect(failing.message).toMatch(/^step 6 \(RUN echo "broken on purpose" >&2; exit 4\) exited with code 4:\nbroken on purpose$/);
    const fixed = await build('steps-3', [...steps, 'RUN echo five > /srv/five', 'RUN echo fixed > /srv/fixed'].join('\n'));
    expect(fixed.at(-1)!.type, JSON.stringify(fixed.at(-1))).toBe('done');
    expect(fixed.filter((e) => e.type === 'step' && e.index! > 0).map((e) => [e.index, e.cached ?? false])).toEqual([
      [1, true],
      [2, true],
      [3, true],
      [4, true],
      [5, true],
      [6, false],
    ]);
    expect((await exec((await newSandbox({ template: 'steps-3' })).id, 'cat /srv/one /srv/five /srv/fixed')).stdout).toBe(
      `${one}five\nfixed\n`,
    );

    // Unchanged: every step cached, nothing boots.
    const same = await build('steps-3-again', [...steps, 'RUN echo five > /srv/five', 'RUN echo fixed > /srv/fixed'].join('\n'));
    expect(same.at(-1)!.type, JSON.stringify(same.at(-1))).toBe('done');
    expect(same.filter((e) => e.type === 'step').map((e) => [e.index, e.cached ?? false])).toEqual(
      [1, 2, 3, 4, 5, 6].map((index) => [index, true]),
    );

    // The CLI says which steps were cached.
    fs.writeFileSync(path.join(work, 'Capsulefile'), [...steps, 'RUN echo other > /srv/other'].join('\n'));
    const cli = await capsule(['template', 'build', '--no-wait', '-f', path.join(work, 'Capsulefile'), '-t', 'steps-4']);
    expect(cli.status, cli.stderr).toBe(0);
    expect(cli.stderr).toMatch(/^\[1\] CACHED RUN cat \/proc\/sys\/kernel\/random\/uuid > \/srv\/one$/m);
    expect(cli.stderr).toMatch(/^\[4\] CACHED RUN cat /m);
    expect(cli.stderr).toMatch(/^\[5\] RUN echo other > \/srv\/other$/m);
  }, 600_000);

  it('prunes untagged images, their blobs and the build-step cache', async ({ newSandbox }) => {
    const stepsDir = path.join(sharedCacheDir, 'images', 'build-steps');
    const cachedSteps = fs.readdirSync(stepsDir).filter((n) => n.endsWith('.json') || n.endsWith('.qcow2'));
    expect(cachedSteps.length).toBeGreaterThan(0);
    // The tag moves to a new image: the old one is left without a reference.
    const old = image([layer([marker(), { path: 'old.txt', content: 'old' }])]);
    await pushImage(registry, 'e2e/moving', 'latest', old);
    expect((await daemon.request('POST', '/v1/images/pull', { ref: `${registry.host}/e2e/moving:latest` })).status).toBe(200);
    await pushImage(registry, 'e2e/moving', 'latest', image([layer([marker(), { path: 'new.txt', content: 'new' }])]));
    expect((await daemon.request('POST', '/v1/images/pull', { ref: `${registry.host}/e2e/moving:latest` })).status).toBe(200);
    const oldLayer = path.join(sharedCacheDir, 'images', 'blobs', 'sha256', JSON.parse(old.manifest.toString()).layers[0].digest.slice(7));
    expect(fs.existsSync(oldLayer)).toBe(true);
    expect((await daemon.api.image(old.digest)).refs).toEqual([]);

    const pruned = await capsule(['image', 'prune', '--json']);
    expect(pruned.status, pruned.stderr).toBe(0);
    const result = JSON.parse(pruned.stdout);
    expect(result.blobs).toBeGreaterThanOrEqual(3); // the old manifest, config and layer
    expect(result.buildSteps).toBeGreaterThan(0);
    expect(result.bytes).toBeGreaterThan(0);
    expect((await daemon.request('GET', `/v1/images/${old.digest}`)).status).toBe(404);
    expect(fs.existsSync(oldLayer)).toBe(false);
    // (Another test's daemon may be building meanwhile: only this file's steps are checked.)
    expect(fs.readdirSync(stepsDir).filter((n) => cachedSteps.includes(n))).toEqual([]);
    // What templates use stays: the pulled image, and sandboxes of built templates still start.
    await daemon.api.image(ref);
    expect((await exec((await newSandbox({ template: 'steps-2' })).id, 'cat /srv/a.txt')).stdout).toBe('second a\n');
  });
});
