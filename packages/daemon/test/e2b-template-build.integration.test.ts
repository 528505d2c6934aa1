// The official e2b SDK's template builds (v2), unchanged, against capsuled and
// real microVMs: Template() steps with a copy and a start command with a ready
// check, built with logs streamed to onBuildLogs, then a sandbox created from
// the template; fromImage from a real registry behind basic auth, rebuilt in
// place; bad steps and hostile uploads refused in e2b's error shape. Five VMs
// in all: a build sandbox, two warm snapshots' boots, two sandboxes.
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect } from 'vitest';
import { BuildError, Sandbox, Template, waitForPort } from 'e2b';
import { makeTar } from './oci/tar-writer.js';
import { image, layer, pushImage, removeAllImages } from './oci/test-images.js';
import { TestRegistry } from './oci/test-registry.js';
import { it, sharedCacheDir, TestDaemon } from './fixture.js';

/** Every SDK call may wait on a shared CPU emulating guests (TCG). */
const SLOW_CALL = { requestTimeoutMs: 170_000 };
/** A build boots its sandbox and then the template for its warm snapshot: minutes on a loaded host under TCG. */
const BUILD_TEST_MS = 600_000;

describe('e2b template builds against capsuled (real QEMU microVMs)', () => {
  // No warm pool: every VM here is one the test asked for. Uploads are pruned as soon as their build ends.
  const daemon = new TestDaemon({
    CAPSULE_LISTEN: 'http://127.0.0.1:0',
    CAPSULE_WARM_POOL_SIZE: '0',
    CAPSULE_BUILD_UPLOADS_MAX_IDLE_MS: '0',
  });
  const saved = { ...process.env };
  const context = fs.mkdtempSync(path.join(os.tmpdir(), 'capsule-e2b-build-'));
  // New content each run: the steps must run, not come from the shared step cache.
  const token = randomBytes(8).toString('hex');
  let apiUrl = '';
  let registry: TestRegistry | undefined;

  beforeAll(async () => {
    registry = await TestRegistry.start();
    await daemon.start();
    const { tcpAddress } = await daemon.api.info();
    apiUrl = `http://${tcpAddress}`;
    process.env.E2B_API_URL = apiUrl;
    process.env.E2B_SANDBOX_URL = apiUrl;
    process.env.E2B_API_KEY = (await daemon.api.createApiKey('e2b-builds')).key;
    fs.mkdirSync(path.join(context, 'site'));
    fs.writeFileSync(path.join(context, 'site', 'hello.txt'), token);
  });
  afterAll(async () => {
    process.env = saved;
    // What these builds put in the shared cache goes with their templates: their image, steps and disks.
    await removeAllImages(daemon).catch(() => undefined);
    await daemon.request('DELETE', `/v1/templates/e2b-built-${token}`).catch(() => undefined);
    await daemon.request('POST', '/v1/images/prune').catch(() => undefined);
    await daemon.destroy();
    await registry?.stop();
    fs.rmSync(context, { recursive: true, force: true });
  });

  it(
    'builds runCmd + copy + setStartCmd(waitForPort) with logs streamed, and a sandbox from it serves the copied file',
    async () => {
      const name = `e2b-built-${token}`;
      const template = Template({ fileContextPath: context })
        .fromTemplate('base')
        .runCmd(`echo built-${token}`)
        .copy('site', '/srv/site')
        .setWorkdir('/srv/site')
        .setStartCmd('python3 -m http.server 8080', waitForPort(8080));
      const logs: string[] = [];
      const built = await Template.build(template, name, { ...SLOW_CALL, onBuildLogs: (entry) => logs.push(entry.message) });
      expect(built).toMatchObject({ templateId: name, name });
      expect(logs).toContain(`built-${token}`);
      expect(logs).toContain(`RUN echo built-${token}`);
      expect(logs).toContain(`template ${name} is ready`);
      expect(await Template.exists(name)).toBe(true);
      // The build's upload is gone once the build ended (its step is cached, and a rebuild uploads again).
      expect(logs).toContain("Uploaded 'site'");
      const uploads = path.join(sharedCacheDir, 'images', 'build-uploads');
      const holdingToken = (fs.existsSync(uploads) ? fs.readdirSync(uploads, { recursive: true, encoding: 'utf8' }) : []).filter((file) => {
        const stat = fs.lstatSync(path.join(uploads, file), { throwIfNoEntry: false });
        return stat?.isFile() === true && fs.readFileSync(path.join(uploads, file), 'utf8') === token;
      });
      expect(holdingToken).toEqual([]);

      const sandbox = await Sandbox.create(name, SLOW_CALL);
      try {
        expect(await sandbox.files.read('/srv/site/hello.txt')).toBe(token);
        // Restored from the warm snapshot taken once the start command listened.
        const served = await sandbox.commands.run('curl -s http://localhost:8080/hello.txt', SLOW_CALL);
        expect(served.stdout).toBe(token);
      } finally {
        await sandbox.kill();
      }
    },
    BUILD_TEST_MS,
  );

  it(
    'builds fromImage from a registry behind basic auth with the credentials given, and rebuilds the name in place',
    async () => {
      const busybox = ['sh', 'cat', 'echo', 'true', 'mkdir', 'sync', 'base64', 'dirname'];
      const img = image([
        layer([
          { path: 'bin/busybox', content: fs.readFileSync('/bin/busybox'), mode: 0o755 },
          ...busybox.map((applet) => ({ path: `bin/${applet}`, type: 'symlink' as const, linkpath: '/bin/busybox' })),
          // e2b's commands run under `/bin/bash -l -c`.
          { path: 'bin/bash', content: '#!/bin/sh\nexec /bin/sh "$@"\n', mode: 0o755 },
          { path: 'etc/passwd', content: 'root:x:0:0:root:/root:/bin/sh\n' },
          { path: 'data/hello', content: `hello ${token}\n` },
        ]),
      ]);
      await pushImage(registry!, 'e2b/tiny', 'v1', img);
      const gate = await registry!.startBasicAuthProxy({ username: 'alice', password: 'pa55' });
      const name = `e2b-image-${token}`;
      const wrong = Template().fromImage(`${gate}/e2b/tiny:v1`, { username: 'alice', password: 'nope' });
      await expect(Template.build(wrong, name, SLOW_CALL)).rejects.toThrow(/registry_auth_failed/);
      expect(await Template.exists(name)).toBe(false);

      // No step writes to the disk: nothing boots but the warm snapshot's VM.
      const template = Template().fromImage(`${gate}/e2b/tiny:v1`, { username: 'alice', password: 'pa55' }).setEnvs({ GREETING: 'hi' });
      await Template.build(template, name, SLOW_CALL);
      // e2b rebuilds a name in place: the same steps give the same disk, which the old template's removal must not take along.
      await Template.build(template, name, SLOW_CALL);
      const sandbox = await Sandbox.create(name, SLOW_CALL);
      try {
        // The image has no `user`, whom e2b's commands run as by default.
        const result = await sandbox.commands.run('echo "$GREETING"; cat /data/hello', { user: 'root', ...SLOW_CALL });
        expect(result.stdout).toBe(`hi\nhello ${token}\n`);
      } finally {
        await sandbox.kill();
      }
    },
    BUILD_TEST_MS,
  );

  it("answers the default tag, refuses bad steps, other tags and hostile uploads in e2b's shape, before any VM boots", async () => {
    const refusal = await Template.build(Template().fromTemplate('base').setUser('not a user'), 'e2b-bad-user').then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(refusal).toBeInstanceOf(BuildError);
    expect((refusal as BuildError).message).toMatch(/invalid_argument: "not a user" is not a user name/);
    await expect(Template.build(Template().fromTemplate('base'), 'e2b-tagged:v1')).rejects.toThrow(/tags are not supported/);
    // A Capsule template's one build is e2b's `default` tag; no other tag is kept.
    expect(await Template.getTags('base')).toEqual([{ tag: 'default', buildId: 'base', createdAt: expect.any(Date) }]);
    expect(await Template.assignTags('base:default', 'default')).toEqual({ buildId: 'base', tags: ['default'] });
    expect(await Template.exists('base:default')).toBe(true);
    await expect(Template.assignTags('base', ['default', 'prod'])).rejects.toThrow(
      /tags are not supported by Capsule, but for "default": "prod"/,
    );
    await expect(Template.removeTags('base', 'default')).rejects.toThrow(/is the template itself and cannot be removed/);
    await expect(Template.exists('base:v2')).rejects.toThrow(/tags are not supported/);

    const headers = { 'X-API-Key': process.env.E2B_API_KEY! };
    const hash = randomBytes(32).toString('hex');
    const link = (await (await fetch(`${apiUrl}/templates/any/files/${hash}`, { headers })).json()) as { present: boolean; url: string };
    expect(link.present).toBe(false);
    const climbing = await fetch(link.url, { method: 'PUT', headers, body: makeTar([{ path: '../../escape', content: 'x' }]) });
    expect(climbing.status).toBe(400);
    expect(await climbing.json()).toMatchObject({ code: 400, message: expect.stringMatching(/points outside the context/) });
    const symlink = await fetch(link.url, { method: 'PUT', headers, body: makeTar([{ path: 'l', type: 'symlink', linkpath: '/etc' }]) });
    expect(symlink.status).toBe(400);
    // Nothing refused counts as uploaded; the upload needs the API key like every call over TCP.
    expect(((await (await fetch(`${apiUrl}/templates/any/files/${hash}`, { headers })).json()) as { present: boolean }).present).toBe(
      false,
    );
    expect((await fetch(link.url, { method: 'PUT', body: makeTar([{ path: 'a', content: 'a' }]) })).status).toBe(401);
  });
});
