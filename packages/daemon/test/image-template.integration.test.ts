// End to end: an image built here (static busybox in two layers, one of them
// whiting out a file of the other) is pushed to a real registry, pulled by a
// real daemon, made a template with a warm snapshot, and a sandbox of it runs
// commands in a real QEMU microVM, as the image's user, in its working folder
// and with its env; `capsule run --template` does the same from the CLI.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect } from 'vitest';
import { runCli, sandboxTest, sharedCacheDir, TestDaemon } from './fixture.js';
import { image, layer, marker, pushImage, removeAllImages } from './oci/test-images.js';
import { TestRegistry } from './oci/test-registry.js';

const BUSYBOX_APPLETS = ['sh', 'cat', 'id', 'pwd', 'ls', 'echo', 'true', 'mkdir', 'dirname', 'base64', 'sync'];

describe('a template built from a pulled image (real registry, real QEMU microVM)', () => {
  let registry: TestRegistry;
  const daemon = new TestDaemon({ CAPSULE_WARM_POOL_SIZE: '0' });
  const it = sandboxTest(daemon);
  const capsule = (args: string[]) => runCli(daemon, args, 170_000);

  beforeAll(async () => {
    registry = await TestRegistry.start();
    await daemon.start();
  });
  afterAll(async () => {
    // The template's warm snapshot goes with it: the shared cache keeps nothing of this run.
    await removeAllImages(daemon).catch(() => undefined);
    // And the steps its builds cached.
    await daemon.request('POST', '/v1/images/prune').catch(() => undefined);
    await daemon.destroy();
    await registry?.stop();
  });

  it('pulls, builds the template with a warm snapshot, and runs commands in it', async ({ newSandbox }) => {
    const img = image(
      [
        layer(
          [
            marker(),
            { path: 'bin/busybox', content: fs.readFileSync('/bin/busybox'), mode: 0o755 },
            ...BUSYBOX_APPLETS.map((name) => ({ path: `bin/${name}`, type: 'symlink' as const, linkpath: '/bin/busybox' })),
            { path: 'etc/passwd', content: 'root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000:app:/home/app:/bin/sh\n' },
            { path: 'etc/group', content: 'root:x:0:\napp:x:1000:\n' },
            { path: 'home/app/', type: 'directory', uid: 1000, gid: 1000 },
            { path: 'opt/removed-later', content: 'should be gone' },
          ],
          'gzip',
        ),
        layer([{ path: 'opt/.wh.removed-later' }, { path: 'data/hello', content: 'hello from layer two\n' }], 'zstd'),
      ],
      { Env: ['GREETING=hi from the image config'], User: 'app', WorkingDir: '/srv/app' },
    );
    await pushImage(registry, 'e2e/tiny', 'v1', img);
    const ref = `${registry.host}/e2e/tiny:v1`;

    // `template create` pulls the missing image (progress bar on stderr) and waits for the warm snapshot.
    const create = await capsule(['--verbose', 'template', 'create', 'tiny', '--image', ref]);
    expect(create.status, create.stderr).toBe(0);
    expect(create.stdout).toBe('tiny\n');
    expect(create.stderr).toMatch(/Pulling .*e2e\/tiny:v1 \[#{30}\] .* 2\/2 layers, 2 unpacked/);
    expect(create.stderr).toMatch(/Booting tiny once for its warm snapshot…/);
    expect((await daemon.api.template('tiny')).warmSnapshot).toBe('ready');
    const snapshotsBefore = fs.readdirSync(path.join(sharedCacheDir, 'snapshots')).filter((n) => n.startsWith('tiny-'));
    expect(snapshotsBefore.length).toBeGreaterThan(0);

    const sandbox = await newSandbox({ template: 'tiny' });
    const result = await daemon.api.exec(sandbox.id, ['/bin/sh', '-c', 'echo "$GREETING"; id -un; pwd; cat /data/hello; ls /opt']);
    expect(result.stderr).toBe('');
    expect(result.exitCode).toBe(0);
    // /opt holds only the kit's mount point: the first layer's file was whited out by the second.
    expect(result.stdout).toBe('hi from the image config\napp\n/srv/app\nhello from layer two\ncapsule\n');

    // The CLI's own path: `capsule run --template NAME -- CMD`.
    const cli = await capsule(['run', '--template', 'tiny', '--', '/bin/cat', '/data/hello']);
    expect(cli.stderr).toBe('');
    expect(cli.stdout).toBe('hello from layer two\n');
    expect(cli.status).toBe(0);

    // Its sandboxes' disks are overlays on the warm snapshot's: removing the template is refused while
    // one lives (a paused one could never resume), and nothing of the template is touched.
    const refused = await capsule(['template', 'rm', 'tiny']);
    expect(refused.status).not.toBe(0);
    expect(refused.stderr).toContain('is used by 1 sandbox(es)');
    expect(refused.stderr).toContain(`capsule rm ${sandbox.id}`);
    expect((await daemon.api.exec(sandbox.id, ['/bin/cat', '/data/hello'])).stdout).toBe('hello from layer two\n');
    await daemon.api.removeSandbox(sandbox.id);
    // Then the template goes, its warm snapshot along.
    const rm = await capsule(['template', 'rm', 'tiny']);
    expect(rm.status, rm.stderr).toBe(0);
    const snapshotsAfter = fs.readdirSync(path.join(sharedCacheDir, 'snapshots')).filter((n) => n.startsWith('tiny-'));
    expect(snapshotsAfter.length).toBe(snapshotsBefore.length - 1);
  });

  it('builds a template from a Capsulefile, reuses an unchanged build, and reports a failing step with its output', async ({
    newSandbox,
  }) => {
    const ref = `${registry.host}/e2e/tiny:v1`;
    const work = fs.mkdtempSync(path.join(os.tmpdir(), 'capsule-build-'));
    try {
      fs.writeFileSync(path.join(work, 'hello.txt'), 'copied from the build folder\n');
      const big = Buffer.alloc(5 * 1024 * 1024 + 123, 0x5a);
      fs.mkdirSync(path.join(work, 'data'));
      fs.writeFileSync(path.join(work, 'data', 'big.bin'), big);
      fs.writeFileSync(
        path.join(work, 'Capsulefile'),
        [
          '# a comment',
          `FROM ${ref}`,
          'ENV BUILT_BY=capsule',
          'WORKDIR /srv/built',
          'COPY hello.txt /srv/built/hello.txt',
          'COPY data /srv/data',
          'USER root',
          'RUN echo "from RUN as $(id -un) with $GREETING" \\',
          '  > /srv/built/run.txt',
        ].join('\n'),
      );
      const build = await capsule(['template', 'build', '-f', path.join(work, 'Capsulefile'), '-t', 'built']);
      expect(build.status, build.stderr).toBe(0);
      expect(build.stdout).toBe('built\n');
      expect(build.stderr).toMatch(/\[6\] RUN echo/);

      const sandbox = await newSandbox({ template: 'built' });
      const result = await daemon.api.exec(sandbox.id, [
        '/bin/sh',
        '-c',
        'cat hello.txt run.txt; echo "$BUILT_BY"; pwd; id -un; ls -l /srv/data/big.bin',
      ]);
      expect(result.stderr).toBe('');
      expect(result.stdout).toMatch(
        new RegExp(
          `^copied from the build folder\nfrom RUN as root with hi from the image config\ncapsule\n/srv/built\nroot\n.* ${big.length} .*/srv/data/big.bin\n$`,
        ),
      );

      // The same inputs again: no sandbox, the earlier root filesystem.
      const again = events(
        (
          await daemon.request('POST', '/v1/templates/build', {
            name: 'built-again',
            capsulefile: fs.readFileSync(path.join(work, 'Capsulefile'), 'utf8'),
            contextDir: work,
          })
        ).text,
      );
      expect(again.at(-1)!.type, JSON.stringify(again.at(-1))).toBe('done');
      expect(again.some((e) => e.type === 'log' && /unchanged since an earlier build/.test(e.text ?? ''))).toBe(true);

      const failing = events(
        (
          await daemon.request('POST', '/v1/templates/build', {
            name: 'broken',
            capsulefile: `FROM ${ref}\nRUN echo about to fail >&2; exit 3\n`,
          })
        ).text,
      ).at(-1)!;
      expect(failing).toMatchObject({ type: 'error', code: 'build_step_failed' });
      expect(failing.message).toMatch(/step 1 \(RUN echo about to fail >&2; exit 3\) exited with code 3:\nabout to fail/);
      expect((await daemon.api.templates()).map((t) => t.name).sort()).toEqual(['base', 'built', 'built-again']);
      expect((await daemon.api.sandboxes()).filter((x) => x.id !== sandbox.id)).toEqual([]);

      // The two templates share one root filesystem: it stays until the last of them goes.
      const rootfs = fs.readdirSync(path.join(sharedCacheDir, 'images', 'rootfs')).filter((n) => n.startsWith('build-'));
      await daemon.api.removeTemplate('built-again');
      expect(fs.readdirSync(path.join(sharedCacheDir, 'images', 'rootfs')).filter((n) => n.startsWith('build-'))).toEqual(rootfs);

      const badInput = events((await daemon.request('POST', '/v1/templates/build', { name: 'bad', capsulefile: 'RUN true' })).text).at(-1)!;
      expect(badInput).toMatchObject({ type: 'error', code: 'invalid_argument' });
    } finally {
      fs.rmSync(work, { recursive: true, force: true });
    }
  }, 400_000);
});

function events(text: string): { type: string; code?: string; message?: string; text?: string }[] {
  return text
    .trim()
    .split('\n')
    .filter(Boolean)
    .map((line) => JSON.parse(line) as { type: string });
}
