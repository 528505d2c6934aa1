// Forking a running sandbox into 10 that each continue from that moment, in
// one request, against 10 creates restored on demand (what starting ten
// sandboxes from a snapshot costs one after another, from the start case).
import { repeat, timed } from '../harness.mjs';

const COUNT = 10;

export default {
  name: 'fork',
  position: 40,
  results: [
    {
      id: 'fork',
      title: `fork a running sandbox into ${COUNT} (one request, until all answer)`,
      unit: 'ms',
      baselines: [{ id: 'warm-restore', label: `${COUNT} restores on demand`, factor: COUNT }],
    },
  ],
  async run(ctx) {
    const daemon = await ctx.daemon('pool');
    const samples = await repeat(ctx, async () => {
      const source = await daemon.create();
      let forks = [];
      try {
        const elapsed = await timed(async () => {
          forks = (await daemon.call('POST', `/v1/sandboxes/${source.id}/fork`, { count: COUNT }, 201)).sandboxes;
        });
        if (forks.length !== COUNT) throw new Error(`fork returned ${forks.length} sandboxes, not ${COUNT}`);
        return elapsed;
      } finally {
        for (const sandbox of [source, ...forks]) await daemon.remove(sandbox.id);
      }
    });
    return { fork: samples };
  },
};
