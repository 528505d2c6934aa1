// POST /init against the bundled agent on a unix socket, with a STAND-IN
// guest helper (a shell script that records its argv) instead of the real
// capsule-guest-helper, and a temp file instead of the kernel hostname: these
// tests run on the host, as root, and must not change its clock or name.
import { chmodSync, mkdirSync, mkdtempSync, readFileSync, realpathSync, rmSync, writeFileSync } from 'node:fs';
import type http2 from 'node:http2';
import { tmpdir, userInfo } from 'node:os';
import { join } from 'node:path';
import { createClient, type Client } from '@connectrpc/connect';
import { afterAll, describe, expect, it } from 'vitest';
import { Process } from '@capsule/protocol/agent';
import { startAgent, useAgentForFile, type RunningAgent } from '../test/agent-fixture.js';
import { plainRequest } from '../test/plain-http-client.js';
import { lookupUser } from './users.js';

const scratch = realpathSync(mkdtempSync(join(tmpdir(), 'capsule-init-test-')));
const helperCalls = join(scratch, 'helper-calls');
const standInHelper = join(scratch, 'stand-in-guest-helper');
const failingHelper = join(scratch, 'failing-guest-helper');
// Both speak the real helper's `serve` protocol: one request per line, one answer per line.
writeFileSync(
  standInHelper,
  `#!/bin/sh\n[ "$1" = serve ] || exit 2\nwhile read -r line; do printf '%s\\n' "$line" >> '${helperCalls}'; echo ok; done\n`,
);
writeFileSync(
  failingHelper,
  `#!/bin/sh\n[ "$1" = serve ] || exit 2\nwhile read -r line; do echo "capsule-guest-helper: RNDADDENTROPY: Operation not permitted" >&2; echo "error: reseed failed (code 1)"; done\n`,
);
chmodSync(standInHelper, 0o755);
chmodSync(failingHelper, 0o755);
// Readable by any user, so a default user other than root can work in it.
const workdir = join(scratch, 'work');
const otherWorkdir = join(scratch, 'other-work');
mkdirSync(workdir);
mkdirSync(otherWorkdir);
chmodSync(scratch, 0o755);
chmodSync(workdir, 0o777);
chmodSync(otherWorkdir, 0o777);

// As root the default user can really switch; otherwise only to ourselves.
const switchedUser = process.getuid?.() === 0 && lookupUser('nobody') ? 'nobody' : userInfo().username;

let agent: RunningAgent;
let session: http2.ClientHttp2Session;
let processes: Client<typeof Process>;

useAgentForFile(
  (started) => {
    agent = started;
    session = agent.http2Session();
    processes = createClient(Process, agent.connectTransport());
  },
  [],
  { env: { CAPSULE_GUEST_HELPER: standInHelper } },
);

afterAll(() => {
  session?.close();
  rmSync(scratch, { recursive: true, force: true });
});

const postInit = (body: unknown, targetSession = session) =>
  plainRequest(targetSession, {
    method: 'POST',
    path: '/init',
    headers: { 'content-type': 'application/json' },
    body: typeof body === 'string' ? body : JSON.stringify(body),
  });

const helperLines = () => {
  try {
    return readFileSync(helperCalls, 'utf8').split('\n').filter(Boolean);
  } catch {
    return [];
  }
};

async function shell(script: string, extra: { envs?: Record<string, string>; cwd?: string } = {}): Promise<string> {
  let out = '';
  for await (const response of processes.start({ process: { cmd: '/bin/sh', args: ['-c', script], ...extra } })) {
    const event = response.event?.event;
    if (event?.case === 'data' && event.value.output.case === 'stdout') out += Buffer.from(event.value.output.value).toString();
  }
  return out;
}

/** RFC 3339 with nanoseconds, as Go marshals time.Time. */
function rfc3339(ms: number, nanosWithinMs = 123_456): string {
  const iso = new Date(ms).toISOString(); // 2026-01-02T03:04:05.678Z
  return `${iso.slice(0, 19)}.${iso.slice(20, 23)}${String(nanosWithinMs).padStart(6, '0')}Z`;
}

const entropy = 'a1'.repeat(64); // 64 bytes

