// Image pull and conversion: a ~200 MB multi-layer image on a local registry
// (Debian's docker-registry on a loopback port, pushed with skopeo) made a
// template's root filesystem by capsuled (pull + template create), against
// `skopeo copy` to a folder + unpacking its layers with GNU tar + `mkfs.ext4 -d`
// measured in the same run, alternating, and a second pull of the unchanged
// image (a cache hit). The daemon runs without warm snapshots: no VM boots
// here. Each round removes the template and the image, so the next is cold.
import { execFileSync, spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { repeat } from '../harness.mjs';

const LAYERS = 4;
const LAYER_MIB = 50;
const HEADROOM_MIB = 2048;

const sha256 = (bytes) => createHash('sha256').update(bytes).digest('hex');

/** POST with an NDJSON answer; resolves with the last event. */
function ndjson(daemon, urlPath, body) {
  return new Promise((resolve, reject) => {
    const req = http.request(
      { socketPath: daemon.socketPath, method: 'POST', path: urlPath, headers: { 'content-type': 'application/json' } },
      (res) => {
        let text = '';
        res.on('data', (c) => (text += c));
        res.on('end', () => {
          try {
            resolve(JSON.parse(text.trim().split('\n').at(-1)));
          } catch {
            reject(new Error(`POST ${urlPath} answered ${res.statusCode}: ${text.slice(0, 500)}`));
          }
        });
      },
    );
    req.on('error', reject);
    req.end(JSON.stringify(body));
  });
}

async function freePort() {
  return await new Promise((resolve) => {
    const server = net.createServer().listen(0, '127.0.0.1', () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
  });
}

/** Files like a real image's: some incompressible, most text-like, many small ones. */
function fillLayer(dir, index) {
  fs.mkdirSync(dir, { recursive: true });
  const text = Buffer.from(`layer ${index} ${randomBytes(8).toString('hex')} `.repeat(64));
  let bytes = 0;
  for (let f = 0; bytes < LAYER_MIB * 1048576; f++) {
    const sub = path.join(dir, `usr/lib/pkg${index}/d${f % 50}`);
    fs.mkdirSync(sub, { recursive: true });
    const size = f % 10 === 0 ? 1048576 : 65536;
    const data =
      f % 3 === 0 ? randomBytes(size) : Buffer.concat(Array.from({ length: Math.ceil(size / text.length) }, () => text)).subarray(0, size);
    fs.writeFileSync(path.join(sub, `file${f}`), data);
    bytes += size;
  }
  if (index > 0) {
    // A whiteout of a folder of the layer below, as package removals leave.
    fs.mkdirSync(path.join(dir, `usr/lib/pkg${index - 1}`), { recursive: true });
    fs.writeFileSync(path.join(dir, `usr/lib/pkg${index - 1}/.wh.d0`), '');
  }
}

/** An OCI layout of the image, built with tar and gzip. */
function buildLayout(layout, work) {
  const blobs = path.join(layout, 'blobs', 'sha256');
  fs.mkdirSync(blobs, { recursive: true });
  const put = (bytes) => {
    const hex = sha256(bytes);
    fs.writeFileSync(path.join(blobs, hex), bytes);
    return { digest: `sha256:${hex}`, size: bytes.length };
  };
  const layers = [];
  const diffIds = [];
  for (let i = 0; i < LAYERS; i++) {
    const dir = path.join(work, `layer${i}`);
    fillLayer(dir, i);
    const tar = execFileSync('tar', ['-C', dir, '--numeric-owner', '-cf', '-', '.'], { maxBuffer: 1 << 30 });
    diffIds.push(`sha256:${sha256(tar)}`);
    layers.push({
      mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip',
      ...put(execFileSync('gzip', ['-1', '-c'], { input: tar, maxBuffer: 1 << 30 })),
    });
    fs.rmSync(dir, { recursive: true, force: true });
  }
  const config = put(
    Buffer.from(
      JSON.stringify({
        architecture: 'amd64',
        os: 'linux',
        config: { Env: ['PATH=/usr/bin:/bin'] },
        rootfs: { type: 'layers', diff_ids: diffIds },
      }),
    ),
  );
  const manifest = put(
    Buffer.from(
      JSON.stringify({
        schemaVersion: 2,
        mediaType: 'application/vnd.oci.image.manifest.v1+json',
        config: { mediaType: 'application/vnd.oci.image.config.v1+json', ...config },
        layers,
      }),
    ),
  );
  fs.writeFileSync(path.join(layout, 'oci-layout'), '{"imageLayoutVersion":"1.0.0"}');
  fs.writeFileSync(
    path.join(layout, 'index.json'),
    JSON.stringify({
      schemaVersion: 2,
      manifests: [
        {
          mediaType: 'application/vnd.oci.image.manifest.v1+json',
          ...manifest,
          annotations: { 'org.opencontainers.image.ref.name': 'v1' },
        },
      ],
    }),
  );
  return { digest: manifest.digest, bytes: layers.reduce((s, l) => s + l.size, 0) };
}

/** The baseline: skopeo copy to a folder, unpack each layer with GNU tar, mkfs.ext4 -d. */
function baseline(ref, work) {
  const dir = path.join(work, 'skopeo');
  const rootfs = path.join(work, 'rootfs');
  const image = path.join(work, 'baseline.ext4');
  fs.rmSync(dir, { recursive: true, force: true });
  fs.rmSync(rootfs, { recursive: true, force: true });
  fs.rmSync(image, { force: true });
  const started = performance.now();
  execFileSync('skopeo', ['copy', '-q', '--src-tls-verify=false', `docker://${ref}`, `dir:${dir}`]);
  const manifest = JSON.parse(fs.readFileSync(path.join(dir, 'manifest.json'), 'utf8'));
  fs.mkdirSync(rootfs);
  for (const layer of manifest.layers)
    execFileSync('tar', ['-C', rootfs, '--numeric-owner', '-xzf', path.join(dir, layer.digest.slice(7))]);
  const bytes = Number(execFileSync('du', ['-sb', rootfs], { encoding: 'utf8' }).split('\t')[0]);
  execFileSync('mkfs.ext4', ['-q', '-F', '-d', rootfs, image, `${Math.ceil((bytes * 1.25) / 1048576) + 64 + HEADROOM_MIB}M`]);
  const ms = performance.now() - started;
  fs.rmSync(dir, { recursive: true, force: true });
  fs.rmSync(rootfs, { recursive: true, force: true });
  fs.rmSync(image, { force: true });
  return ms;
}

async function capsulePullAndConvert(daemon, ref, digest, name) {
  const started = performance.now();
  const pulled = await ndjson(daemon, '/v1/images/pull', { ref });
  if (pulled.type !== 'done') throw new Error(`pull failed: ${JSON.stringify(pulled)}`);
  await daemon.call('POST', '/v1/templates', { name, image: ref }, 201);
  const ms = performance.now() - started;
  const again = performance.now();
  const second = await ndjson(daemon, '/v1/images/pull', { ref });
  if (second.type !== 'done' || second.image.digest !== digest) throw new Error(`second pull failed: ${JSON.stringify(second)}`);
  const cacheHitMs = performance.now() - again;
  // Removing the template and the image deletes its blobs and root filesystem, so the next round is cold again.
  await daemon.call('DELETE', `/v1/templates/${name}`, undefined, 204);
  await daemon.call('DELETE', `/v1/images/${digest}`, undefined, 204);
  return { ms, cacheHitMs };
}

/** Debian's docker-registry on a free loopback port, storing under `dir`; resolves with its host:port once it answers. */
async function startRegistry(ctx, dir) {
  const port = await freePort();
  const config = path.join(dir, 'registry.yml');
  fs.writeFileSync(
    config,
    `version: 0.1\nlog: {level: error}\nstorage: {filesystem: {rootdirectory: ${dir}/registry}, delete: {enabled: true}}\nhttp: {addr: "127.0.0.1:${port}"}\n`,
  );
  const registry = spawn('docker-registry', ['serve', config], { stdio: 'ignore' });
  ctx.run.children.add(registry);
  for (let i = 0; ; i++) {
    try {
      await fetch(`http://127.0.0.1:${port}/v2/`);
      break;
    } catch {
      if (i > 200 || registry.exitCode !== null) throw new Error('docker-registry did not start');
      await sleep(50);
    }
  }
  return {
    address: `127.0.0.1:${port}`,
    stop() {
      registry.kill('SIGKILL');
      ctx.run.children.delete(registry);
    },
  };
}

export default {
  name: 'image-pull',
  position: 70,
  results: [
    {
      id: 'image-pull-baseline',
      title: `skopeo copy + tar -x + mkfs.ext4 -d of a ${LAYERS}-layer, ${LAYERS * LAYER_MIB} MiB image (baseline of image pull)`,
      unit: 'ms',
    },
    {
      id: 'image-pull',
      title: `capsuled image pull + template create of the same image`,
      unit: 'ms',
      baselines: [{ id: 'image-pull-baseline', label: 'skopeo + tar + mkfs.ext4' }],
    },
    { id: 'image-pull-cached', title: 'second pull of the unchanged image (cache hit)', unit: 'ms' },
  ],
  async unavailable() {
    const missing = ['skopeo', 'docker-registry', 'mkfs.ext4', 'tar', 'gzip'].filter((tool) => {
      try {
        execFileSync('sh', ['-c', `command -v ${tool}`], { stdio: 'ignore' });
        return false;
      } catch {
        return true;
      }
    });
    return missing.length > 0 ? `${missing.join(', ')} missing (bench/run installs skopeo and docker-registry)` : undefined;
  },
  async run(ctx) {
    const work = path.join(ctx.run.root, 'image-pull');
    fs.mkdirSync(work, { recursive: true });
    const registry = await startRegistry(ctx, work);
    try {
      const ref = `${registry.address}/bench/image:v1`;
      const { digest, bytes } = buildLayout(path.join(work, 'layout'), work);
      execFileSync('skopeo', ['copy', '-q', '--dest-tls-verify=false', `oci:${path.join(work, 'layout')}:v1`, `docker://${ref}`]);
      fs.rmSync(path.join(work, 'layout'), { recursive: true, force: true });
      ctx.log(`image: ${LAYERS} layers, ${(bytes / 1048576).toFixed(0)} MiB compressed, ${LAYERS * LAYER_MIB} MiB unpacked`);
      const daemon = await ctx.daemon('cold');
      const ours = [];
      const theirs = [];
      const hits = [];
      // Alternating which goes first, so a change in the host's load hits both.
      await repeat(ctx, async (i) => {
        const order = i % 2 === 0 ? ['ours', 'theirs'] : ['theirs', 'ours'];
        for (const which of order) {
          if (which === 'theirs') theirs.push(baseline(ref, work));
          else {
            const { ms, cacheHitMs } = await capsulePullAndConvert(daemon, ref, digest, `bench-image-${i}`);
            ours.push(ms);
            hits.push(cacheHitMs);
          }
        }
      });
      const measured = (values) => values.slice(ctx.warmups);
      const note = `${LAYERS} layers, ${(bytes / 1048576).toFixed(0)} MiB gzipped, ${LAYERS * LAYER_MIB} MiB unpacked, whiteouts included; alternating with the baseline`;
      return {
        'image-pull-baseline': measured(theirs),
        'image-pull': { samples: measured(ours), note },
        'image-pull-cached': measured(hits),
      };
    } finally {
      registry.stop();
      fs.rmSync(work, { recursive: true, force: true });
    }
  },
};
