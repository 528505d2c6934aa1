// Starting a sandbox, from the floor every VM pays up to a create served by
// the warm pool. "Create" is measured from the create request to the first
// exec result (`echo ready`) through the API, as a user sees it.
import { spawn } from 'node:child_process';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { createToFirstOutput, repeat, repo } from '../harness.mjs';
import { percentile } from '../lib/stats.mjs';

const floor = { id: 'floor', label: 'the floor' };
const cold = { id: 'cold-boot', label: 'cold boot' };

/** Bare QEMU (microvm, no guest running: -S) from process start to the QMP greeting: what every VM start pays at least. */
async function bareQemuStart(ctx, index) {
  // The daemon's own QMP client (built by set-up), so the floor pays what a sandbox start pays for QMP.
  const { QmpClient } = await import(path.join(repo, 'packages/daemon/dist/vmm/qmp.js'));
  const sock = path.join(ctx.run.root, `floor-${index}.qmp`);
  const started = performance.now();
  const child = spawn(
    'qemu-system-x86_64',
    [
      '-M',
      'microvm',
      '-accel',
      ctx.accel,
      '-m',
      '512M',
      '-nodefaults',
      '-no-user-config',
      '-nographic',
      '-S',
      '-kernel',
      ctx.manifest.kernel,
      '-qmp',
      `unix:${sock},server=on,wait=off`,
    ],
    { stdio: 'ignore' },
  );
  ctx.run.children.add(child);
  try {
    const qmp = await QmpClient.connect(sock, { timeoutMs: 10_000, isAlive: () => child.exitCode === null });
    const elapsed = performance.now() - started;
    qmp.close();
    return elapsed;
  } finally {
    const exited = new Promise((resolve) => child.once('exit', resolve));
    child.kill('SIGKILL');
    await exited;
    ctx.run.children.delete(child);
  }
}

export default {
  name: 'start',
  position: 10,
  results: [
    { id: 'floor', title: 'bare QEMU start to QMP greeting (the floor)', unit: 'ms' },
    { id: 'cold-boot', title: 'cold boot: create to first exec output', unit: 'ms', baselines: [floor] },
    { id: 'warm-restore', title: 'warm snapshot restored on demand: create to first exec output', unit: 'ms', baselines: [floor, cold] },
    {
      id: 'warm-create',
      title: 'create from a warm template (warm pool, the default): create to first exec output',
      unit: 'ms',
      baselines: [floor, cold],
    },
  ],
  async run(ctx) {
    ctx.log('floor: bare QEMU starts');
    const floorSamples = await repeat(ctx, (i) => bareQemuStart(ctx, i));

    ctx.log('cold boots');
    let daemon = await ctx.daemon('cold');
    const coldSamples = await repeat(ctx, () => createToFirstOutput(daemon));

    ctx.log('restores on demand');
    daemon = await ctx.daemon('restore');
    const restoreSamples = await repeat(ctx, () => createToFirstOutput(daemon));

    ctx.log('creates from the warm pool');
    daemon = await ctx.daemon('pool');
    // The pool refills a second after a claim, with a restore and a first command. Each create should find a VM
    // waiting, as a user's occasional create does; the API does not tell when it is, so wait well past a restore.
    const settleMs = Math.max(3000, 1000 + 2 * percentile(restoreSamples, 50));
    const poolSamples = await repeat(ctx, async () => {
      await sleep(settleMs);
      return createToFirstOutput(daemon);
    });
    return {
      floor: floorSamples,
      'cold-boot': coldSamples,
      'warm-restore': restoreSamples,
      'warm-create': {
        samples: poolSamples,
        note: `each create waits ${(settleMs / 1000).toFixed(1)} s after the previous one (twice a restore on demand, and a second) so that the warm pool has refilled; a create that finds the pool empty is restored on demand (the row above)`,
      },
    };
  },
};