describe('POST /init (stand-in guest helper)', () => {
  it('applies envd fields and Capsule fields, with one helper call for clock and entropy', async () => {
    const hostMs = Date.now() + 3_600_000; // the guest is an hour behind, as after a restore
    const response = await postInit({
      envVars: { CAPSULE_A: '1', CAPSULE_B: 'two words' },
      accessToken: 'secret-token',
      timestamp: rfc3339(hostMs),
      defaultUser: switchedUser,
      defaultWorkdir: workdir,
      hostname: 'sb-abc123',
      entropy,
      hyperloopIP: '10.0.0.1', // an envd field the agent ignores
    });
    expect(response.status).toBe(204);
    expect(response.body.length).toBe(0);

    const lines = helperLines();
    expect(lines).toHaveLength(1);
    const [verb, seconds, nanos, reseed, hex] = lines[0]!.split(' ');
    expect([verb, reseed, hex]).toEqual(['settime', 'reseed', entropy]);
    expect(Math.abs(Number(seconds) - hostMs / 1000)).toBeLessThan(5);
    expect(Number(nanos)).toBeGreaterThanOrEqual(0);
    expect(Number(nanos)).toBeLessThan(1e9);
    expect(readFileSync(agent.hostnameFile, 'utf8')).toBe('sb-abc123');

    // Later processes: the env vars, the default workdir, the default user.
    expect(await shell('printf "%s|%s|%s|%s" "$CAPSULE_A" "$CAPSULE_B" "$PWD" "$(id -un)"')).toBe(`1|two words|${workdir}|${switchedUser}`);
    // A request's own envs and cwd still win.
    expect(await shell('printf "%s|%s" "$CAPSULE_A" "$PWD"', { envs: { CAPSULE_A: 'mine' }, cwd: otherWorkdir })).toBe(
      `mine|${otherWorkdir}`,
    );
  });

  it('is fine with being called again: later values win, env vars merge, an accurate clock is left alone', async () => {
    const before = helperLines().length;
    const response = await postInit({ envVars: { CAPSULE_B: 'three' }, timestamp: rfc3339(Date.now()), defaultWorkdir: otherWorkdir });
    expect(response.status).toBe(204);
    // Clock within tolerance and no entropy: no helper process at all.
    expect(helperLines()).toHaveLength(before);
    expect(await shell('printf "%s|%s|%s" "$CAPSULE_A" "$CAPSULE_B" "$PWD"')).toBe(`1|three|${otherWorkdir}`);

    // A guest clock far ahead of the host's is set back, entropy alone is one call too.
    expect((await postInit({ timestamp: rfc3339(Date.now() - 60_000) })).status).toBe(204);
    expect(helperLines().at(-1)).toMatch(/^settime \d+ \d+$/);
    expect((await postInit({ entropy })).status).toBe(204);
    expect(helperLines().at(-1)).toBe(`reseed ${entropy}`);

    expect((await postInit('')).status).toBe(204); // envd accepts an empty body
  });

  it('answers bad input with 400 and a JSON error, applies none of it, and keeps serving', async () => {
    const before = helperLines().length;
    const tooManyVars = Object.fromEntries(Array.from({ length: 1025 }, (_, index) => [`V${index}`, 'x']));
    const bad: unknown[] = [
      '{"envVars": ',
      '[1, 2]',
      { envVars: { CAPSULE_A: 'changed', NUMBER: 5 } },
      { envVars: ['A=1'] },
      { envVars: tooManyVars },
      { envVars: { 'A=B': 'x' } },
      { envVars: { CAPSULE_A: 'changed' }, hostname: 'Bad_Host' },
      { hostname: '-leading-dash' },
      { hostname: 'a'.repeat(64) },
      { hostname: '' },
      { entropy: 'abc' },
      { entropy: 'ab'.repeat(31) },
      { entropy: 'zz'.repeat(32) },
      { entropy: 'ab'.repeat(513) },
      { timestamp: 'yesterday' },
      { timestamp: '2026-02-30T00:00:00Z' },
      { timestamp: 1_700_000_000 },
      { defaultUser: 'two words' },
      { accessToken: 42 },
    ];
    for (const body of bad) {
      const response = await postInit(body);
      expect(response.status, JSON.stringify(body).slice(0, 80)).toBe(400);
      const error = response.json() as { code: number; message: string };
      expect(error.code).toBe(400);
      expect(error.message.length).toBeGreaterThan(0);
    }
    const huge = await postInit({ envVars: { BIG: 'x'.repeat(70 * 1024) } });
    expect(huge.status).toBe(413);
    expect((huge.json() as { code: number }).code).toBe(413);

    expect((await plainRequest(session, { path: '/init' })).status).toBe(405);
    expect(helperLines()).toHaveLength(before);
    expect(readFileSync(agent.hostnameFile, 'utf8')).toBe('sb-abc123');
    expect(await shell('printf "%s" "$CAPSULE_A"')).toBe('1');
  });

  it('reports a failing helper as 500 without its argv (the entropy), and still applies the rest', async () => {
    const other = await startAgent([], { env: { CAPSULE_GUEST_HELPER: failingHelper } });
    const otherSession = other.http2Session();
    try {
      const response = await postInit({ envVars: { CAPSULE_C: 'kept' }, entropy }, otherSession);
      expect(response.status).toBe(500);
      const error = response.json() as { message: string };
      expect(error.message).toContain('Operation not permitted');
      expect(error.message).not.toContain(entropy);
      expect(other.log()).not.toContain(entropy);
      const client = createClient(Process, other.connectTransport());
      let out = '';
      for await (const event of client.start({ process: { cmd: '/bin/sh', args: ['-c', 'printf "%s" "$CAPSULE_C"'] } })) {
        const inner = event.event?.event;
        if (inner?.case === 'data' && inner.value.output.case === 'stdout') out += Buffer.from(inner.value.output.value).toString();
      }
      expect(out).toBe('kept');
    } finally {
      otherSession.close();
      await other.stop();
    }
  });
});
