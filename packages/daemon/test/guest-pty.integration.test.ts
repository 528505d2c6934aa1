// The kit's agent runs PTY processes inside a real microVM: node-pty's addon
// loads from the kit with the kit's own node and libraries, and the guest
// kernel gives it pseudo-terminals. Until the daemon forwards the agent's API,
// a second copy of the kit's agent is started in the guest on a unix socket
// and driven over Connect's JSON protocol by a small script run with exec.
import { afterAll, beforeAll, describe, expect } from 'vitest';
import { it, TestDaemon } from './fixture.js';

const KIT_NODE = ['/opt/capsule/node/ld-linux-x86-64.so.2', '--library-path', '/opt/capsule/node/lib', '/opt/capsule/node/node'];

/** Runs in the guest (CommonJS, on stdin): Start on a pty as `user`, wait for "ready", Update the size, type a line, print what came back. */
const guestScript = String.raw`
const { spawn } = require('node:child_process');
const http2 = require('node:http2');
const net = require('node:net');
const socketPath = '/tmp/pty-check.sock';
const [loader, ...loaderArgs] = JSON.parse(process.env.KIT_NODE);
const agent = spawn(loader, [...loaderArgs, '/opt/capsule/agent/capsule-agent.cjs', '--listen', 'unix:' + socketPath], {
  stdio: ['ignore', 'ignore', 'inherit'],
  env: { ...process.env, CAPSULE_GUEST_HELPER: '/nonexistent' },
});
const envelope = (message) => {
  const json = Buffer.from(JSON.stringify(message));
  const header = Buffer.alloc(5);
  header.writeUInt32BE(json.length, 1);
  return Buffer.concat([header, json]);
};
function call(session, method, message, onMessage) {
  return new Promise((resolve, reject) => {
    const stream = session.request({
      ':method': 'POST',
      ':path': '/process.Process/' + method,
      'content-type': onMessage ? 'application/connect+json' : 'application/json',
      'connect-protocol-version': '1',
      // The e2b SDK's default user.
      authorization: 'Basic ' + Buffer.from('user:').toString('base64'),
    });
    let buffered = Buffer.alloc(0);
    stream.on('data', (chunk) => {
      buffered = Buffer.concat([buffered, chunk]);
      if (!onMessage) return;
      while (buffered.length >= 5 && buffered.length >= 5 + buffered.readUInt32BE(1)) {
        const length = buffered.readUInt32BE(1);
        const flags = buffered[0];
        const body = JSON.parse(buffered.subarray(5, 5 + length).toString());
        buffered = buffered.subarray(5 + length);
        if (flags & 2) { if (body.error) reject(new Error(JSON.stringify(body.error))); }
        else onMessage(body);
      }
    });
    stream.on('end', () => resolve(onMessage ? undefined : JSON.parse(buffered.toString() || '{}')));
    stream.on('error', reject);
    stream.end(onMessage ? envelope(message) : JSON.stringify(message));
  });
}
async function main() {
  for (let i = 0; ; i++) {
    const ok = await new Promise((resolve) => {
      const probe = net.connect(socketPath, () => { probe.destroy(); resolve(true); });
      probe.on('error', () => resolve(false));
    });
    if (ok) break;
    if (i > 600) throw new Error('the agent did not listen');
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  const session = http2.connect('http://agent', { createConnection: () => net.connect(socketPath) });
  let output = '';
  let end;
  let resized = false;
  let pid;
  const script = 'test -t 0 && echo isatty; stty size; echo "term=$TERM"; echo "as $(id -un) in $(pwd)"; echo ready; read line; echo "got $line $(stty size)"; exit 5';
  await call(session, 'Start', { process: { cmd: '/bin/sh', args: ['-c', script] }, pty: { size: { rows: 30, cols: 90 } } }, async (message) => {
    const event = message.event || {};
    if (event.start) pid = event.start.pid;
    if (event.data && event.data.pty) output += Buffer.from(event.data.pty, 'base64').toString();
    if (event.end) end = event.end;
    if (!resized && output.includes('ready')) {
      resized = true;
      const selector = { process: { pid } };
      await call(session, 'Update', { ...selector, pty: { size: { rows: 44, cols: 120 } } });
      await call(session, 'SendInput', { ...selector, input: { pty: Buffer.from('hello\n').toString('base64') } });
    }
  });
  session.close();
  agent.kill('SIGTERM');
  process.stdout.write(JSON.stringify({ output, end }));
}
main().catch((error) => { agent.kill('SIGKILL'); console.error(error); process.exit(1); });
`;

describe('PTY processes in a real microVM', () => {
  const daemon = new TestDaemon();
  let id = '';

  beforeAll(async () => {
    await daemon.start();
    id = (await daemon.api.createSandbox()).id;
  });
  afterAll(async () => {
    await daemon.destroy();
  });

  it("gives a process a terminal that follows resizes and echoes input, with the kit's node-pty addon", async () => {
    const result = await daemon.api.exec(id, [...KIT_NODE, '-'], {
      env: { KIT_NODE: JSON.stringify(KIT_NODE) },
      stdin: guestScript,
      timeoutMs: 120_000,
    });
    expect(result.exitCode, result.stderr).toBe(0);
    const { output, end } = JSON.parse(result.stdout) as { output: string; end: { exitCode: number } };
    expect(output).toContain('isatty\r\n');
    expect(output).toContain('30 90\r\n');
    expect(output).toContain('term=xterm-256color\r\n');
    expect(output).toContain('as user in /home/user\r\n');
    // The terminal echoes the typed line, then the shell answers with the new size.
    expect(output).toContain('hello\r\n');
    expect(output).toContain('got hello 44 120\r\n');
    expect(end.exitCode).toBe(5);
  });
});
