// The built `capsule` CLI's cp, files, ps and kill against a real capsuled and
// a real microVM: a directory tree copied in and back out with contents, modes
// and links intact, files listed, printed and removed, processes listed and killed.
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Sandbox } from '@capsule/sdk';
import { cliMain, daemonMain, TestDaemon } from '../../daemon/test/fixture.js';

/** Every entry under `root`: relative path → kind, mode and contents (or link target). */
function describeTree(root: string): Record<string, string> {
  const out: Record<string, string> = {};
  const visit = (dir: string) => {
    for (const name of fs.readdirSync(dir).sort()) {
      const full = path.join(dir, name);
      const relative = path.relative(root, full);
      const stats = fs.lstatSync(full);
      const mode = (stats.mode & 0o7777).toString(8);
      if (stats.isSymbolicLink()) out[relative] = `link -> ${fs.readlinkSync(full)}`;
      else if (stats.isDirectory()) {
        out[relative] = `dir ${mode}`;
        visit(full);
      } else out[relative] = `file ${mode} ${fs.readFileSync(full, 'utf8')}`;
    }
  };
  visit(root);
  return out;
}

describe('capsule cp, files, ps and kill against a real daemon (real QEMU microVM)', () => {
  const daemon = new TestDaemon();
  const work = fs.mkdtempSync(path.join(os.tmpdir(), 'capsule-cp-'));
  let id: string;
  const capsule = (...args: string[]) =>
    spawnSync(process.execPath, [cliMain, ...args], {
      env: { ...daemon.env, CAPSULED_BIN: daemonMain },
      encoding: 'utf8',
      cwd: work,
      timeout: 170_000,
    });

  beforeAll(async () => {
    await daemon.start();
    const created = capsule('sandbox', 'create', '--lifetime', '10m');
    expect(created.status, created.stderr).toBe(0);
    id = created.stdout.trim();
  });
  afterAll(async () => {
    await daemon.destroy();
    fs.rmSync(work, { recursive: true, force: true });
  });

  it('copies a directory into a sandbox and back out, keeping contents, modes and links', () => {
    const source = path.join(work, 'project');
    fs.mkdirSync(path.join(source, 'bin'), { recursive: true });
    fs.mkdirSync(path.join(source, 'empty'), { mode: 0o750 });
    fs.chmodSync(path.join(source, 'empty'), 0o750);
    fs.writeFileSync(path.join(source, 'readme.txt'), 'hello\n', { mode: 0o644 });
    fs.writeFileSync(path.join(source, 'bin', 'run.sh'), '#!/bin/sh\necho ran\n', { mode: 0o755 });
    fs.writeFileSync(path.join(source, 'secret'), 'shh', { mode: 0o600 });
    fs.chmodSync(path.join(source, 'secret'), 0o600);
    fs.symlinkSync('readme.txt', path.join(source, 'link'));

    const up = capsule('cp', source, `${id}:/srv/`);
    expect(up.stderr).toBe('');
    expect(up.status).toBe(0);
    expect(capsule('exec', id, '--', '/srv/project/bin/run.sh')).toMatchObject({ status: 0, stdout: 'ran\n' });
    expect(capsule('exec', id, '--', 'stat', '-c', '%a %n', '/srv/project/secret', '/srv/project/empty').stdout).toBe(
      '600 /srv/project/secret\n750 /srv/project/empty\n',
    );
    expect(capsule('exec', id, '--', 'readlink', '/srv/project/link').stdout).toBe('readme.txt\n');

    const back = path.join(work, 'back');
    const down = capsule('cp', `${id}:/srv/project`, back);
    expect(down.stderr).toBe('');
    expect(down.status).toBe(0);
    expect(describeTree(back)).toEqual(describeTree(source));
  });

  it('copies single files both ways, into directories and to new names', () => {
    fs.writeFileSync(path.join(work, 'one.txt'), 'one\n');
    expect(capsule('cp', 'one.txt', `${id}:/tmp/renamed.txt`).status).toBe(0);
    expect(capsule('files', 'cat', id, '/tmp/renamed.txt').stdout).toBe('one\n');
    fs.mkdirSync(path.join(work, 'downloads'));
    expect(capsule('cp', `${id}:/tmp/renamed.txt`, 'downloads').status).toBe(0);
    expect(fs.readFileSync(path.join(work, 'downloads', 'renamed.txt'), 'utf8')).toBe('one\n');
  });

  it('refuses copies that name no sandbox, or a missing source, with a hint', () => {
    const local = capsule('cp', 'a', 'b');
    expect(local.status).toBe(2);
    expect(local.stderr).toMatch(/^capsule: one of SRC and DST must name a sandbox/);
    const missing = capsule('cp', `${id}:/no/such/file`, 'x');
    expect(missing.status).toBe(125);
    expect(missing.stderr).toMatch(/^capsule: stat \/no\/such\/file: /);
    fs.writeFileSync(path.join(work, 'a-file'), '');
    const unwritable = capsule('cp', `${id}:/etc/hostname`, 'a-file/sub/hostname');
    expect(unwritable.status).toBe(125);
    expect(unwritable.stderr).toMatch(/^capsule: ENOTDIR: .*\nhint: check the local path and its permissions\n$/);
  });

  it('lists, prints and removes files', () => {
    capsule('exec', id, '--', 'sh', '-c', 'mkdir -p /tmp/ls/d && printf abc > /tmp/ls/f && ln -s f /tmp/ls/l');
    const listed = capsule('files', 'ls', id, '/tmp/ls');
    expect(listed.status, listed.stderr).toBe(0);
    expect(listed.stdout).toMatch(/^PERMISSIONS +OWNER +GROUP +SIZE +MODIFIED \(UTC\) +PATH\n/);
    expect(listed.stdout).toMatch(/\ndrwxr-xr-x +root +root +\d+ +.+ +\/tmp\/ls\/d\n/);
    expect(listed.stdout).toMatch(/\n-rw-r--r-- +root +root +3 +.+ +\/tmp\/ls\/f\n/);
    expect(listed.stdout).toMatch(/\/tmp\/ls\/l -> \/tmp\/ls\/f\n/); // the agent reports link targets resolved
    const json = JSON.parse(capsule('files', 'ls', id, '/tmp/ls', '--json').stdout) as { name: string }[];
    expect(json.map((entry) => entry.name)).toEqual(['d', 'f', 'l']);
    expect(capsule('files', 'cat', id, '/tmp/ls/f')).toMatchObject({ status: 0, stdout: 'abc' });

    expect(capsule('files', 'rm', id, '/tmp/ls/f', '/tmp/ls/d').status).toBe(0);
    const gone = capsule('files', 'ls', id, '/tmp/ls/f');
    expect(gone.status).toBe(125);
    expect(gone.stderr).toMatch(/^capsule: stat \/tmp\/ls\/f: .*\n/);
    expect(capsule('files', 'rm', id, '/tmp/ls/f').status).toBe(125);
    expect(capsule('files', 'rm', '-f', id, '/tmp/ls/f').status).toBe(0);
  });

  it('lists the processes in a sandbox (top, proc ls) and kills one by pid (proc kill); ps and kill say where those went', async () => {
    const sandbox = await Sandbox.connect(id, { socketPath: daemon.socketPath });
    try {
      const handle = await sandbox.commands.run(['sleep', '600'], { background: true, timeoutMs: 0 });
      for (const verb of [['top'], ['proc', 'ls']]) {
        const top = capsule(...verb, id);
        expect(top.status, top.stderr).toBe(0);
        expect(top.stdout).toMatch(new RegExp(`^PID +TAG +CWD +COMMAND\\n(.*\\n)*${handle.pid} +- +.* +sleep 600\\n`));
      }
      const listed = JSON.parse(capsule('top', id, '--json').stdout) as { pid: number; cmd: string }[];
      expect(listed).toContainEqual(expect.objectContaining({ pid: handle.pid, cmd: 'sleep' }));

      // The old spellings change nothing and name the new ones.
      const oldPs = capsule('ps', id);
      expect(oldPs.status).toBe(2);
      expect(oldPs.stderr).toContain(`\`capsule top ${id}\``);
      const oldKill = capsule('kill', id, String(handle.pid));
      expect(oldKill.status).toBe(2);
      expect(oldKill.stderr).toContain(`\`capsule proc kill ${id} ${handle.pid}\``);

      expect(capsule('proc', 'kill', id, String(handle.pid), '--signal', 'TERM')).toMatchObject({ status: 0, stderr: '' });
      await expect(handle.wait()).rejects.toMatchObject({ signal: 'SIGTERM' });
      const again = capsule('proc', 'kill', id, String(handle.pid));
      expect(again.status).toBe(125);
      expect(again.stderr).toBe(`capsule: no process ${handle.pid} runs in ${id}\nhint: list its processes with \`capsule top ${id}\`\n`);
      expect(capsule('proc', 'kill', id, '1', '--signal', 'HUP').status).toBe(2);
      // ps lists sandboxes, as ls does.
      expect(JSON.parse(capsule('ps', '--json').stdout)).toContainEqual(expect.objectContaining({ id }));
    } finally {
      sandbox.client.close();
    }
  });
});
