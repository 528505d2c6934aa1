// The built `capsule` CLI against a real capsuled and real microVMs: the
// README's main command, exit codes, and errors with hints.
import { spawn, spawnSync } from 'node:child_process';
import { setTimeout as sleep } from 'node:timers/promises';
import net from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cliMain, daemonMain, eventually, TestDaemon } from '../../daemon/test/fixture.js';

describe('capsule CLI against a real daemon (real QEMU microVM)', () => {
  const daemon = new TestDaemon();
  const capsule = (...args: string[]) =>
    spawnSync(process.execPath, [cliMain, ...args], {
      env: { ...daemon.env, CAPSULED_BIN: daemonMain },
      encoding: 'utf8',
      timeout: 170_000,
    });

  beforeAll(() => daemon.start());
  afterAll(() => daemon.destroy());

  it('runs a command in a fresh microVM, prints its output and removes the sandbox', () => {
    const res = capsule('run', '--', 'python3', '-c', 'import platform; print("hello from", platform.node())');
    expect(res.stderr).not.toMatch(/capsule:/);
    expect(res.status).toBe(0);
    expect(res.stdout).toMatch(/^hello from sb-[a-z2-7]{20}\n$/);
    const all = JSON.parse(capsule('ls', '--all', '--json').stdout);
    expect(all.map((s: { state: string }) => s.state)).toEqual(['killed']);
    expect(daemon.leftoversOf(all[0].id)).toEqual([]);
  });

  it("exits with the command's own exit code, 125 for Capsule's failures, 126 and 127 for a command that cannot start", () => {
    expect(capsule('run', '--', 'sh', '-c', 'echo to-stderr >&2; exit 42')).toMatchObject({
      status: 42,
      stderr: expect.stringContaining('to-stderr'),
    });
    const bad = capsule('run', '--template', 'nope', '--', 'true');
    expect(bad.status).toBe(125);
    expect(bad.stderr).toMatch(/^capsule: template "nope" does not exist\nhint: /);
    // As docker run: 127 for a command the sandbox does not have, 126 for one it has but cannot run.
    expect(capsule('run', '--', 'capsule-no-such-command').status).toBe(127);
    expect(capsule('run', '--', '/etc/passwd').status).toBe(126);
  });

  it('creates, execs in, inspects and removes a named sandbox', () => {
    const created = capsule('sandbox', 'create', '--name', 'cli-test', '--env', 'GREETING=hi');
    expect(created.status, created.stderr).toBe(0);
    const id = created.stdout.trim();
    expect(id).toMatch(/^sb_/);
    expect(capsule('exec', 'cli-test', '--', 'sh', '-c', 'echo $GREETING; exit 5')).toMatchObject({ status: 5, stdout: 'hi\n' });
    expect(JSON.parse(capsule('inspect', 'cli-test', '--json').stdout)).toMatchObject({ id, state: 'running', timeoutMs: 300_000 });
    expect(capsule('sandbox', 'timeout', 'cli-test', '2h').stdout).toMatch(new RegExp(`^${id}: killed in (1h|2h)\\n$`));
    expect(capsule('sandbox', 'timeout', 'cli-test', '0').stdout).toBe(`${id}: no timeout\n`);
    expect(capsule('ls').stdout).toMatch(/TIME LEFT\n.*cli-test.* -\n/);
    capsule('exec', id, '--', 'sh', '-c', 'echo cli-console-marker > /dev/console');
    expect(capsule('logs', id).stdout).toContain('cli-console-marker');
    capsule('exec', id, '--', 'sh', '-c', 'echo from-snapshot > /root/s');
    expect(capsule('snapshot', 'cli-test', '--template', 'cli-snap')).toMatchObject({ status: 0, stdout: 'cli-snap\n' });
    expect(capsule('snapshot', 'cli-test').status).toBe(2);
    expect(capsule('run', '--template', 'cli-snap', '--', 'cat', '/root/s')).toMatchObject({ status: 0, stdout: 'from-snapshot\n' });
    expect(capsule('template', 'rm', 'cli-snap').status).toBe(0);
    expect(capsule('rm', id).status).toBe(0);
    expect(capsule('rm', id, 'sb_missing').status).toBe(125);
  });

  it('follows a console log with logs -f until Ctrl-C, and prints its last lines with --tail', async () => {
    const id = capsule('sandbox', 'create').stdout.trim();
    const follower = spawn(process.execPath, [cliMain, 'logs', '-f', '--tail', '0', id], {
      env: { ...daemon.env, CAPSULED_BIN: daemonMain },
    });
    let followed = '';
    follower.stdout.on('data', (chunk: Buffer) => (followed += chunk.toString()));
    const exited = new Promise<number | null>((resolve) => follower.once('exit', (code) => resolve(code)));
    await sleep(1500);
    // The agent logs each command line on the console too: the marker is made by the shell, so only its output has it.
    capsule('exec', id, '--', 'sh', '-c', 'echo followed-$((40 + 2)) > /dev/console');
    await eventually(() => (followed.includes('followed-42') ? true : undefined), 30_000, 'the follower to print the marker');
    follower.kill('SIGINT');
    expect(await exited).toBe(0);
    // Printed once, however many reads saw it.
    expect(followed.split('followed-42').length - 1).toBe(1);
    const tail = capsule('logs', '--tail', '30', id).stdout;
    expect(tail).toContain('followed-42');
    expect(tail.trimEnd().split('\n').length).toBeLessThanOrEqual(30);
    expect(capsule('logs', '-f', '--json', id).status).toBe(2);
    // --since: the console as of a moment, to the second (marks are per second, so a second's gap on each side).
    await sleep(1100);
    const between = new Date();
    await sleep(1100);
    capsule('exec', id, '--', 'sh', '-c', 'echo since-$((6 * 7)) > /dev/console');
    const since = capsule('logs', '--since', between.toISOString(), id);
    expect(since.status, since.stderr).toBe(0);
    expect(since.stdout).toContain('since-42');
    expect(since.stdout).not.toContain('followed-42');
    expect(capsule('logs', '--since', '1h', id).stdout).toContain('followed-42');
    expect(capsule('logs', '--since', '2099-01-01T00:00:00Z', id).stdout).toBe('');
    const bad = capsule('logs', '--since', 'yesterday', id);
    expect(bad.status).toBe(2);
    expect(bad.stderr).toContain('is not a time');
    // The daemon checks the time itself: a client other than the CLI gets 400 invalid_argument with a hint.
    for (const since of ['yesterday', '9'.repeat(65), '99999999999999']) {
      const refused = await daemon.request('GET', `/v1/sandboxes/${id}/logs?since=${since}`);
      expect(refused.status, since).toBe(400);
      expect(refused.body.error).toMatchObject({ code: 'invalid_argument', hint: expect.any(String) });
    }
    expect(capsule('rm', id).status).toBe(0);
  });

  it('stops a sandbox, changes its resources while stopped and starts it; kill and rm -f --all end sandboxes', () => {
    const a = capsule('sandbox', 'create', '--lifetime', '0').stdout.trim();
    const b = capsule('sandbox', 'create').stdout.trim();
    expect(capsule('stop', a)).toMatchObject({ status: 0, stdout: `${a}\n` });
    expect(JSON.parse(capsule('inspect', a, '--json').stdout)).toMatchObject({ state: 'stopped', desiredState: 'stopped' });
    expect(capsule('sandbox', 'set', a).status).toBe(2);
    expect(capsule('sandbox', 'set', a, '--memory', '640M')).toMatchObject({
      status: 0,
      stdout: `${a}: 1 CPUs, 640 MiB from its next start\n`,
    });
    expect(capsule('start', a)).toMatchObject({ status: 0, stdout: `${a}\n` });
    expect(JSON.parse(capsule('inspect', a, '--json').stdout)).toMatchObject({ state: 'running', memoryMiB: 640 });
    expect(capsule('kill', b)).toMatchObject({ status: 0, stdout: `${b}\n` });
    // Not on a terminal, so nobody was asked: nothing is removed.
    const unasked = capsule('rm', '--all');
    expect(unasked.status).toBe(2);
    expect(unasked.stderr).toContain('add -f');
    expect(JSON.parse(capsule('inspect', a, '--json').stdout).state).toBe('running');
    const removed = capsule('rm', '-f', '--all');
    expect(removed.status).toBe(0);
    expect(removed.stdout.split('\n')).toContain(a);
    expect(JSON.parse(capsule('ls', '--json').stdout)).toEqual([]);
  });

  it('creates a sandbox without internet, shows it, and switches its network on and off', () => {
    // The guest's NIC carrier follows the switch: the host holds the link down while the network is off.
    const carrier = (id: string) => capsule('exec', id, '--', 'sh', '-c', 'cat /sys/class/net/e*/carrier').stdout.trim();
    const created = capsule('sandbox', 'create', '--no-internet');
    expect(created.status, created.stderr).toBe(0);
    const id = created.stdout.trim();
    expect(carrier(id)).toBe('0');
    expect(capsule('ls').stdout).toMatch(new RegExp(`NET +AGE +TIME LEFT\n(.*\n)*${id} .* off +`));
    expect(capsule('inspect', id).stdout).toContain('Network       off (user mode, 10.0.2.15/24 via 10.0.2.2, DNS 10.0.2.3)');
    expect(capsule('sandbox', 'network', id, 'on').stdout).toBe(`${id}: on (user mode, 10.0.2.15/24 via 10.0.2.2, DNS 10.0.2.3)\n`);
    expect(carrier(id)).toBe('1');
    expect(JSON.parse(capsule('sandbox', 'network', id, 'off', '--json').stdout).network.internet).toBe(false);
    expect(carrier(id)).toBe('0');
    expect(capsule('sandbox', 'network', id, 'maybe')).toMatchObject({
      status: 2,
      stderr: expect.stringMatching(/^capsule: .*"maybe" is not on or off/),
    });
    const lists = capsule('sandbox', 'network', id, '--egress-deny', '0.0.0.0/0');
    expect(lists.status).toBe(125);
    expect(lists.stderr).toMatch(/^capsule: egress allow and deny lists need TAP networking\nhint: /);
    expect(capsule('rm', id).status).toBe(0);
  });

  it('refuses `sandbox create -p` on a host port that is taken, before any sandbox starts; a malformed -p is a usage error', async () => {
    const holder = net.createServer();
    await new Promise<void>((resolve) => holder.listen(0, '127.0.0.1', resolve));
    try {
      const taken = (holder.address() as net.AddressInfo).port;
      const before = JSON.parse(capsule('ls', '--all', '--json').stdout).length;
      const clash = capsule('sandbox', 'create', '-p', `${taken}:80`);
      expect(clash.status).toBe(125);
      expect(clash.stderr).toMatch(new RegExp(`capsule: host port 127\\.0\\.0\\.1:${taken} is already in use\nhint: `));
      expect(JSON.parse(capsule('ls', '--all', '--json').stdout).length).toBe(before);
    } finally {
      holder.close();
    }
    const bad = capsule('sandbox', 'create', '-p', '80:70000');
    expect(bad.status).toBe(2);
    expect(bad.stderr).toContain('must be a port from 1 to 65535');
  });

  it('run -d starts a service on a published port and prints the id; ls filters find it; exec -i pipes input to it; system df counts it', async () => {
    const started = capsule('run', '-d', '--name', 'served', '-p', '0:8000', '--', 'python3', '-m', 'http.server', '-d', '/etc', '8000');
    expect(started.status, started.stderr).toBe(0);
    const id = started.stdout.trim();
    expect(id).toMatch(/^sb_[a-z2-7]+$/);
    expect(capsule('ls', '-q', '--filter', 'name=served', '--filter', 'state=running').stdout).toBe(`${id}\n`);
    expect(capsule('ls', '-q', '--filter', 'state=paused').stdout).toBe('');
    expect(capsule('ls', '--format', '{{.ID}} {{.timeoutMs}}', '-f', `id=${id}`).stdout).toBe(`${id} 0\n`);
    const [port] = JSON.parse(capsule('inspect', id, '-o', 'json').stdout).ports;
    expect(port).toMatchObject({ hostIp: '127.0.0.1', guestPort: 8000 });
    // The command runs on after `run -d` returned: the published port reaches it.
    const page = await eventually(
      async () => {
        const response = await fetch(`http://127.0.0.1:${port.hostPort}/hostname`).catch(() => undefined);
        return response?.ok ? await response.text() : undefined;
      },
      60_000,
      'the detached http.server to answer on the published port',
    );
    expect(page).toBe(capsule('exec', id, '--', 'cat', '/etc/hostname').stdout);
    expect(capsule('top', id).stdout).toContain('http.server');

    const piped = spawnSync(process.execPath, [cliMain, 'exec', '-i', id, '--', 'sh', '-c', 'tr a-z A-Z; exit 3'], {
      env: { ...daemon.env, CAPSULED_BIN: daemonMain },
      input: 'piped data\n',
      encoding: 'utf8',
      timeout: 60_000,
    });
    expect(piped).toMatchObject({ status: 3, stdout: 'PIPED DATA\n', stderr: '' });
    // The running sandbox's overlay and the base template's files are on disk, and counted.
    const usage = JSON.parse(capsule('system', 'df', '-o', 'json').stdout);
    expect(usage.sandboxes).toMatchObject({ count: 1, diskBytes: expect.any(Number) });
    expect(usage.sandboxes.diskBytes).toBeGreaterThan(0);
    expect(usage.templates.count).toBeGreaterThanOrEqual(1);
    expect(usage.totalBytes).toBeGreaterThanOrEqual(usage.sandboxes.diskBytes + usage.templates.diskBytes);
    expect(capsule('rm', id).status).toBe(0);
  });

  it('prints the daemon settings with their sources, and -o/--format on version, doctor and daemon status', () => {
    const config = capsule('daemon', 'config');
    expect(config.status, config.stderr).toBe(0);
    expect(config.stdout).toMatch(/^Config file: none read\nSETTING +VALUE +SOURCE\n/);
    // The fixture sets the state folder and pool; the idle period is left at its default; auto is resolved.
    expect(config.stdout).toMatch(new RegExp(`CAPSULE_STATE_DIR +${daemon.stateDir} +environment\n`));
    expect(config.stdout).toMatch(/CAPSULE_WARM_POOL_IDLE_MS +300000 +default\n/);
    const settings = JSON.parse(capsule('daemon', 'config', '-o', 'json').stdout).settings as { name: string; effective?: string }[];
    expect(settings.find((s) => s.name === 'CAPSULE_ACCEL')?.effective).toMatch(/^(kvm|tcg)$/);
    expect(Number(settings.find((s) => s.name === 'CAPSULE_MEMORY_BUDGET_MIB')?.effective)).toBeGreaterThan(0);
    expect(capsule('version', '--format', '{{.server.pid}}').stdout).toMatch(/^\d+\n$/);
    expect(JSON.parse(capsule('daemon', 'status', '-o', 'json').stdout)).toMatchObject({ running: true, stateDir: daemon.stateDir });
    expect(capsule('doctor', '-o', 'yaml').stdout).toMatch(/^- name: /m);
  });

  it('creates, lists (masked) and removes API keys; a key is shown only when created', () => {
    const created = capsule('apikey', 'create', 'ci');
    expect(created.status, created.stderr).toBe(0);
    const key = created.stdout.trim();
    expect(key).toMatch(/^e2b_[0-9a-f]{40}$/);
    const listed = capsule('apikey', 'ls');
    expect(listed.stdout).toMatch(/ID +NAME +KEY +CREATED +LAST USED\n/);
    expect(listed.stdout).toContain(`${key.slice(0, 8)}…${key.slice(-4)}`);
    expect(listed.stdout).not.toContain(key);
    const [record] = JSON.parse(capsule('apikey', 'ls', '--json').stdout);
    expect(capsule('apikey', 'rm', record.id).status).toBe(0);
    expect(JSON.parse(capsule('apikey', 'ls', '--json').stdout)).toEqual([]);
    const bad = capsule('apikey', 'create', 'x', '--key', 'not-a-key');
    expect(bad.status).toBe(125);
    expect(bad.stderr).toMatch(/^capsule: an API key is "e2b_" followed by/);
  });
});
