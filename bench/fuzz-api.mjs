#!/usr/bin/env node
// The long run of the API fuzzer (the suite runs a short one): a private
// capsuled on TCP and its unix socket, optionally with a running sandbox and
// a valid key, takes N seeded hostile requests. Reports answers by status,
// any undocumented 5xx, whether the daemon's pid is the same and its RSS
// before and after. Exits 1 when the daemon died or answered an undocumented 5xx.
// Usage: node bench/fuzz-api.mjs [--requests 100000] [--seed N] [--minutes 20] [--no-sandbox] [--kinds agent-path,agent-header,...]   (after npm run build)
import fs from 'node:fs';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { setTimeout as sleep } from 'node:timers/promises';
import { BenchRun } from './harness.mjs';
import { daemonEndpoints, runFuzz } from '../packages/daemon/test/fuzz/api-fuzzer.mjs';

const { values } = parseArgs({
  options: {
    requests: { type: 'string', default: '100000' },
    seed: { type: 'string', default: String(Date.now() % 1_000_000) },
    minutes: { type: 'string', default: '20' },
    concurrency: { type: 'string', default: '16' },
    'no-sandbox': { type: 'boolean', default: false },
    kinds: { type: 'string' },
  },
});
const rssMiB = (pid) => Math.round(Number(/VmRSS:\s+(\d+)/.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1] ?? 0) / 1024);

const run = new BenchRun();
let failed = false;
try {
  const daemon = await run.startDaemon('fuzz', { CAPSULE_LISTEN: 'http://127.0.0.1:0', CAPSULE_WARM_POOL_SIZE: '0' });
  const pid = daemon.child.pid;
  const info = await daemon.call('GET', '/v1/info');
  const [tcpHost, tcpPort] = info.tcpAddress.split(':');
  const apiKey = (await daemon.call('POST', '/v1/api-keys', { name: 'fuzz' }, 201)).key;
  const target = { apiKey, domain: info.domain };
  if (!values['no-sandbox']) {
    const sandbox = await daemon.create({ timeoutMs: 0 });
    Object.assign(target, {
      sandboxId: sandbox.id,
      trafficToken: sandbox.trafficAccessToken,
      accessToken: (await daemon.call('GET', `/sandboxes/${sandbox.id}`)).envdAccessToken,
    });
  }
  const endpoints = daemonEndpoints({ tcpHost, tcpPort: Number(tcpPort), socketPath: daemon.socketPath });
  const rssBefore = rssMiB(pid);
  const seed = Number(values.seed);
  const started = Date.now();
  const result = await runFuzz({
    seed,
    requests: Number(values.requests),
    timeLimitMs: Number(values.minutes) * 60_000,
    endpoints,
    target,
    concurrency: Number(values.concurrency),
    kinds: values.kinds?.split(','),
  });
  const seconds = (Date.now() - started) / 1000;
  await sleep(3000);
  const alive = daemon.child.exitCode === null && daemon.child.signalCode === null;
  const rssAfter = alive ? rssMiB(pid) : undefined;
  console.log(
    `seed ${seed}: ${result.sent} requests in ${seconds.toFixed(1)} s (${Math.round(result.sent / seconds)}/s)${result.stoppedByTime ? ', stopped by the time limit' : ''}`,
  );
  console.log(`by status: ${JSON.stringify(result.byStatus)}; by outcome: ${JSON.stringify(result.byOutcome)}`);
  console.log(`daemon: ${alive ? `same pid ${pid}` : 'DIED'}; RSS ${rssBefore} MiB before, ${rssAfter ?? '-'} MiB after`);
  for (const answer of result.undocumented) console.log(`undocumented: ${JSON.stringify(answer)}`);
  for (const request of result.unanswered) console.log(`no answer within 5 s: ${JSON.stringify(request).slice(0, 400)}`);
  failed = !alive || result.undocumented.length > 0;
  if (!alive) console.log(fs.readFileSync(path.join(daemon.dir, 'capsuled.log'), 'utf8').slice(-3000));
} finally {
  run.cleanup();
}
process.exit(failed ? 1 : 0);
