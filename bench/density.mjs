#!/usr/bin/env node
// Density: N idle sandboxes from the base template's warm snapshot at once.
// Reports the extra host memory per sandbox (MemAvailable before and after,
// divided by N) and the exec round trip (`true`) with N running against a
// lone sandbox measured in the same run. A private daemon with its own
// folders; everything it started is removed, also when interrupted.
// Usage: node bench/density.mjs [N]
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';

const repo = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const count = Number(process.argv[2] ?? 20);
const root = fs.mkdtempSync(path.join(os.tmpdir(), 'capsule-bench-'));
const socketPath = path.join(root, 'capsuled.sock');
let daemon;

function cleanup() {
  daemon?.kill('SIGKILL');
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

const availableMiB = () => Number(/^MemAvailable:\s+(\d+)/m.exec(fs.readFileSync('/proc/meminfo', 'utf8'))[1]) / 1024;
const p50 = (values) => [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)];

async function execLatencies(ids, rounds) {
  const times = [];
  for (let r = 0; r < rounds; r++) {
    for (const id of ids) {
      const started = performance.now();
      const res = await request('POST', `/v1/sandboxes/${id}/exec`, { cmd: ['true'] });
      if (res.status !== 200) throw new Error(`exec failed: ${JSON.stringify(res.body)}`);
      times.push(performance.now() - started);
    }
  }
  return times;
}

try {
  daemon = spawn(process.execPath, [path.join(repo, 'packages/daemon/dist/main.js')], {
    env: { ...process.env, CAPSULE_STATE_DIR: path.join(root, 'state'), CAPSULE_RUNTIME_DIR: path.join(root, 'run'), CAPSULE_SOCKET: socketPath, CAPSULE_LOG_LEVEL: 'warn', CAPSULE_WARM_POOL_SIZE: '0' },
    stdio: 'ignore',
  });
  for (let i = 0; ; i++) {
    try {
      const t = await request('GET', '/v1/templates');
      if (t.body.templates[0].warmSnapshot === 'ready') break;
    } catch {}
    if (i > 1200) throw new Error('capsuled did not get ready');
    await sleep(50);
  }
  // The lone sandbox first, warmed up, then the baseline figures.
  const lone = (await request('POST', '/v1/sandboxes', {})).body.id;
  await execLatencies([lone], 3);
  const loneTimes = await execLatencies([lone], 20);
  await sleep(2000);
  const before = availableMiB();
  const ids = [];
  for (let i = 0; i < count; i++) {
    const res = await request('POST', '/v1/sandboxes', {});
    if (res.status !== 201) throw new Error(`create ${i} failed: ${JSON.stringify(res.body)}`);
    ids.push(res.body.id);
    await request('POST', `/v1/sandboxes/${res.body.id}/exec`, { cmd: ['true'] }); // each one warmed up, as the lone one
  }
  await sleep(5000); // idle
  const after = availableMiB();
  const crowdedTimes = await execLatencies([lone], 20);
  const use = (await request('GET', `/v1/sandboxes/${ids[0]}`)).body.memoryUse;
  console.log(`Density: ${count} idle sandboxes from the warm snapshot (512 MiB each), ${os.cpus().length} cores\n`);
  console.log(`extra host memory per sandbox: ${((before - after) / count).toFixed(0)} MiB (MemAvailable ${before.toFixed(0)} -> ${after.toFixed(0)} MiB)`);
  console.log(`one of them: ${use.privateMiB} MiB private, ${use.sharedMiB} MiB shared (RSS ${use.rssMiB} MiB)`);
  console.log(`exec round trip of true, p50: lone ${p50(loneTimes).toFixed(0)} ms, with ${count} others idle ${p50(crowdedTimes).toFixed(0)} ms (${(p50(crowdedTimes) / p50(loneTimes)).toFixed(2)}x)`);
} finally {
  cleanup();
}
