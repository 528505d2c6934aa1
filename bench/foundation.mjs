#!/usr/bin/env node
// Foundation figures, measured side by side in one run on this host:
//   - bare QEMU start: process start to QMP greeting (the floor every VM pays);
//   - cold boot: create request to the first exec result, through the API;
//   - host memory of one idle sandbox (QEMU RSS);
//   - size of the base template's root filesystem.
// It runs a private capsuled with its own state and runtime folders and removes
// everything it started, also when interrupted. Usage: node bench/foundation.mjs [runs]
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';

const repo = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const { QmpClient } = await import(path.join(repo, 'packages/daemon/dist/vmm/qmp.js'));
const runs = Number(process.argv[2] ?? 10);
const cacheDir = process.env.CAPSULE_CACHE_DIR ?? '/var/cache/capsule';
const manifest = JSON.parse(fs.readFileSync(path.join(cacheDir, 'guest-manifest.json'), 'utf8'));
const root = fs.mkdtempSync(path.join(os.tmpdir(), 'capsule-bench-'));
const socketPath = path.join(root, 'run', 'capsuled.sock');
const children = new Set();

function cleanup() {
  for (const child of children) child.kill('SIGKILL');
  for (const entry of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      if (fs.readFileSync(`/proc/${entry}/cmdline`, 'utf8').includes(root)) process.kill(Number(entry), 'SIGKILL');
    } catch {}
  }
  fs.rmSync(root, { recursive: true, force: true });
}
process.on('SIGINT', () => {
  cleanup();
  process.exit(130);
});

function request(method, urlPath, body) {
  return new Promise((resolve, reject) => {
    const payload = body === undefined ? undefined : JSON.stringify(body);
    const req = http.request({ socketPath, method, path: urlPath, headers: payload ? { 'content-type': 'application/json' } : {} }, (res) => {
      let text = '';
      res.on('data', (c) => (text += c));
      res.on('end', () => resolve({ status: res.statusCode, body: text ? JSON.parse(text) : undefined }));
    });
    req.on('error', reject);
    req.end(payload);
  });
}

const percentile = (values, p) => {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)];
};

async function bareQemuStart() {
  const sock = path.join(root, `floor-${Date.now()}.sock`);
  const started = performance.now();
  const child = spawn('qemu-system-x86_64', ['-M', 'microvm', '-accel', 'tcg', '-m', '512M', '-nodefaults', '-nographic', '-S', '-kernel', manifest.kernel, '-qmp', `unix:${sock},server=on,wait=off`], { stdio: 'ignore' });
  children.add(child);
  const qmp = await QmpClient.connect(sock, { timeoutMs: 10_000 });
  const elapsed = performance.now() - started;
  qmp.close();
  child.kill('SIGKILL');
  children.delete(child);
  return elapsed;
}

try {
  const daemon = spawn(process.execPath, [path.join(repo, 'packages/daemon/dist/main.js')], {
    env: { ...process.env, CAPSULE_STATE_DIR: path.join(root, 'state'), CAPSULE_RUNTIME_DIR: path.join(root, 'run'), CAPSULE_SOCKET: socketPath, CAPSULE_LOG_LEVEL: 'warn' },
    stdio: 'ignore',
  });
  children.add(daemon);
  for (let i = 0; ; i++) {
    try {
      if ((await request('GET', '/health')).status === 200) break;
    } catch {}
    if (i > 300) throw new Error('capsuled did not start');
    await sleep(50);
  }

  const floor = [];
  const cold = [];
  let rssKiB = 0;
  for (let i = 0; i < runs + 1; i++) {
    floor.push(await bareQemuStart());
    const started = performance.now();
    const created = await request('POST', '/v1/sandboxes', {});
    if (created.status !== 201) throw new Error(`create failed: ${JSON.stringify(created.body)}`);
    const exec = await request('POST', `/v1/sandboxes/${created.body.id}/exec`, { cmd: ['true'] });
    if (exec.status !== 200) throw new Error(`exec failed: ${JSON.stringify(exec.body)}`);
    cold.push(performance.now() - started);
    if (i === 0) {
      await sleep(5000); // idle, after the boot settled
      rssKiB = Number(/VmRSS:\s+(\d+)/.exec(fs.readFileSync(`/proc/${created.body.pid}/status`, 'utf8'))[1]);
    }
    await request('DELETE', `/v1/sandboxes/${created.body.id}`);
  }
  floor.shift(); // warm-up
  cold.shift();

  const rootfs = manifest.templates.base.rootfs;
  const stat = fs.statSync(rootfs);
  const row = (name, values) => `| ${name} | ${percentile(values, 50).toFixed(0)} ms | ${percentile(values, 95).toFixed(0)} ms |`;
  const p50Ratio = percentile(cold, 50) / percentile(floor, 50);
  console.log(`Foundation figures (${runs} runs after one warm-up, ${os.cpus().length} cores, TCG unless the host has working KVM)\n`);
  console.log('| case | p50 | p95 |');
  console.log('| --- | --- | --- |');
  console.log(row('bare QEMU start to QMP greeting (floor)', floor));
  console.log(row('cold boot: create to first exec result', cold));
  console.log(`\ncold boot / floor (p50): ${p50Ratio.toFixed(1)}x`);
  console.log(`idle sandbox (512 MiB) QEMU RSS: ${(rssKiB / 1024).toFixed(0)} MiB`);
  console.log(`base template rootfs: ${(stat.size / 1048576).toFixed(0)} MiB apparent, ${((stat.blocks * 512) / 1048576).toFixed(0)} MiB on disk`);
} finally {
  cleanup();
}
