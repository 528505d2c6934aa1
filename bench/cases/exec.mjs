// The exec round trip of `true` through the daemon's API into a running
// sandbox, against starting `true` on the host itself (what running any
// process costs at least).
import { spawn } from 'node:child_process';
import { repeat, timed } from '../harness.mjs';

function spawnOnHost(command) {
  return new Promise((resolve, reject) => {
    const child = spawn(command, [], { stdio: 'ignore' });
    child.once('error', reject);
    child.once('exit', (code) => (code === 0 ? resolve() : reject(new Error(`${command} exited ${code}`))));
  });
}

export default {
  name: 'exec',
  position: 20,
  results: [
    { id: 'host-true', title: 'host: start `true` and wait for it (baseline of exec)', unit: 'ms' },
    { id: 'exec', title: 'exec round trip of `true` through the daemon', unit: 'ms', baselines: [{ id: 'host-true', label: 'the host' }] },
  ],
  async run(ctx) {
    const host = await repeat(ctx, () => timed(() => spawnOnHost('true')));
    const daemon = await ctx.daemon('pool');
    const { id } = await daemon.create();
    try {
      // A few more warm-ups than other cases: under TCG the first runs of the agent's exec path are translated anew.
      const samples = await repeat({ runs: ctx.runs, warmups: Math.max(3, ctx.warmups) }, () => timed(() => daemon.exec(id, ['true'])));
      return { 'host-true': host, exec: samples };
    } finally {
      await daemon.remove(id);
    }
  },
};
