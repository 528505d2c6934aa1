// Runs the bundled `capsule` (dist/main.js) as a child process against a stand-in
// daemon (a node:http server on a temp unix socket, not capsuled) to pin what
// scripts depend on: exit codes, raw output, cleanup on signals, error lines.
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { sendError, sendJson, startStandInDaemon, type StandInDaemon, type StandInHandler } from '../../sdk/src/testing/stand-in-daemon.js';

const packageDir = path.dirname(path.dirname(fileURLToPath(import.meta.url)));
const cliPath = path.join(packageDir, 'dist', 'main.js');
const scratch = mkdtempSync(path.join(tmpdir(), 'capsule-cli-test-'));

interface CliRun {
  status: number | null;
  signal: NodeJS.Signals | null;
  stdout: Buffer;
  stderr: string;
}

function startCli(args: string[], env: Record<string, string> = {}) {
  const child = spawn(process.execPath, [cliPath, ...args], {
    env: {
      PATH: process.env['PATH'] ?? '',
      CAPSULE_STATE_DIR: path.join(scratch, 'state'),
      CAPSULED_BIN: path.join(scratch, 'no-capsuled'),
      ...env,
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const stdout: Buffer[] = [];
  const stderr: Buffer[] = [];
  child.stdout.on('data', (chunk: Buffer) => stdout.push(chunk));
  child.stderr.on('data', (chunk: Buffer) => stderr.push(chunk));
  const done = new Promise<CliRun>((resolve) =>
    child.on('close', (status, signal) =>
      resolve({ status, signal, stdout: Buffer.concat(stdout), stderr: Buffer.concat(stderr).toString('utf8') }),
    ),
  );
  return { child, done };
}

const sandbox = {
  id: 'sb_test1',
  name: null,
  template: 'base',
  state: 'running',
  stateReason: 'user',
  vcpus: 1,
  memoryMiB: 512,
  accel: 'tcg',
  metadata: {},
  createdAt: '2026-01-01T00:00:00Z',
  network: { mode: 'user', internet: true, allow: [], deny: [], guestAddress: '10.0.2.15/24', gateway: '10.0.2.2', dns: '10.0.2.3' },
  ports: [],
};
const binaryOutput = Buffer.from([0x68, 0x69, 0x00, 0xff, 0x0a]);

/** Creates sandboxes, deletes them, and answers exec streams with the exit given in the command's first word. */
const scriptedHandler: StandInHandler = (request, res) => {
  if (request.url === '/health') return sendJson(res, 200, { status: 'ok' });
  if (request.url === '/v1/info') return sendJson(res, 200, { version: '9.8.7', pid: 4321, accel: 'tcg', qemuVersion: '-' });
  if (request.method === 'POST' && request.url === '/v1/sandboxes') return sendJson(res, 201, sandbox);
  if (request.method === 'GET' && request.url === '/v1/sandboxes')
    return sendJson(res, 200, {
      sandboxes: [
        { ...sandbox, metadata: { team: 'web' } },
        { ...sandbox, id: 'sb_test2', name: 'db', state: 'paused', template: 'python', metadata: {} },
        { ...sandbox, id: 'sb_test3', name: 'old', state: 'stopped', metadata: {} },
      ],
    });
  if (request.method === 'DELETE' && request.url === '/v1/sandboxes/sb_test1') return void res.writeHead(204).end();
  if (request.url === '/v1/sandboxes/sb_test1/exec')
    return sendJson(res, 200, { exitCode: 0, stdout: '', stderr: '', stdoutTruncated: false, stderrTruncated: false, durationMs: 1 });
  if (request.url === '/v1/system/df') {
    const item = (count: number, diskBytes: number) => ({ count, diskBytes });
    return sendJson(res, 200, {
      sandboxes: item(2, 3 * 1024 ** 2),
      templates: item(1, 1024 ** 3),
      images: item(0, 0),
      volumes: item(1, 512),
      buildCache: item(4, 2048),
      totalBytes: 1024 ** 3 + 3 * 1024 ** 2 + 2560,
    });
  }
  if (request.method === 'POST' && request.url === '/v1/images/prune')
    return sendJson(res, 200, { blobs: 3, rootfs: 1, buildSteps: 4, bytes: 4096 });
  if (request.method === 'DELETE' && request.url === '/v1/sandboxes/sb_test3') return void res.writeHead(204).end();
  if (request.url === '/v1/sandboxes/sb_missing') {
    return sendError(res, 404, 'sandbox_not_found', 'No sandbox with id or name "sb_missing"', 'List sandboxes with `capsule ls -a`');
  }
  if (request.url === '/v1/sandboxes/sb_test1/exec/stream') {
    const [how] = JSON.parse(request.body).cmd as string[];
    res.writeHead(200, { 'content-type': 'application/x-ndjson' });
    res.write(`${JSON.stringify({ type: 'start', pid: 3 })}\n`);
    if (how === 'hang') return; // keeps streaming nothing until the client goes away
    res.write(`${JSON.stringify({ type: 'stdout', data: binaryOutput.toString('base64') })}\n`);
    res.write(`${JSON.stringify({ type: 'stderr', data: Buffer.from('warn\n').toString('base64') })}\n`);
    const exit = how === 'killed' ? { exitCode: -1, signal: 'SIGKILL' } : { exitCode: Number(how) };
    return void res.end(`${JSON.stringify({ type: 'exit', durationMs: 4, ...exit })}\n`);
  }
  return sendError(res, 404, 'not_found', `stand-in has no route for ${request.method} ${request.url}`);
};

let daemon: StandInDaemon;

beforeAll(async () => {
  // Tests what ships: the bundle set-up built. Never rebuilt here: other test files run it at the same time
  // (`rm -rf dist` under them made cli.integration.test.ts fail with "Cannot find module dist/main.js").
  if (!existsSync(cliPath)) throw new Error(`${cliPath} is missing: run \`npm run build\` (scripts/setup does)`);
  daemon = await startStandInDaemon(scriptedHandler);
}, 180_000);

afterEach(() => {
  daemon.requests.length = 0;
  daemon.handle(scriptedHandler);
});

afterAll(async () => {
  await daemon.close();
  rmSync(scratch, { recursive: true, force: true });
});

const deletes = () => daemon.requests.filter((request) => request.method === 'DELETE').map((request) => request.url);

describe('the built capsule CLI with a stand-in daemon', () => {
  it('run streams raw bytes, exits with the command exit code and removes the sandbox', async () => {
    const result = await startCli(['run', '--memory', '1G', '--', '7'], { CAPSULE_SOCKET: daemon.socketPath }).done;
    expect(result.status).toBe(7);
    expect(result.stdout.equals(binaryOutput)).toBe(true);
    expect(result.stderr).toBe('warn\n');
    expect(JSON.parse(daemon.requests.find((request) => request.url === '/v1/sandboxes')?.body ?? '')).toEqual({
      template: 'base',
      memoryMiB: 1024,
    });
    expect(deletes()).toEqual(['/v1/sandboxes/sb_test1']);
  });

  it('exits 128+N when the command is killed by a signal, and --keep keeps the sandbox', async () => {
    const result = await startCli(['run', '--keep', '--', 'killed'], { CAPSULE_SOCKET: daemon.socketPath }).done;
    expect(result.status).toBe(137);
    expect(result.stderr).toContain('Kept sandbox sb_test1');
    expect(deletes()).toEqual([]);
  });

  it.each([
    ['SIGINT', 130],
    ['SIGTERM', 143],
  ] as const)('removes the sandbox when interrupted by %s and exits %i', async (signal, code) => {
    const { child, done } = startCli(['run', '--', 'hang'], { CAPSULE_SOCKET: daemon.socketPath });
    while (!daemon.requests.some((request) => request.url.endsWith('/exec/stream'))) await sleep(20);
    await sleep(50);
    child.kill(signal);
    const result = await done;
    expect(result.status).toBe(code);
    expect(deletes()).toEqual(['/v1/sandboxes/sb_test1']);
  });

  it('exec exits with the command exit code', async () => {
    const result = await startCli(['exec', 'sb_test1', '--', '0'], { CAPSULE_SOCKET: daemon.socketPath }).done;
    expect(result.status).toBe(0);
    expect(result.stdout.equals(binaryOutput)).toBe(true);
  });

  it('exec passes Ctrl-C on to the command by its pid and exits 130, leaving the sandbox', async () => {
    const { child, done } = startCli(['exec', 'sb_test1', '--', 'hang'], { CAPSULE_SOCKET: daemon.socketPath });
    while (!daemon.requests.some((request) => request.url.endsWith('/exec/stream'))) await sleep(20);
    await sleep(50);
    child.kill('SIGINT');
    const result = await done;
    expect(result.status).toBe(130);
    const forwarded = daemon.requests.find((request) => request.url === '/v1/sandboxes/sb_test1/exec');
    expect(JSON.parse(forwarded?.body ?? '{}').cmd).toEqual(['/bin/sh', '-c', 'kill -s INT 3']);
    expect(deletes()).toEqual([]);
  });

  it('prints a daemon error as one line with its hint, no stack trace, and exits 125', async () => {
    const result = await startCli(['inspect', 'sb_missing'], { CAPSULE_SOCKET: daemon.socketPath }).done;
    expect(result.status).toBe(125);
    expect(result.stdout.length).toBe(0);
    expect(result.stderr).toBe('capsule: No sandbox with id or name "sb_missing"\nhint: List sandboxes with `capsule ls -a`\n');

    const debug = await startCli(['inspect', '--debug', 'sb_missing'], { CAPSULE_SOCKET: daemon.socketPath }).done;
    expect(debug.stderr).toMatch(/NotFoundError: No sandbox[\s\S]*\n +at /);
    expect(debug.stderr).toContain('code: sandbox_not_found, HTTP 404');
  });

  it('reports each failed id of rm and exits 125', async () => {
    const result = await startCli(['rm', 'sb_test1', 'sb_missing'], { CAPSULE_SOCKET: daemon.socketPath }).done;
    expect(result.status).toBe(125);
    expect(result.stdout.toString()).toBe('sb_test1\n');
    expect(result.stderr).toBe('capsule: sb_missing: No sandbox with id or name "sb_missing"\nhint: List sandboxes with `capsule ls -a`\n');
  });

  it('exits 2 on usage errors', async () => {
    const result = await startCli(['run', '--cpus', 'many', '--', 'true'], { CAPSULE_SOCKET: daemon.socketPath }).done;
    expect(result.status).toBe(2);
    expect(result.stderr).toMatch(/^capsule: option '--cpus <n>' argument 'many' is invalid\. .*\nhint: see 'capsule run --help'\n$/);
  });

  it('ls filters as docker does and prints -q ids, YAML, --format lines, and no color escapes into a pipe', async () => {
    const ls = async (...args: string[]) => {
      const result = await startCli(['ls', ...args], { CAPSULE_SOCKET: daemon.socketPath }).done;
      expect(result.stderr).toBe('');
      return result.stdout.toString();
    };
    expect(await ls('-q', '--filter', 'state=paused')).toBe('sb_test2\n');
    expect(await ls('-q', '-f', 'state=running', '-f', 'state=paused', '-f', 'label=team=web')).toBe('sb_test1\n');
    expect(await ls('--format', '{{.ID}}\\t{{.Name}} {{.template}}')).toBe(
      'sb_test1\t<none> base\nsb_test2\tdb python\nsb_test3\told base\n',
    );
    expect(await ls('-o', 'yaml', '-f', 'name=db')).toMatch(/^- id: sb_test2\n {2}name: db\n {2}template: python\n {2}state: paused\n/);
    const table = await ls('-o', 'wide');
    expect(table).toMatch(/^ID +NAME .* METADATA\nsb_test1 .* team=web\n/);
    expect(table).not.toContain('\x1b');
    const unknown = await startCli(['ls', '--filter', 'status=up'], { CAPSULE_SOCKET: daemon.socketPath }).done;
    expect(unknown.status).toBe(2);
    expect(unknown.stderr).toContain('KEY one of id, name, state, template, label');
  });

  it('run refuses contradicting flags, and says -t is a terminal now when given a template the old way', async () => {
    const run = (...args: string[]) => startCli(['run', ...args], { CAPSULE_SOCKET: daemon.socketPath }).done;
    const legacy = await run('-t', 'python', '--', 'true');
    expect(legacy.status).toBe(2);
    expect(legacy.stderr).toContain(
      '-t is a terminal now, as in `docker run -t`; to pick the template: `capsule run --template python -- true`',
    );
    for (const args of [['-d', '--rm', '--', 'true'], ['-d', '-it', '--', 'sh'], ['--rm', '--keep', '--', 'true'], []]) {
      const refused = await run(...args);
      expect(refused.status, args.join(' ')).toBe(2);
    }
    expect(daemon.requests.filter((request) => request.method === 'POST')).toEqual([]);
  });

  /** Runs a shell script that completes against the stand-in daemon; returns its stdout. */
  async function runShell(shell: string, args: string[], cwd?: string): Promise<string> {
    const child = spawn(shell, args, {
      ...(cwd ? { cwd } : {}),
      env: {
        PATH: process.env['PATH'] ?? '',
        HOME: scratch,
        CAPSULE_SOCKET: daemon.socketPath,
        CAPSULE_STATE_DIR: path.join(scratch, 'state'),
      },
    });
    let output = '';
    child.stdout.on('data', (chunk: Buffer) => (output += chunk.toString()));
    await new Promise((resolve) => child.once('close', resolve));
    return output;
  }

  it('completes in bash through the script it prints: commands, flags, and sandbox ids and names from the daemon', async () => {
    const script = [
      `capsule() { '${process.execPath}' '${cliPath}' "$@"; }`,
      'eval "$(capsule completion bash)"',
      'complete() { COMP_WORDS=("$@"); COMP_CWORD=$(($# - 1)); _capsule; echo "${COMPREPLY[*]}"; }',
      'complete capsule volume sn',
      'complete capsule ls -o ""',
      'complete capsule exec ""',
    ].join('\n');
    const output = await runShell('bash', ['-c', script]);
    expect(output).toBe('snapshot snapshots\njson yaml wide\nsb_test1 sb_test2 db sb_test3 old\n');
  });

  it('completes in fish through the script it prints (fish asked with complete -C)', async () => {
    const script = [
      `function capsule; '${process.execPath}' '${cliPath}' $argv; end`,
      'capsule completion fish | source',
      "complete -C 'capsule volume sn'",
      "complete -C 'capsule ls -o '",
      "complete -C 'capsule exec '",
      // No candidate: the files of the working folder, as bash and zsh fall back to.
      "complete -C 'capsule cp ./fil'",
    ].join('\n');
    const cwd = mkdtempSync(path.join(scratch, 'fish-'));
    writeFileSync(path.join(cwd, 'file-a'), '');
    const output = await runShell('fish', ['-c', script], cwd);
    // fish prints one candidate a line, sorted its own way.
    expect(output.split('\n').filter(Boolean).sort()).toEqual(
      ['snapshot', 'snapshots', 'json', 'yaml', 'wide', 'sb_test1', 'sb_test2', 'db', 'sb_test3', 'old', './file-a'].sort(),
    );
  });

  it('completes in zsh through the script it prints (real zsh; compadd and compdef stand-ins, as no widget runs here)', async () => {
    const script = [
      `capsule() { '${process.execPath}' '${cliPath}' "$@"; }`,
      // Outside an interactive completion compadd cannot run: these print what the script hands them.
      'compdef() { :; }',
      'compadd() { [[ $1 == -a ]] && print -r -- "${(@P)2}"; }',
      '_files() { print FILES; }',
      'source <(capsule completion zsh)',
      'complete() { words=("$@"); CURRENT=$#; _capsule; }',
      'complete capsule volume sn',
      "complete capsule ls -o ''",
      "complete capsule exec ''",
      'complete capsule cp ./no-such-prefix',
    ].join('\n');
    const output = await runShell('zsh', ['-f', '-c', script]);
    expect(output).toBe('snapshot snapshots\njson yaml wide\nsb_test1 sb_test2 db sb_test3 old\nFILES\n');
  });

  it('system df prints the space by kind; system prune asks first, then removes stopped sandboxes and the image garbage', async () => {
    const df = await startCli(['system', 'df'], { CAPSULE_SOCKET: daemon.socketPath }).done;
    expect(df.stdout.toString()).toBe(
      [
        'TYPE          COUNT   SIZE',
        'Sandboxes     2       3.0 MiB',
        'Templates     1       1.0 GiB',
        'Images        0       0 B',
        'Volumes       1       512 B',
        'Build cache   4       2.0 KiB',
        'Total                 1.0 GiB',
        '',
      ].join('\n'),
    );
    const unasked = await startCli(['system', 'prune'], { CAPSULE_SOCKET: daemon.socketPath }).done;
    expect(unasked.status).toBe(2);
    expect(unasked.stderr).toContain('add -f');
    expect(deletes()).toEqual([]);
    const pruned = await startCli(['system', 'prune', '-f'], { CAPSULE_SOCKET: daemon.socketPath }).done;
    expect(pruned.status).toBe(0);
    expect(pruned.stdout.toString()).toMatch(
      /^sb_test3\nremoved 1 sandboxes, 3 blobs, 1 root filesystems and 4 cached build steps: 4.0 KiB freed/,
    );
    expect(deletes()).toEqual(['/v1/sandboxes/sb_test3']);
  });

  it('--version prints the client version alone, wherever the flag is', async () => {
    const { version } = JSON.parse(readFileSync(path.join(packageDir, 'package.json'), 'utf8')) as { version: string };
    for (const args of [['--version'], ['-V'], ['--debug', '--version']]) {
      const result = await startCli(args).done;
      expect(result.status).toBe(0);
      expect(result.stdout.toString()).toBe(`${version}\n`);
    }
  });

  it('version prints the client and the daemon it reaches', async () => {
    const result = await startCli(['version'], { CAPSULE_SOCKET: daemon.socketPath }).done;
    expect(result.status).toBe(0);
    expect(result.stdout.toString()).toMatch(/^Client: \d+\.\d+\.\d+ \(node v[\d.]+\)\nServer: 9\.8\.7 \(capsuled pid 4321, tcg\)\n$/);
    const json = await startCli(['version', '--json'], { CAPSULE_SOCKET: daemon.socketPath }).done;
    expect(JSON.parse(json.stdout.toString())).toMatchObject({ client: { version: expect.any(String) }, server: { version: '9.8.7' } });
  });

  it('version prints the client, then why no daemon answered, exits 125 and starts none', async () => {
    const result = await startCli(['version', '--json'], { CAPSULE_SOCKET: path.join(scratch, 'absent.sock') }).done;
    expect(result.status).toBe(125);
    expect(JSON.parse(result.stdout.toString())).toMatchObject({ client: { version: expect.any(String) }, server: null });
    expect(result.stderr).toMatch(/^capsule: Cannot reach capsuled at unix:.*absent\.sock/);
  });

  it('lists every command in --help and shows the loaded command for help NAME and NAME --help', async () => {
    const listing = await startCli(['--help']).done;
    expect(listing.status).toBe(0);
    expect(listing.stdout.toString()).toMatch(/\n {2}ls \[options\] +List sandboxes/);
    expect(listing.stdout.toString()).toMatch(/\n {2}version \[options\] +Show the version/);
    for (const args of [
      ['help', 'ls'],
      ['ls', '--help'],
      ['--debug', 'help', 'ls'],
    ]) {
      const result = await startCli(args).done;
      expect(result.status).toBe(0);
      expect(result.stdout.toString()).toMatch(/^Usage: capsule ls \[options\]\n[\s\S]*-a, --all/);
    }
    const unknown = await startCli(['lss']).done;
    expect(unknown.status).toBe(2);
    expect(unknown.stderr).toBe("capsule: unknown command 'lss'\n(Did you mean ls?)\nhint: see 'capsule --help'\n");
  });

  it('says how to start the daemon when none runs and capsuled cannot be found', async () => {
    // An empty PATH, so that a capsuled installed on this machine is not found and started.
    const result = await startCli(['ls'], { CAPSULE_SOCKET: path.join(scratch, 'absent.sock'), CAPSULED_BIN: '', PATH: scratch }).done;
    expect(result.status).toBe(125);
    expect(result.stderr).toMatch(
      /^capsule: capsuled is not running on unix:.*absent\.sock and its binary was not found\nhint: .*CAPSULED_BIN/,
    );
  });

  it('starts a daemon in the background when none runs, and `daemon stop` stops it by its pid', async () => {
    // A stand-in capsuled: answers /health, /v1/info and /v1/templates on $CAPSULE_SOCKET.
    const standInBinary = path.join(scratch, 'stand-in-capsuled.mjs');
    writeFileSync(
      standInBinary,
      `import http from 'node:http';
      const socketPath = process.env.CAPSULE_SOCKET;
      const info = { version: '0.0.0-stand-in', pid: process.pid, accel: 'tcg', accelReason: 'stand-in', qemuVersion: '-', stateDir: '-',
        runtimeDir: '-', socketPath, sandboxesRunning: 0, startedAt: new Date().toISOString() };
      const server = http.createServer((req, res) => {
        const body = req.url === '/v1/info' ? info : req.url === '/v1/templates' ? { templates: [] } : { status: 'ok' };
        res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(body));
      });
      console.log('stand-in capsuled listening on', socketPath);
      server.listen(socketPath);
      process.on('SIGTERM', () => server.close(() => process.exit(0)));`,
    );
    const socketPath = path.join(scratch, 'autostart.sock');
    const env = { CAPSULE_SOCKET: socketPath, CAPSULED_BIN: standInBinary };
    const templates = await startCli(['templates', '--json'], env).done;
    expect(templates.stderr).toBe('Starting capsuled…\n');
    expect(templates.status).toBe(0);
    expect(JSON.parse(templates.stdout.toString())).toEqual([]);

    const status = await startCli(['daemon', 'status', '--json'], env).done;
    expect(status.status).toBe(0);
    const { pid } = JSON.parse(status.stdout.toString()) as { pid: number };

    const stop = await startCli(['daemon', 'stop'], env).done;
    expect(stop.status).toBe(0);
    expect(stop.stdout.toString()).toBe(`capsuled (pid ${pid}) stopped\n`);
    expect(() => process.kill(pid, 0)).toThrow();

    const after = await startCli(['daemon', 'status'], env).done;
    expect(after.status).toBe(1);
    expect(after.stdout.toString()).toBe('capsuled is not running\n');
  });
});
