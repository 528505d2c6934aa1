#!/usr/bin/env node
// Density: N idle sandboxes from the base template's warm snapshot at once.
// Reports the extra host memory per sandbox (MemAvailable before and after,
// divided by N) and the exec round trip (`true`) with N running against a
// lone sandbox measured in the same run. A private daemon with its own
// folders; everything it started is removed, also when interrupted.
// Usage: node bench/density.mjs [N]
import fs from 'node:fs';
import os from 'node:os';
import { setTimeout as sleep } from 'node:timers/promises';
import { BenchRun, percentile } from './harness.mjs';

const count = Number(process.argv[2] ?? 20);
const run = new BenchRun();
const request = (...args) => run.request(...args);

const availableMiB = () => Number(/^MemAvailable:\s+(\d+)/m.exec(fs.readFileSync('/proc/meminfo', 'utf8'))[1]) / 1024;
const p50 = (values) => percentile(values, 50);

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
  await run.startDaemon('density', { CAPSULE_WARM_POOL_SIZE: '0' });
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
  run.cleanup();
}
