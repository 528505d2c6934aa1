// What an E2B user's code feels through the official `e2b` SDK (pinned in
// package.json) pointed at capsuled: `Template.build` of a small template
// (base, one runCmd, a start command with its waitForPort check) from the
// request to the template being ready (its warm snapshot included), then
// `Sandbox.create` from the built template beside `Sandbox.create` from base,
// each to its first command output. A new token each round keeps the build's
// steps out of the step cache. The round's templates go at the end.
import { randomBytes } from 'node:crypto';
import { repeat, timed } from '../harness.mjs';

/** The SDK waits on a CPU emulating guests (TCG): minutes for a build on a loaded host. */
const SLOW_CALL = { requestTimeoutMs: 600_000 };
const CREATES_PER_ROUND = 3;

async function createToFirstOutput(Sandbox, template) {
  let sandbox;
  const ms = await timed(async () => {
    sandbox = await Sandbox.create(template, SLOW_CALL);
    const result = await sandbox.commands.run('echo ready');
    if (result.stdout !== 'ready\n') throw new Error(`echo ready printed ${JSON.stringify(result.stdout)}`);
  });
  await sandbox.kill();
  return ms;
}

const base = { id: 'e2b-create-base', label: 'from base' };

export default {
  name: 'e2b-build',
  position: 78,
  results: [
    {
      id: 'e2b-template-build',
      title: 'e2b SDK Template.build: base + runCmd + setStartCmd(waitForPort), nothing cached, to the template ready',
      unit: 'ms',
    },
    { id: 'e2b-create-base', title: 'e2b SDK Sandbox.create from base: to the first command output', unit: 'ms' },
    {
      id: 'e2b-create-built',
      title: 'e2b SDK Sandbox.create from the built template: to the first command output',
      unit: 'ms',
      baselines: [base],
    },
  ],
  async run(ctx) {
    const daemon = await ctx.daemon('e2b');
    const { tcpAddress } = await daemon.call('GET', '/v1/info');
    const { key } = await daemon.call('POST', '/v1/api-keys', { name: 'bench-e2b' }, 201);
    // The SDK reads where its API is from the environment, as a user's code would be pointed at capsuled.
    Object.assign(process.env, { E2B_API_URL: `http://${tcpAddress}`, E2B_SANDBOX_URL: `http://${tcpAddress}`, E2B_API_KEY: key });
    const { Sandbox, Template, waitForPort } = await import('e2b');
    const samples = { 'e2b-template-build': [], 'e2b-create-base': [], 'e2b-create-built': [] };
    const templates = [];
    try {
      await repeat(ctx, async (i) => {
        const token = randomBytes(6).toString('hex');
        const name = `bench-e2b-${token}`;
        const template = Template()
          .fromTemplate('base')
          .runCmd(`echo ${token} > /etc/bench-round`)
          .setStartCmd('python3 -m http.server 8080', waitForPort(8080));
        const buildMs = await timed(() => Template.build(template, name, SLOW_CALL));
        templates.push(name);
        const round = { build: buildMs, base: [], built: [] };
        for (let n = 0; n < CREATES_PER_ROUND; n++) {
          round.base.push(await createToFirstOutput(Sandbox, 'base'));
          round.built.push(await createToFirstOutput(Sandbox, name));
        }
        ctx.log(
          `round ${i}: build ${(buildMs / 1000).toFixed(1)} s, creates from it ${round.built.map((ms) => ms.toFixed(0)).join(', ')} ms`,
        );
        if (i >= ctx.warmups) {
          samples['e2b-template-build'].push(buildMs);
          samples['e2b-create-base'].push(...round.base);
          samples['e2b-create-built'].push(...round.built);
        }
        for (const done of templates.splice(0)) await daemon.call('DELETE', `/v1/templates/${done}`, undefined, 204);
      });
    } finally {
      for (const name of templates) await daemon.request('DELETE', `/v1/templates/${name}`);
      await daemon.request('POST', '/v1/images/prune');
    }
    return samples;
  },
};
