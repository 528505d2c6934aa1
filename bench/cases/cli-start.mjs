// How long `capsule` takes to start: `capsule --version` (start-up alone) and
// `capsule ls` against a running daemon (start-up, the SDK and one API round
// trip), each against `node -e 0` (Node's own start, the floor), the three
// measured in turn in every round so that a busy moment of the machine falls on all.
import { spawn } from 'node:child_process';
import path from 'node:path';
import { repo } from '../harness.mjs';

const cli = path.join(repo, 'packages/cli/dist/main.js');

/** Wall time in ms of running `node ...args` to its exit; throws unless it exits 0. */
function timeNode(args, env) {
  return new Promise((resolve, reject) => {
    const started = performance.now();
    const child = spawn(process.execPath, args, { env, stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    child.stderr.on('data', (chunk) => (stderr += chunk));
    child.once('error', reject);
    child.once('close', (code) => {
      const elapsed = performance.now() - started;
      if (code === 0) resolve(elapsed);
      else reject(new Error(`node ${args.join(' ')} exited ${code}: ${stderr}`));
    });
  });
}

/** Samples of the three, `runs` rounds after `warmups`, with `ls` asking the daemon at `socketPath`. */
export async function measureCliStart({ runs, warmups }, socketPath) {
  const env = { PATH: process.env.PATH ?? '', CAPSULE_SOCKET: socketPath };
  const commands = { 'node-start': ['-e', '0'], 'cli-version': [cli, '--version'], 'cli-ls': [cli, 'ls'] };
  const samples = Object.fromEntries(Object.keys(commands).map((id) => [id, []]));
  for (let round = 0; round < warmups + runs; round++) {
    for (const [id, args] of Object.entries(commands)) {
      const elapsed = await timeNode(args, env);
      if (round >= warmups) samples[id].push(elapsed);
    }
  }
  return samples;
}

export default {
  name: 'cli-start',
  position: 5,
  results: [
    { id: 'node-start', title: '`node -e 0`: Node starting and exiting (the floor of any command written in Node)', unit: 'ms' },
    {
      id: 'cli-version',
      title: '`capsule --version` (start-up alone)',
      unit: 'ms',
      baselines: [{ id: 'node-start', label: '`node -e 0`' }],
    },
    {
      id: 'cli-ls',
      title: '`capsule ls` with a running daemon (start-up, then one API round trip)',
      unit: 'ms',
      baselines: [{ id: 'node-start', label: '`node -e 0`' }],
    },
  ],
  async run(ctx) {
    const daemon = await ctx.daemon('pool');
    return measureCliStart(ctx, daemon.socketPath);
  },
};
