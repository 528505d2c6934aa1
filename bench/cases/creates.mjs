// Creates as an agent framework makes them: one now and then (the baseline),
// twenty back to back, and bursts of 10 and 50 at once, each timed from the
// create request to the first exec output, against a daemon with the default
// warm pool, which grows with the demand it sees. A burst past the memory
// budget must get its refusals at once, not time out.
import { setTimeout as sleep } from 'node:timers/promises';
import { repeat, timed } from '../harness.mjs';

const SPACING_MS = 5000;
const BACK_TO_BACK = 20;
const BURST = 10;
const BIG_BURST = 50;
/** The over-budget daemon admits this many 512 MiB guests (its pool's VM included) and gets twice as many creates at once. */
const BUDGET_VMS = 6;

/** Create and first exec output, keeping the sandbox (a burst's sandboxes live together). */
async function createAndFirstExec(daemon, ids) {
  return await timed(async () => {
    const { id } = await daemon.create();
    ids.push(id);
    const result = await daemon.exec(id, ['echo', 'ready']);
    if (result.stdout !== 'ready\n') throw new Error(`echo ready printed ${JSON.stringify(result.stdout)}`);
  });
}

async function removeAll(daemon, ids) {
  for (const id of ids.splice(0)) await daemon.remove(id);
}

/** Waits until every warm pool holds as many VMs as it now wants (a refill after the last burst). */
async function poolSettled(daemon) {
  const deadline = Date.now() + 300_000;
  for (;;) {
    const pools = (await daemon.call('GET', '/v1/info')).warmPools ?? [];
    if (pools.every((p) => p.ready >= p.target)) return pools;
    if (Date.now() > deadline) throw new Error(`the warm pool did not refill: ${JSON.stringify(pools)}`);
    await sleep(500);
  }
}

const spaced = { id: 'creates-spaced', label: 'spaced' };

export default {
  name: 'creates',
  position: 12,
  results: [
    { id: 'creates-spaced', title: `one create now and then (${SPACING_MS / 1000} s apart): create to first exec output`, unit: 'ms' },
    {
      id: 'creates-back-to-back-first',
      title: `${BACK_TO_BACK} creates back to back, the first series (the pool starts at its minimum)`,
      unit: 'ms',
      baselines: [spaced],
    },
    { id: 'creates-back-to-back', title: `${BACK_TO_BACK} creates back to back, the next series`, unit: 'ms', baselines: [spaced] },
    { id: 'creates-burst', title: `${BURST} creates at once (two bursts): create to first exec output`, unit: 'ms', baselines: [spaced] },
    { id: 'creates-big-burst', title: `${BIG_BURST} creates at once: create to first exec output`, unit: 'ms', baselines: [spaced] },
    { id: 'creates-big-burst-rate', title: `${BIG_BURST} creates at once: sandboxes running per second of the burst`, unit: 'creates/s' },
    {
      id: 'creates-refused',
      title: `${2 * BUDGET_VMS} creates at once against a budget of ${BUDGET_VMS} VMs: how soon the refused ones are answered`,
      unit: 'ms',
      baselines: [spaced],
    },
  ],
  async run(ctx) {
    const daemon = await ctx.daemon('pool');
    const ids = [];
    try {
      ctx.log('creates: spaced');
      const spacedSamples = await repeat(ctx, async () => {
        await sleep(SPACING_MS);
        const elapsed = await createAndFirstExec(daemon, ids);
        await removeAll(daemon, ids);
        return elapsed;
      });

      const backToBack = async () => {
        await poolSettled(daemon);
        const samples = [];
        for (let i = 0; i < BACK_TO_BACK; i++) samples.push(await createAndFirstExec(daemon, ids));
        await removeAll(daemon, ids);
        return samples;
      };
      ctx.log('creates: back to back');
      const firstSeries = await backToBack();
      const nextSeries = await backToBack();

      ctx.log('creates: bursts');
      const burst = async (count) => {
        const pools = await poolSettled(daemon);
        const started = performance.now();
        const samples = await Promise.all(Array.from({ length: count }, () => createAndFirstExec(daemon, ids)));
        const wallMs = performance.now() - started;
        await removeAll(daemon, ids);
        return { samples, wallMs, pools };
      };
      const bursts = [await burst(BURST), await burst(BURST)];
      const big = await burst(BIG_BURST);
      const poolNote = (pools) => pools.map((p) => `${p.template}: ${p.ready} ready of at most ${p.max}`).join(', ');

      ctx.log('creates: past the memory budget');
      const refused = await refusedPastBudget(ctx);
      return {
        'creates-spaced': spacedSamples,
        'creates-back-to-back-first': firstSeries,
        'creates-back-to-back': nextSeries,
        'creates-burst': {
          samples: bursts.flatMap((b) => b.samples),
          note: `pool before each burst: ${bursts.map((b) => poolNote(b.pools)).join('; ')}`,
        },
        'creates-big-burst': { samples: big.samples, note: `pool before: ${poolNote(big.pools)}` },
        'creates-big-burst-rate': [(BIG_BURST * 1000) / big.wallMs],
        'creates-refused': refused,
      };
    } finally {
      await removeAll(daemon, ids);
    }
  },
};

/** Twice the budget's worth of creates at once: the answer times of those refused (they must all be refused with the stable code). */
async function refusedPastBudget(ctx) {
  const daemon = await ctx.daemon('budget');
  const ids = [];
  try {
    await poolSettled(daemon);
    const answers = await Promise.all(
      Array.from({ length: 2 * BUDGET_VMS }, async () => {
        const started = performance.now();
        const res = await daemon.request('POST', '/v1/sandboxes', { timeoutMs: 600_000 });
        const elapsed = performance.now() - started;
        if (res.status === 201) ids.push(res.body.id);
        return { res, elapsed };
      }),
    );
    const refusals = answers.filter((a) => a.res.status !== 201);
    const wrong = refusals.filter((a) => a.res.body?.error?.code !== 'capacity');
    if (wrong.length > 0) throw new Error(`a create past the budget answered ${wrong[0].res.status}: ${JSON.stringify(wrong[0].res.body)}`);
    if (refusals.length === 0) throw new Error(`all ${answers.length} creates were admitted past a budget of ${BUDGET_VMS} VMs`);
    return {
      samples: refusals.map((a) => a.elapsed),
      note: `${answers.length - refusals.length} admitted, ${refusals.length} refused with 429 capacity`,
    };
  } finally {
    for (const id of ids) await daemon.remove(id);
  }
}
