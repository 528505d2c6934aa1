// The exec round trip of `true` through the daemon's API into a running
// sandbox, against starting `true` on the host itself (what running any
// process costs at least), and its parts: the round trip to the agent and
// back (GET /health through the proxy), an exec the agent refuses before
// starting anything (Connect and the agent's request path, no process), and
// bash starting `true` inside the guest (the command's own cost under TCG).
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
    { id: 'exec-guest-true', title: "guest: bash starts `true` and waits for it (the command's own cost)", unit: 'ms' },
    { id: 'exec-agent-health', title: "GET /health of the agent through the daemon (the channel's round trip)", unit: 'ms' },
    {
      id: 'exec-refused',
      title: 'exec of a program that does not exist (the agent refuses it: no process)',
      unit: 'ms',
      baselines: [{ id: 'exec-agent-health', label: 'the channel' }],
    },
    {
      id: 'exec',
      title: 'exec round trip of `true` through the daemon',
      unit: 'ms',
      baselines: [
        { id: 'host-true', label: 'the host' },
        { id: 'exec-refused', label: 'a refused exec' },
        { id: 'exec-guest-true', label: '`true` in the guest' },
      ],
    },
  ],
  async run(ctx) {
    const host = await repeat(ctx, () => timed(() => spawnOnHost('true')));
    const daemon = await ctx.daemon('pool');
    const { id } = await daemon.create();
    try {
      // A few more warm-ups than other cases: under TCG the first runs of the agent's exec path are translated anew.
      const warm = { runs: ctx.runs, warmups: Math.max(3, ctx.warmups) };
      const samples = await repeat(warm, () => timed(() => daemon.exec(id, ['true'])));
      const health = await repeat(warm, () =>
        timed(async () => {
          const res = await daemon.request('GET', `/v1/sandboxes/${id}/envd/health`);
          if (res.status !== 204) throw new Error(`GET /health answered ${res.status}`);
        }),
      );
      const refused = await repeat(warm, () =>
        timed(async () => {
          const res = await daemon.request('POST', `/v1/sandboxes/${id}/exec`, { cmd: ['/nonexistent/program'] });
          if (res.body?.error?.code !== 'exec_failed')
            throw new Error(`a missing program answered ${res.status} ${JSON.stringify(res.body)}`);
        }),
      );
      // Timed inside the guest (its clock measures intervals well), 20 starts per sample.
      const loop =
        's=$(date +%s%N); for i in 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20; do /bin/true; done; e=$(date +%s%N); echo $(( (e - s) / 20 ))';
      const guestTrue = await repeat(warm, async () => Number((await daemon.exec(id, ['bash', '-c', loop])).stdout.trim()) / 1e6);
      return { 'host-true': host, exec: samples, 'exec-agent-health': health, 'exec-refused': refused, 'exec-guest-true': guestTrue };
    } finally {
      await daemon.remove(id);
    }
  },
};
