#!/usr/bin/env node
// Sandbox start figures, measured side by side in one run on this host:
//   - bare QEMU start: process start to QMP greeting (the floor every VM pays);
//   - cold boot: create request to the first exec result, through the API
//     (a daemon with warm snapshots off);
//   - warm restore on demand: the same from the template's warm snapshot
//     (a daemon with an empty warm pool);
//   - warm pool: the same when a restored VM is waiting (the default);
//   - pause and resume of a 512 MiB sandbox that touched 200 MiB of memory;
//   - fork of one sandbox into 10;
//   - host memory of one idle sandbox (QEMU RSS), cold and restored;
//   - size of the base template's root filesystem.
// Each daemon is private (own state and runtime folders); everything started
// is removed, also when interrupted. Usage: node bench/lifecycle.mjs [runs]
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { BenchRun, percentile, repo } from './harness.mjs';

const { QmpClient } = await import(path.join(repo, 'packages/daemon/dist/vmm/qmp.js'));
const runs = Number(process.argv[2] ?? 10);
const cacheDir = process.env.CAPSULE_CACHE_DIR ?? '/var/cache/capsule';
const manifest = JSON.parse(fs.readFileSync(path.join(cacheDir, 'guest-manifest.json'), 'utf8'));
const run = new BenchRun();
const request = (...args) => run.request(...args);
const startDaemon = (...args) => run.startDaemon(...args);

async function bareQemuStart() {
  const sock = path.join(run.root, `floor-${Date.now()}.sock`);
  const started = performance.now();
  const child = spawn('qemu-system-x86_64', ['-M', 'microvm', '-accel', 'tcg', '-m', '512M', '-nodefaults', '-nographic', '-S', '-kernel', manifest.kernel, '-qmp', `unix:${sock},server=on,wait=off`], { stdio: 'ignore' });
  run.children.add(child);
  const qmp = await QmpClient.connect(sock, { timeoutMs: 10_000 });
  const elapsed = performance.now() - started;
  qmp.close();
  child.kill('SIGKILL');
  run.children.delete(child);
  return elapsed;
}

/** Create → first exec result, `runs` times after one warm-up; `settleMs` between runs lets a pool refill. */
async function createToFirstExec(runs, settleMs, measureRss) {
  const times = [];
  let rssKiB = 0;
  for (let i = 0; i < runs + 1; i++) {
    await sleep(settleMs);
    const started = performance.now();
    const created = await request('POST', '/v1/sandboxes', {});
    if (created.status !== 201) throw new Error(`create failed: ${JSON.stringify(created.body)}`);
    const exec = await request('POST', `/v1/sandboxes/${created.body.id}/exec`, { cmd: ['true'] });
    if (exec.status !== 200) throw new Error(`exec failed: ${JSON.stringify(exec.body)}`);
    if (i > 0) times.push(performance.now() - started);
    if (i === 1 && measureRss) {
      await sleep(3000); // idle, after the start settled
      rssKiB = Number(/VmRSS:\s+(\d+)/.exec(fs.readFileSync(`/proc/${created.body.pid}/status`, 'utf8'))[1]);
    }
    await request('DELETE', `/v1/sandboxes/${created.body.id}`);
  }
  return { times, rssKiB };
}

/** Pause and resume one sandbox `cycles` times after it filled 200 MiB of its memory (tmpfs). */
async function pauseAndResume(cycles) {
  const created = await request('POST', '/v1/sandboxes', {});
  if (created.status !== 201) throw new Error(`create failed: ${JSON.stringify(created.body)}`);
  const id = created.body.id;
  await request('POST', `/v1/sandboxes/${id}/exec`, { cmd: ['sh', '-c', 'head -c 200M /dev/urandom > /dev/shm/touched'] });
  const pauses = [];
  const resumes = [];
  for (let i = 0; i < cycles; i++) {
    let started = performance.now();
    const paused = await request('POST', `/v1/sandboxes/${id}/pause`);
    if (paused.status !== 200) throw new Error(`pause failed: ${JSON.stringify(paused.body)}`);
    pauses.push(performance.now() - started);
    started = performance.now();
    const resumed = await request('POST', `/v1/sandboxes/${id}/resume`);
    if (resumed.status !== 200) throw new Error(`resume failed: ${JSON.stringify(resumed.body)}`);
    resumes.push(performance.now() - started);
  }
  await request('DELETE', `/v1/sandboxes/${id}`);
  return { pauses, resumes };
}

