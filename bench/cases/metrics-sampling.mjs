// What the metrics history costs the daemon: its own CPU (user + system of the
// capsuled process, from /proc/PID/stat; QEMUs are other processes) with N idle
// sandboxes, sampled every 5 s (the default) and with sampling off
// (CAPSULE_METRICS_INTERVAL_MS=0), in percent of one core. Everything else the
// daemon does meanwhile (nothing: no request is made) is the same on both sides.
import fs from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';

/** Each measured window covers four sampling ticks at the default 5 s. */
const WINDOW_MS = 20_000;
/** Let the creates' and first exec's after-effects (pool refills, GC) settle before measuring. */
const SETTLE_MS = 10_000;

export default {
  name: 'metrics-sampling',
  position: 55,
  results: [
    { id: 'sampling-off', title: "daemon's own CPU with N idle sandboxes, metrics sampling off (baseline)", unit: '% core' },
    {
      id: 'sampling-on',
      title: "daemon's own CPU with N idle sandboxes, sampled every 5 s (the guest asked every 15 s)",
      unit: '% core',
      baselines: [{ id: 'sampling-off', label: 'sampling off' }],
    },
  ],
  async run(ctx) {
    const n = ctx.densityCount;
    // A few windows per side: each is 20 s of idle, so the case stays minutes long even with --runs 20.
    const windows = Math.min(ctx.runs, 3);
    const off = await daemonCpu(ctx, 'restore-unsampled', n, windows);
    const on = await daemonCpu(ctx, 'restore', n, windows);
    const title = (what) => `daemon's own CPU with ${n} idle sandboxes, ${what}`;
    return {
      'sampling-off': { samples: off, title: title('metrics sampling off (baseline)') },
      'sampling-on': { samples: on, title: title('sampled every 5 s (the guest asked every 15 s)') },
    };
  },
};

/** Starts N idle sandboxes on a daemon of `profile` and returns its CPU in percent of one core over each window. */
async function daemonCpu(ctx, profile, n, windows) {
  const daemon = await ctx.daemon(profile);
  const ids = [];
  try {
    ctx.log(`metrics-sampling: ${n} idle sandboxes on the ${profile} daemon`);
    for (let i = 0; i < n; i++) {
      const sandbox = await daemon.create();
      ids.push(sandbox.id);
      await daemon.exec(sandbox.id, ['true']);
    }
    await sleep(SETTLE_MS);
    const percents = [];
    for (let i = 0; i < windows; i++) {
      const before = { cpu: cpuSecondsOf(daemon.child.pid), at: performance.now() };
      await sleep(WINDOW_MS);
      const seconds = cpuSecondsOf(daemon.child.pid) - before.cpu;
      percents.push((seconds / ((performance.now() - before.at) / 1000)) * 100);
    }
    return percents;
  } finally {
    for (const id of ids) await daemon.remove(id);
  }
}

/** utime + stime of a process, in seconds (USER_HZ is 100 on every Linux this runs on). */
function cpuSecondsOf(pid) {
  const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(fields[14 - 3]) + Number(fields[15 - 3])) / 100;
}
