// Density: N idle sandboxes from one template's warm snapshot at once. Host
// memory is counted as Pss (each page's cost split among the processes that
// map it), added up over every QEMU and the daemon, so the template's pages
// that all clones share are counted once; MemAvailable's drop is given too.
// Exec latency is that of one sandbox, alone and then among N idle others.
import { setTimeout as sleep } from 'node:timers/promises';
import { repeat, timed } from '../harness.mjs';
import { availableMiB, pssMiB, tcgCodeMiB } from '../lib/machine.mjs';

const IDLE_MS = 5000;

export default {
  name: 'density',
  position: 50,
  results: [
    { id: 'density-lone-exec', title: 'exec round trip of `true`, one sandbox alone (baseline of density)', unit: 'ms' },
    {
      id: 'density-exec',
      title: 'exec round trip of `true`, the same sandbox among N idle ones',
      unit: 'ms',
      baselines: [{ id: 'density-lone-exec', label: 'alone' }],
    },
    { id: 'density-lone-memory', title: 'host memory of one idle sandbox alone (QEMU Pss)', unit: 'MiB' },
    {
      id: 'density-memory',
      title: 'extra host memory per idle sandbox, N at once (Pss of all QEMUs and the daemon)',
      unit: 'MiB',
      baselines: [{ id: 'density-lone-memory', label: 'alone' }],
    },
    // What KVM would not spend: under TCG each QEMU keeps its own translations of the guest code it ran.
    {
      id: 'density-tcg-code',
      title: "of which TCG's code buffer (translated guest code, one per VM; none under KVM)",
      unit: 'MiB',
      baselines: [{ id: 'density-memory', label: 'of the extra memory' }],
    },
    // Also counts kernel memory and page cache, and whatever else the host does meanwhile (noisy on a shared machine).
    { id: 'density-memavailable', title: "drop of the host's MemAvailable per idle sandbox, N at once", unit: 'MiB' },
  ],
  async run(ctx) {
    const n = ctx.densityCount;
    // No warm pool: its idle VM would be counted with the sandboxes.
    const daemon = await ctx.daemon('restore');
    const ids = [];
    try {
      const lone = await daemon.create();
      ids.push(lone.id);
      const exec = () => timed(() => daemon.exec(lone.id, ['true']));
      // Many warm-ups: under TCG a freshly restored VM translates the agent's exec path anew for its first several commands.
      const loneTimes = await repeat({ runs: ctx.runs, warmups: Math.max(10, ctx.warmups) }, exec);
      await sleep(IDLE_MS);
      const pids = [lone.pid];
      const loneMiB = pssMiB(pids);
      const before = { pss: loneMiB + pssMiB([daemon.child.pid]), available: availableMiB(), tcgCode: tcgCodeMiB(pids) };

      ctx.log(`density: starting ${n} sandboxes`);
      for (let i = 0; i < n; i++) {
        const sandbox = await daemon.create();
        ids.push(sandbox.id);
        pids.push(sandbox.pid);
        await daemon.exec(sandbox.id, ['true']); // each one has run a command, as a sandbox in use has
      }
      await sleep(IDLE_MS);
      const after = { pss: pssMiB(pids) + pssMiB([daemon.child.pid]), available: availableMiB(), tcgCode: tcgCodeMiB(pids) };
      const crowdedTimes = await repeat({ runs: ctx.runs, warmups: 1 }, exec);
      const perSandbox = (after.pss - before.pss) / n;
      const note = "a lone sandbox's Pss is all of its pages, the template's included; the others share those";
      return {
        'density-lone-exec': loneTimes,
        'density-exec': { samples: crowdedTimes, title: `exec round trip of \`true\`, the same sandbox among ${n} idle ones` },
        'density-lone-memory': [loneMiB],
        'density-memory': {
          samples: [perSandbox],
          note,
          title: `extra host memory per idle sandbox, ${n} at once (Pss of all QEMUs and the daemon)`,
        },
        'density-tcg-code': [(after.tcgCode - before.tcgCode) / n],
        'density-memavailable': {
          samples: [(before.available - after.available) / n],
          title: `drop of the host's MemAvailable per idle sandbox, ${n} at once`,
        },
      };
    } finally {
      for (const id of ids) await daemon.remove(id);
    }
  },
};
