// Density: N idle sandboxes from one template's warm snapshot at once. Host
// memory is counted as Pss (each page's cost split among the processes that
// map it), added up over every QEMU and the daemon, so the template's pages
// that all clones share are counted once; MemAvailable's drop is given too.
// Exec latency is that of one sandbox, alone and then among N idle others.
// The host's KSM is reported as found (the bench never turns it on): how much
// of the QEMUs' memory it merged, and ksmd's CPU while they started and idled.
import { setTimeout as sleep } from 'node:timers/promises';
import { repeat, timed } from '../harness.mjs';
import { accelArgOf, availableMiB, ksmState, pssMiB, tcgCodeMiB } from '../lib/machine.mjs';

const IDLE_MS = 5000;
/** With KSM running the sandboxes idle longer, so that ksmd can get through their pages (at its own pace, as set on the host). */
const KSM_IDLE_MS = 60_000;

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
    // Already counted in the Pss above (a merged page's cost is split among its mappers); this says how much KSM did.
    { id: 'density-ksm-merged', title: "per sandbox, its QEMU's memory that KSM backs with shared pages", unit: 'MiB' },
    { id: 'density-ksmd-cpu', title: "ksmd's CPU meanwhile (what the merging cost)", unit: '% core' },
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

      const ksmBefore = ksmState(pids);
      const ksmStarted = performance.now();
      ctx.log(`density: starting ${n} sandboxes`);
      for (let i = 0; i < n; i++) {
        const sandbox = await daemon.create();
        ids.push(sandbox.id);
        pids.push(sandbox.pid);
        await daemon.exec(sandbox.id, ['true']); // each one has run a command, as a sandbox in use has
      }
      await sleep(ksmBefore?.running ? KSM_IDLE_MS : IDLE_MS);
      const ksmAfter = ksmState(pids);
      const ksmSeconds = (performance.now() - ksmStarted) / 1000;
      const after = { pss: pssMiB(pids) + pssMiB([daemon.child.pid]), available: availableMiB(), tcgCode: tcgCodeMiB(pids) };
      const crowdedTimes = await repeat({ runs: ctx.runs, warmups: 1 }, exec);
      const perSandbox = (after.pss - before.pss) / n;
      const accel = accelArgOf(lone.pid) ?? ctx.accel;
      const note = `a lone sandbox's Pss is all of its pages, the template's included; the others share those. QEMU ran with -accel ${accel}`;
      const ksmOff =
        ksmBefore === undefined
          ? 'the host kernel has no KSM'
          : 'KSM is off on this host (/sys/kernel/mm/ksm/run); the bench never turns it on';
      return {
        'density-lone-exec': loneTimes,
        'density-exec': { samples: crowdedTimes, title: `exec round trip of \`true\`, the same sandbox among ${n} idle ones` },
        'density-lone-memory': [loneMiB],
        'density-memory': {
          samples: [perSandbox],
          note,
          title: `extra host memory per idle sandbox, ${n} at once (Pss of all QEMUs and the daemon)`,
        },
        'density-tcg-code': {
          samples: [(after.tcgCode - before.tcgCode) / n],
          title: `of which TCG's code buffer (translated guest code, one per VM, -accel ${accel}; none under KVM)`,
        },
        'density-memavailable': {
          samples: [(before.available - after.available) / n],
          title: `drop of the host's MemAvailable per idle sandbox, ${n} at once`,
        },
        ...(ksmBefore?.running && ksmAfter?.running
          ? {
              'density-ksm-merged': [ksmAfter.mergedMiB / pids.length],
              'density-ksmd-cpu': [((ksmAfter.ksmdCpuS - ksmBefore.ksmdCpuS) / ksmSeconds) * 100],
            }
          : { 'density-ksm-merged': { unavailable: ksmOff }, 'density-ksmd-cpu': { unavailable: ksmOff } }),
      };
    } finally {
      for (const id of ids) await daemon.remove(id);
    }
  },
};