/** Forks one sandbox into `count` copies in one request; returns the wall time. */
async function forkInto(count) {
  const created = await request('POST', '/v1/sandboxes', {});
  const started = performance.now();
  const forked = await request('POST', `/v1/sandboxes/${created.body.id}/fork`, { count });
  const elapsed = performance.now() - started;
  if (forked.status !== 201) throw new Error(`fork failed: ${JSON.stringify(forked.body)}`);
  for (const sandbox of [created.body, ...forked.body.sandboxes]) await request('DELETE', `/v1/sandboxes/${sandbox.id}`);
  return elapsed;
}

try {
  const floor = [];
  for (let i = 0; i < runs + 1; i++) floor.push(await bareQemuStart());
  floor.shift(); // warm-up

  let stop = await startDaemon('cold', { CAPSULE_WARM_SNAPSHOTS: 'off' });
  const cold = await createToFirstExec(runs, 0, true);
  await stop();
  stop = await startDaemon('restore', { CAPSULE_WARM_POOL_SIZE: '0' });
  const restore = await createToFirstExec(runs, 0, true);
  await stop();
  stop = await startDaemon('pool', { CAPSULE_WARM_POOL_SIZE: '1' });
  const pool = await createToFirstExec(runs, 2500, false);
  const { pauses, resumes } = await pauseAndResume(Math.max(3, Math.ceil(runs / 2)));
  const forkMs = await forkInto(10);
  await stop();

  const rootfs = manifest.templates.base.rootfs;
  const stat = fs.statSync(rootfs);
  const p50 = (values) => percentile(values, 50);
  const row = (name, values) => `| ${name} | ${p50(values).toFixed(0)} ms | ${percentile(values, 95).toFixed(0)} ms | ${(p50(values) / p50(floor)).toFixed(1)}x |`;
  console.log(`Sandbox lifecycle (${runs} runs each after one warm-up, ${os.cpus().length} cores, TCG unless the host has working KVM)\n`);
  console.log('| case | p50 | p95 | p50 / floor |');
  console.log('| --- | --- | --- | --- |');
  console.log(row('bare QEMU start to QMP greeting (floor)', floor));
  console.log(row('cold boot: create to first exec result', cold.times));
  console.log(row('warm snapshot, restored on demand: create to first exec result', restore.times));
  console.log(row('warm snapshot, from the warm pool: create to first exec result', pool.times));
  console.log(`| pause (512 MiB sandbox, 200 MiB touched) | ${p50(pauses).toFixed(0)} ms | ${percentile(pauses, 95).toFixed(0)} ms | |`);
  console.log(`| resume (the same) | ${p50(resumes).toFixed(0)} ms | ${percentile(resumes, 95).toFixed(0)} ms | |`);
  console.log(`| fork into 10 copies (one request) | ${forkMs.toFixed(0)} ms | | |`);
  console.log(`\ncold boot / warm pool (p50): ${(p50(cold.times) / p50(pool.times)).toFixed(1)}x`);
  console.log(`idle sandbox (512 MiB) QEMU RSS: cold boot ${(cold.rssKiB / 1024).toFixed(0)} MiB, restored ${(restore.rssKiB / 1024).toFixed(0)} MiB (RSS counts the snapshot's shared pages in each)`);
  console.log(`base template rootfs: ${(stat.size / 1048576).toFixed(0)} MiB apparent, ${((stat.blocks * 512) / 1048576).toFixed(0)} MiB on disk`);
} finally {
  run.cleanup();
}
