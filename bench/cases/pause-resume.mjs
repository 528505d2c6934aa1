// Pause and resume of a 512 MiB sandbox that has touched 200 MiB of its
// memory, one after the other on the same sandbox. Pause must at least write
// its state to disk (baseline: writing and fsyncing as many bytes to the same
// disk); resume must at least start QEMU (baseline: the floor). Resume is
// measured twice: at once (it reads the whole stream pause wrote) and once the
// daemon has turned that stream into a memory file in the background (it maps it).
import fs from 'node:fs';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { repeat, timed, writeAndSync } from '../harness.mjs';

async function waitFor(check, timeoutMs, what) {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(50);
  }
}

export default {
  name: 'pause-resume',
  position: 30,
  results: [
    { id: 'disk-write', title: "write and fsync the pause state's size to the same disk (baseline of pause)", unit: 'ms' },
    {
      id: 'pause',
      title: 'pause a 512 MiB sandbox that touched 200 MiB',
      unit: 'ms',
      baselines: [{ id: 'disk-write', label: 'the disk write' }],
    },
    { id: 'resume', title: 'resume it at once', unit: 'ms', baselines: [{ id: 'floor', label: 'the floor' }] },
    {
      id: 'resume-mapped',
      title: 'resume it once its paused memory is a mapped file',
      unit: 'ms',
      baselines: [{ id: 'floor', label: 'the floor' }],
    },
    // The daemon's own split of that resume, from the sandbox's state message.
    {
      id: 'resume-mapped-restore',
      title: 'resume once mapped, part 1: QEMU started, the state loaded, the guest running',
      unit: 'ms',
      baselines: [
        { id: 'resume-mapped', label: 'of the resume' },
        { id: 'floor', label: 'the floor' },
      ],
    },
    {
      id: 'resume-mapped-init',
      title: "resume once mapped, part 2: the guest's first answer (/init; under TCG its code is translated afresh)",
      unit: 'ms',
      baselines: [{ id: 'resume-mapped', label: 'of the resume' }],
    },
  ],
  async run(ctx) {
    const daemon = await ctx.daemon('pool');
    const { id } = await daemon.create({ memoryMiB: 512 });
    try {
      await daemon.exec(id, ['sh', '-c', 'head -c 200M /dev/urandom > /dev/shm/touched']);
      const pauses = [];
      const resumes = [];
      const mappedResumes = [];
      const restoreParts = [];
      const initParts = [];
      let stateBytes = 0;
      const folder = path.join(daemon.stateDir, 'sandboxes', id);
      await repeat(ctx, async (i) => {
        const pause = await timed(() => daemon.call('POST', `/v1/sandboxes/${id}/pause`));
        stateBytes = fs.statSync(path.join(folder, 'pause.state')).size;
        const resume = await timed(() => daemon.call('POST', `/v1/sandboxes/${id}/resume`));
        await daemon.call('POST', `/v1/sandboxes/${id}/pause`);
        await waitFor(
          () => fs.existsSync(path.join(folder, 'paused', 'state')) && !fs.existsSync(path.join(folder, 'pause.state')),
          60_000,
          'the paused state to be mapped',
        );
        let sandbox;
        const mapped = await timed(async () => (sandbox = await daemon.call('POST', `/v1/sandboxes/${id}/resume`)));
        const split = /state restored in (\d+) ms, guest initialised in (\d+) ms/.exec(sandbox.stateMessage ?? '');
        if (!split) throw new Error(`the resumed sandbox's state message does not say where the time went: ${sandbox.stateMessage}`);
        if (i >= ctx.warmups) {
          pauses.push(pause);
          resumes.push(resume);
          mappedResumes.push(mapped);
          restoreParts.push(Number(split[1]));
          initParts.push(Number(split[2]));
        }
      });
      // The data survived every cycle (a pause that lost memory would not be a pause).
      await daemon.exec(id, ['sh', '-c', 'test "$(stat -c %s /dev/shm/touched)" = 209715200']);
      const scratch = path.join(daemon.stateDir, 'bench-disk-write');
      const writes = await repeat(ctx, async () => {
        const elapsed = await timed(async () => writeAndSync(scratch, stateBytes));
        fs.rmSync(scratch);
        return elapsed;
      });
      const note = `the pause state is ${(stateBytes / 1048576).toFixed(0)} MiB (all the memory the guest touched, written through QEMU's migration stream)`;
      return {
        'disk-write': writes,
        pause: { samples: pauses, note },
        resume: resumes,
        'resume-mapped': mappedResumes,
        'resume-mapped-restore': restoreParts,
        'resume-mapped-init': initParts,
      };
    } finally {
      await daemon.remove(id);
    }
  },
};
