#!/usr/bin/env node
// Terminals against pipes in capsule-agent, side by side in one run: the
// bundled agent on a unix socket on this host (no VM), driven by a Connect
// client. Reports p50/p95 of Start-to-end for `true`, and of a one-byte input
// round trip (SendInput until `cat` sends it back), pty over pipes as ratios.
// The agent and everything it started end with the run.
// Usage: node bench/agent-pty.mjs [ROUNDS]   (after npm run build)
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { createClient } from '@connectrpc/connect';
import { createConnectTransport } from '@connectrpc/connect-node';
import { Process } from '@capsule/protocol/agent';
import { repo } from './harness.mjs';
import { percentile } from './lib/stats.mjs';

const rounds = Number(process.argv[2] ?? 50);
const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'capsule-bench-pty-'));
const socketPath = path.join(dir, 'agent.sock');
const agent = spawn(process.execPath, [path.join(repo, 'packages/agent/dist/capsule-agent.cjs'), '--listen', `unix:${socketPath}`], {
  stdio: ['ignore', 'ignore', 'inherit'],
  env: { ...process.env, CAPSULE_GUEST_HELPER: path.join(dir, 'none'), CAPSULE_HOSTNAME_FILE: path.join(dir, 'hostname') },
});
const cleanup = () => {
  agent.kill('SIGTERM');
  fs.rmSync(dir, { recursive: true, force: true });
};
process.on('SIGINT', () => {
  cleanup();
  process.exit(130);
});

const terminal = { size: { rows: 24, cols: 80 } };
const byPid = (pid) => ({ selector: { case: 'pid', value: pid } });

async function startToEnd(client, onTerminal) {
  const started = performance.now();
  for await (const response of client.start({ process: { cmd: 'true' }, ...(onTerminal && { pty: terminal }) })) {
    if (response.event?.event.case === 'end') break;
  }
  return performance.now() - started;
}

/** Round trips of one byte through `cat`, on a terminal or on pipes. */
async function inputRoundTrips(client, onTerminal, count) {
  const times = [];
  const controller = new AbortController();
  const events = client
    .start({ process: { cmd: 'cat' }, ...(onTerminal ? { pty: terminal } : { stdin: true }) }, { signal: controller.signal })
    [Symbol.asyncIterator]();
  const first = await events.next();
  const pid = first.value.event.event.value.pid;
  const kind = onTerminal ? 'pty' : 'stdin';
  const output = onTerminal ? 'pty' : 'stdout';
  for (let i = 0; i < count; i++) {
    const byte = 'x';
    const started = performance.now();
    await client.sendInput({ process: byPid(pid), input: { input: { case: kind, value: Buffer.from(onTerminal ? byte : `${byte}\n`) } } });
    // On a terminal, the echo of the typed byte comes back first; on pipes, cat's line.
    for (;;) {
      const next = await events.next();
      const data = next.value?.event?.event;
      if (data?.case === 'data' && data.value.output.case === output) break;
    }
    times.push(performance.now() - started);
  }
  await client.sendSignal({ process: byPid(pid), signal: 9 });
  controller.abort();
  return times;
}

const summary = (times) => ({ p50: percentile(times, 50), p95: percentile(times, 95) });
const ms = (value) => `${value.toFixed(2)} ms`;

try {
  for (let i = 0; ; i++) {
    const up = await new Promise((resolve) => {
      const probe = net.connect(socketPath, () => (probe.destroy(), resolve(true)));
      probe.on('error', () => resolve(false));
    });
    if (up) break;
    if (i > 200) throw new Error('the agent did not listen');
    await sleep(25);
  }
  const client = createClient(
    Process,
    createConnectTransport({ httpVersion: '2', baseUrl: 'http://agent', nodeOptions: { createConnection: () => net.connect(socketPath) } }),
  );
  // Warm up both paths (the first terminal loads node-pty's addon).
  for (const onTerminal of [false, true]) {
    await startToEnd(client, onTerminal);
    await inputRoundTrips(client, onTerminal, 5);
  }
  const results = {};
  for (const onTerminal of [false, true]) {
    const starts = [];
    for (let i = 0; i < rounds; i++) starts.push(await startToEnd(client, onTerminal));
    results[onTerminal ? 'pty' : 'pipes'] = { start: summary(starts), input: summary(await inputRoundTrips(client, onTerminal, rounds)) };
  }
  console.log(`capsule-agent on this host, ${rounds} rounds each`);
  console.log('| case | pipes p50 | pty p50 | pipes p95 | pty p95 | pty / pipes (p50) |');
  console.log('| --- | --- | --- | --- | --- | --- |');
  for (const [name, key] of [
    ['Start to end of `true`', 'start'],
    ['one-byte input round trip', 'input'],
  ]) {
    const pipes = results.pipes[key];
    const pty = results.pty[key];
    console.log(
      `| ${name} | ${ms(pipes.p50)} | ${ms(pty.p50)} | ${ms(pipes.p95)} | ${ms(pty.p95)} | ${(pty.p50 / pipes.p50).toFixed(2)}x |`,
    );
  }
} finally {
  cleanup();
}
