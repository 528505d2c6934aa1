// Template builds and the per-step build cache: a five-step Capsulefile FROM
// the base template (50 MiB of data written, a folder copied in, a checksum
// of the data), built from nothing; then rebuilt with only its last step
// changed (steps 1-4 come from the cache: the build sandbox boots from step
// 4's disk and runs one step); then rebuilt unchanged (nothing boots). The
// daemon runs without warm snapshots, so no template's snapshot boots in the
// background while a build is measured. The round's templates are removed and
// the build-step cache pruned at the end.
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import { repeat, timed } from '../harness.mjs';

/** POST /v1/templates/build; resolves with the events once the build answered `done`, throws on `error`. */
function build(daemon, body) {
  return new Promise((resolve, reject) => {
    const req = http.request(
      { socketPath: daemon.socketPath, method: 'POST', path: '/v1/templates/build', headers: { 'content-type': 'application/json' } },
      (res) => {
        let text = '';
        res.setEncoding('utf8');
        res.on('data', (c) => (text += c));
        res.on('end', () => {
          const events = text
            .trim()
            .split('\n')
            .filter(Boolean)
            .map((line) => JSON.parse(line));
          const last = events.at(-1);
          if (last?.type === 'done') resolve(events);
          else reject(new Error(`the build ended with ${JSON.stringify(last ?? text.slice(0, 500))}`));
        });
      },
    );
    req.on('error', reject);
    req.end(JSON.stringify(body));
  });
}

function capsulefile(round, last) {
  return [
    'FROM base',
    `RUN echo ${round} > /etc/bench-round`,
    'RUN head -c 52428800 /dev/urandom > /srv/data.bin',
    'COPY app /srv/app',
    'RUN sha256sum /srv/data.bin > /srv/data.sum',
    `RUN echo ${last} > /srv/last`,
  ].join('\n');
}

const full = { id: 'build-full', label: 'a build from nothing' };

export default {
  name: 'template-build',
  position: 75,
  results: [
    { id: 'build-full', title: 'template build, 5 steps FROM base, nothing cached: request to template', unit: 'ms' },
    { id: 'build-last-step', title: 'the same build with its last step changed (steps 1-4 cached)', unit: 'ms', baselines: [full] },
    { id: 'build-unchanged', title: 'the same build unchanged (every step cached)', unit: 'ms', baselines: [full] },
  ],
  async run(ctx) {
    const daemon = await ctx.daemon('cold');
    const contextDir = path.join(ctx.run.root, 'build-context');
    fs.mkdirSync(path.join(contextDir, 'app'), { recursive: true });
    for (let i = 0; i < 20; i++) fs.writeFileSync(path.join(contextDir, 'app', `module${i}.js`), randomBytes(32 * 1024).toString('base64'));
    const samples = { 'build-full': [], 'build-last-step': [], 'build-unchanged': [] };
    const templates = [];
    try {
      await repeat(ctx, async (i) => {
        const round = randomBytes(6).toString('hex');
        const measure = async (id, name, last) => {
          const events = [];
          const ms = await timed(async () =>
            events.push(...(await build(daemon, { name, capsulefile: capsulefile(round, last), contextDir }))),
          );
          templates.push(name);
          const cached = events.filter((e) => e.type === 'step' && e.cached).length;
          const expected = { 'build-full': 0, 'build-last-step': 4, 'build-unchanged': 5 }[id];
          if (cached !== expected) throw new Error(`${id}: ${cached} steps were cached, expected ${expected}`);
          ctx.log(`round ${i} ${id}: ${(ms / 1000).toFixed(1)} s, ${cached} steps cached`);
          return ms;
        };
        const values = {
          'build-full': await measure('build-full', `bench-full-${round}`, 'first'),
          'build-last-step': await measure('build-last-step', `bench-last-${round}`, 'second'),
          'build-unchanged': await measure('build-unchanged', `bench-same-${round}`, 'second'),
        };
        if (i >= ctx.warmups) for (const [id, ms] of Object.entries(values)) samples[id].push(ms);
        for (const name of templates.splice(0)) await daemon.call('DELETE', `/v1/templates/${name}`, undefined, 204);
      });
    } finally {
      for (const name of templates) await daemon.request('DELETE', `/v1/templates/${name}`);
      await daemon.request('POST', '/v1/images/prune');
    }
    return samples;
  },
};
