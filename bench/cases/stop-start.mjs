// Stop and start of one sandbox, beside pause and resume of the same one:
// stop flushes the guest and ends its VM, start boots the template's kernel
// cold on the sandbox's own disk; pause saves the memory, resume restores it.
// Each round does all four, so the two ways back (a cold start and a restore
// from the saved state) are measured side by side on the same disk.
import { repeat, timed } from '../harness.mjs';

export default {
  name: 'stop-start',
  position: 35,
  results: [
    {
      id: 'stop',
      title: 'stop a 512 MiB sandbox (the guest syncs and powers off; QEMU ends)',
      unit: 'ms',
      baselines: [{ id: 'pause-same', label: 'pausing it' }],
    },
    { id: 'pause-same', title: 'pause the same sandbox (its memory saved)', unit: 'ms' },
    {
      id: 'start',
      title: "start it again: a cold boot of the template's kernel on its own disk, to the agent's answer",
      unit: 'ms',
      baselines: [
        { id: 'resume-same', label: 'restoring it' },
        { id: 'floor', label: 'the floor' },
      ],
    },
    {
      id: 'resume-same',
      title: 'resume the same sandbox from its saved state',
      unit: 'ms',
      baselines: [{ id: 'floor', label: 'the floor' }],
    },
  ],
  async run(ctx) {
    const daemon = await ctx.daemon('pool');
    const { id } = await daemon.create({ memoryMiB: 512, timeoutMs: 0 });
    try {
      const stops = [];
      const starts = [];
      const pauses = [];
      const resumes = [];
      await repeat(ctx, async (i) => {
        const stop = await timed(() => daemon.call('POST', `/v1/sandboxes/${id}/stop`));
        const start = await timed(() => daemon.call('POST', `/v1/sandboxes/${id}/start`));
        const pause = await timed(() => daemon.call('POST', `/v1/sandboxes/${id}/pause`));
        const resume = await timed(() => daemon.call('POST', `/v1/sandboxes/${id}/resume`));
        if (i >= ctx.warmups) {
          stops.push(stop);
          starts.push(start);
          pauses.push(pause);
          resumes.push(resume);
        }
      });
      // Every cycle kept the disk.
      await daemon.exec(id, ['test', '-d', '/root']);
      return { stop: stops, start: starts, 'pause-same': pauses, 'resume-same': resumes };
    } finally {
      await daemon.remove(id);
    }
  },
};
