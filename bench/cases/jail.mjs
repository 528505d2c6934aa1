// What the VMM jail costs (vmm/jail.ts): the same create (a warm snapshot
// restored on demand, to the first exec output), exec round trip and resume
// (pause, then resume at once) with every QEMU jailed, the default, and with
// CAPSULE_JAIL=off, measured one after the other in the same run.
import { createToFirstOutput, repeat, timed } from '../harness.mjs';

async function measure(ctx, profile) {
  const daemon = await ctx.daemon(profile);
  const creates = await repeat(ctx, () => createToFirstOutput(daemon));
  const { id } = await daemon.create();
  try {
    const execs = await repeat(ctx, () => timed(() => daemon.exec(id, ['true'])));
    const resumes = await repeat(ctx, async () => {
      await daemon.call('POST', `/v1/sandboxes/${id}/pause`);
      return await timed(() => daemon.call('POST', `/v1/sandboxes/${id}/resume`));
    });
    return { creates, execs, resumes };
  } finally {
    await daemon.remove(id);
  }
}

const unjailed = (what) => ({ id: `${what}-unjailed`, label: 'unjailed' });

export default {
  name: 'jail',
  position: 15,
  results: [
    { id: 'create-unjailed', title: 'create to first exec output, warm snapshot restored on demand, CAPSULE_JAIL=off', unit: 'ms' },
    { id: 'create-jailed', title: 'the same create with the QEMU jailed (the default)', unit: 'ms', baselines: [unjailed('create')] },
    { id: 'exec-unjailed', title: 'exec round trip of `true`, CAPSULE_JAIL=off', unit: 'ms' },
    { id: 'exec-jailed', title: 'exec round trip of `true`, jailed', unit: 'ms', baselines: [unjailed('exec')] },
    { id: 'resume-unjailed', title: 'resume at once after a pause, CAPSULE_JAIL=off', unit: 'ms' },
    { id: 'resume-jailed', title: 'resume at once after a pause, jailed', unit: 'ms', baselines: [unjailed('resume')] },
  ],
  async run(ctx) {
    ctx.log('jailed: creates, execs, resumes');
    const jailed = await measure(ctx, 'restore');
    ctx.log('unjailed: creates, execs, resumes');
    const free = await measure(ctx, 'restore-unjailed');
    return {
      'create-unjailed': free.creates,
      'create-jailed': jailed.creates,
      'exec-unjailed': free.execs,
      'exec-jailed': jailed.execs,
      'resume-unjailed': free.resumes,
      'resume-jailed': jailed.resumes,
    };
  },
};
