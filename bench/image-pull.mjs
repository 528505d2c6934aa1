#!/usr/bin/env node
// Image pull and convert: a ~200 MB multi-layer image on a local registry
// (Debian's docker-registry on a loopback port, pushed with skopeo) made a
// template's root filesystem by capsuled (pull + template create), against
// `skopeo copy` to a folder + unpacking its layers with GNU tar + `mkfs.ext4 -d`
// measured in the same run, alternating, and a second pull of the unchanged
// image (a cache hit). A private daemon (warm snapshots off: no VM boots
// here); everything it made is removed, also when interrupted.
// Usage: node bench/image-pull.mjs [ROUNDS]   (needs: apt-get install skopeo)
import { execFileSync, spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { BenchRun, percentile } from './harness.mjs';

const rounds = Number(process.argv[2] ?? 3);
const LAYERS = 4;
const LAYER_MIB = 50;
const HEADROOM_MIB = 2048;

for (const tool of ['skopeo', 'docker-registry', 'mkfs.ext4', 'tar']) {
  try {
    execFileSync('sh', ['-c', `command -v ${tool}`], { stdio: 'ignore' });
  } catch {
    console.error(`bench/image-pull: ${tool} is missing (apt-get install skopeo docker-registry)`);
    process.exit(2);
  }
}

const run = new BenchRun();
const request = (...args) => run.request(...args);
const sha256 = (bytes) => createHash('sha256').update(bytes).digest('hex');

/** POST with an NDJSON answer; resolves with the last event. */
function ndjson(urlPath, body) {
  return new Promise((resolve, reject) => {
    const req = http.request({ socketPath: run.socketPath, method: 'POST', path: urlPath, headers: { 'content-type': 'application/json' } }, (res) => {
      let text = '';
      res.on('data', (c) => (text += c));
      res.on('end', () => resolve(JSON.parse(text.trim().split('\n').at(-1))));
    });
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
    const data = f % 3 === 0 ? randomBytes(size) : Buffer.concat(Array.from({ length: Math.ceil(size / text.length) }, () => text)).subarray(0, size);
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
    layers.push({ mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip', ...put(execFileSync('gzip', ['-1', '-c'], { input: tar, maxBuffer: 1 << 30 })) });
    fs.rmSync(dir, { recursive: true, force: true });
  }
  const config = put(Buffer.from(JSON.stringify({ architecture: 'amd64', os: 'linux', config: { Env: ['PATH=/usr/bin:/bin'] }, rootfs: { type: 'layers', diff_ids: diffIds } })));
  const manifest = put(Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: 'application/vnd.oci.image.manifest.v1+json', config: { mediaType: 'application/vnd.oci.image.config.v1+json', ...config }, layers })));
  fs.writeFileSync(path.join(layout, 'oci-layout'), '{"imageLayoutVersion":"1.0.0"}');
  fs.writeFileSync(path.join(layout, 'index.json'), JSON.stringify({ schemaVersion: 2, manifests: [{ mediaType: 'application/vnd.oci.image.manifest.v1+json', ...manifest, annotations: { 'org.opencontainers.image.ref.name': 'v1' } }] }));
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
  for (const layer of manifest.layers) execFileSync('tar', ['-C', rootfs, '--numeric-owner', '-xzf', path.join(dir, layer.digest.slice(7))]);
  const bytes = Number(execFileSync('du', ['-sb', rootfs], { encoding: 'utf8' }).split('\t')[0]);
  execFileSync('mkfs.ext4', ['-q', '-F', '-d', rootfs, image, `${Math.ceil((bytes * 1.25) / 1048576) + 64 + HEADROOM_MIB}M`]);
  const ms = performance.now() - started;
  fs.rmSync(dir, { recursive: true, force: true });
  fs.rmSync(rootfs, { recursive: true, force: true });
  fs.rmSync(image, { force: true });
  return ms;
}

async function capsulePullAndConvert(ref, digest, name) {
  const started = performance.now();
  const pulled = await ndjson('/v1/images/pull', { ref });
  if (pulled.type !== 'done') throw new Error(`pull failed: ${JSON.stringify(pulled)}`);
  const created = await request('POST', '/v1/templates', { name, image: ref });
  if (created.status !== 201) throw new Error(`template create failed: ${JSON.stringify(created.body)}`);
  const ms = performance.now() - started;
  const again = performance.now();
  const second = await ndjson('/v1/images/pull', { ref });
  if (second.type !== 'done' || second.image.digest !== digest) throw new Error(`second pull failed: ${JSON.stringify(second)}`);
  const cacheHitMs = performance.now() - again;
  // Removing the template and the image deletes its blobs and root filesystem, so the next round is cold again.
  await request('DELETE', `/v1/templates/${name}`);
  const removed = await request('DELETE', `/v1/images/${digest}`);
  if (removed.status !== 204) throw new Error(`image rm failed: ${JSON.stringify(removed.body)}`);
  return { ms, cacheHitMs };
}

let registry;
try {
  const work = path.join(run.root, 'work');
  fs.mkdirSync(work, { recursive: true });
  const port = await freePort();
  fs.writeFileSync(path.join(run.root, 'registry.yml'), `version: 0.1\nlog: {level: error}\nstorage: {filesystem: {rootdirectory: ${run.root}/registry}, delete: {enabled: true}}\nhttp: {addr: "127.0.0.1:${port}"}\n`);
  registry = spawn('docker-registry', ['serve', path.join(run.root, 'registry.yml')], { stdio: 'ignore' });
  run.children.add(registry);
  const ref = `127.0.0.1:${port}/bench/image:v1`;
  const { digest, bytes } = buildLayout(path.join(work, 'layout'), work);
  for (let i = 0; ; i++) {
    try {
      await fetch(`http://127.0.0.1:${port}/v2/`);
      break;
    } catch {
      if (i > 200) throw new Error('docker-registry did not start');
      await sleep(50);
    }
  }
  execFileSync('skopeo', ['copy', '-q', '--dest-tls-verify=false', `oci:${path.join(work, 'layout')}:v1`, `docker://${ref}`]);
  fs.rmSync(path.join(work, 'layout'), { recursive: true, force: true });
  console.log(`image: ${LAYERS} layers, ${(bytes / 1048576).toFixed(0)} MiB compressed, ${LAYERS * LAYER_MIB} MiB unpacked; ${rounds} rounds, alternating`);

  await run.startDaemon('image-pull', { CAPSULE_WARM_SNAPSHOTS: 'off' });
  const ours = [];
  const theirs = [];
  const hits = [];
  for (let r = 0; r < rounds; r++) {
    const order = r % 2 === 0 ? ['ours', 'theirs'] : ['theirs', 'ours'];
    for (const which of order) {
      if (which === 'theirs') theirs.push(baseline(ref, work));
      else {
        const { ms, cacheHitMs } = await capsulePullAndConvert(ref, digest, `bench${r}`);
        ours.push(ms);
        hits.push(cacheHitMs);
      }
    }
  }
  const p50 = (v) => percentile(v, 50);
  const fmt = (ms) => (ms >= 1000 ? `${(ms / 1000).toFixed(2)} s` : `${ms.toFixed(0)} ms`);
  console.log('| case | p50 | min | max |');
  console.log('| --- | --- | --- | --- |');
  console.log(`| skopeo copy + tar -x + mkfs.ext4 -d (baseline) | ${fmt(p50(theirs))} | ${fmt(Math.min(...theirs))} | ${fmt(Math.max(...theirs))} |`);
  console.log(`| capsule image pull + template create | ${fmt(p50(ours))} | ${fmt(Math.min(...ours))} | ${fmt(Math.max(...ours))} |`);
  console.log(`| second pull of the unchanged image (cache hit) | ${fmt(p50(hits))} | ${fmt(Math.min(...hits))} | ${fmt(Math.max(...hits))} |`);
  console.log(`ratio capsule / baseline (p50): ${(p50(ours) / p50(theirs)).toFixed(2)}x`);
} finally {
  run.cleanup();
}
