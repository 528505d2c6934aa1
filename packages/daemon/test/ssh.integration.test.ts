// Dev boxes over SSH with real microVMs: the system's ssh reaches a sandbox
// through the daemon's tunnel (user-mode networking, no routable address),
// its host key pinned in Capsule's own known_hosts before the first connection
// and checked strictly; forks make keys of their own; ssh-config gives ssh and
// scp sandboxes by name; a workspace push copies what git would commit.
import { execFileSync, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { Sandbox } from '@capsule/protocol';
import { afterAll, beforeAll, describe, expect } from 'vitest';
import { cliMain, it, runCli, TestDaemon } from './fixture.js';

/** A generous bound for one SSH connection: key exchange and a session under TCG on a shared host. */
const SSH_TIMEOUT_MS = 240_000;

function makeKey(file: string): string {
  execFileSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-f', file]);
  return fs.readFileSync(`${file}.pub`, 'utf8').split(' ').slice(0, 2).join(' ');
}

describe('dev boxes over SSH (real QEMU microVM)', () => {
  const home = fs.mkdtempSync(path.join(os.tmpdir(), 'capsule-ssh-home-'));
  const key = path.join(home, '.ssh', 'id_ed25519');
  // The CLI reads $HOME (the key) and $XDG_CONFIG_HOME (its known_hosts); the daemon ignores both.
  // A TCP listener too, for a client on another host (TLS, an API key).
  const daemon = new TestDaemon({ HOME: home, XDG_CONFIG_HOME: path.join(home, '.config'), CAPSULE_LISTEN: '127.0.0.1:0' });
  const knownHosts = path.join(home, '.config', 'capsule', 'ssh', 'known_hosts');
  let box: Sandbox;

  /** Runs a program (ssh, scp) with the CLI's environment, so a ProxyCommand reaches this test's daemon. */
  const run = (command: string, args: string[], env: Record<string, string> = daemon.env) =>
    new Promise<{ status: number | null; stdout: string; stderr: string }>((resolve) => {
      const child = spawn(command, args, { env, stdio: ['ignore', 'pipe', 'pipe'] });
      const out = { stdout: '', stderr: '' };
      child.stdout.setEncoding('utf8').on('data', (chunk: string) => (out.stdout += chunk));
      child.stderr.setEncoding('utf8').on('data', (chunk: string) => (out.stderr += chunk));
      const timer = setTimeout(() => child.kill('SIGKILL'), SSH_TIMEOUT_MS);
      child.once('close', (status) => {
        clearTimeout(timer);
        resolve({ status, ...out });
      });
    });
  const sshHostKeyOf = async (id: string) => {
    const res = await daemon.request('POST', `/v1/sandboxes/${id}/ssh`);
    expect(res.status, res.text).toBe(200);
    return (res.body as { hostKeys: string[] }).hostKeys;
  };

  beforeAll(async () => {
    fs.mkdirSync(path.dirname(key), { recursive: true, mode: 0o700 });
    makeKey(key);
    await daemon.start();
    box = await daemon.api.createSandbox({ name: 'box', timeoutMs: 0 });
  });
  afterAll(async () => {
    await daemon.destroy();
    fs.rmSync(home, { recursive: true, force: true });
  });

  it('capsule ssh ID -- CMD runs with no prompt, sshd started on demand and its key pinned before the first connection', async () => {
    // An idle sandbox runs no SSH server and has no host keys (the template ships none).
    expect(box.sshHostKeys).toBeUndefined();
    expect((await daemon.api.exec(box.id, ['sh', '-c', 'pgrep -x sshd; ls /etc/ssh/ | grep host_ || true'])).stdout).toBe('');

    const result = await runCli(daemon, ['ssh', box.id, '--', 'uname', '-n'], SSH_TIMEOUT_MS);
    expect(result.stderr).not.toMatch(/authenticity|continue connecting|Warning/);
    expect(result.status, result.stderr).toBe(0);
    expect(result.stdout).toBe(`${box.id.replace('_', '-')}\n`);

    const hostKeys = (await daemon.api.sandbox(box.id)).sshHostKeys;
    expect(hostKeys).toHaveLength(1);
    const guestKey = (await daemon.api.exec(box.id, ['cat', '/etc/ssh/ssh_host_ed25519_key.pub'])).stdout;
    expect(guestKey.startsWith(`${hostKeys?.[0]} `)).toBe(true);
    expect(fs.readFileSync(knownHosts, 'utf8')).toBe(`${box.id}.capsule ${hostKeys?.[0]} ${box.id}\n`);
    expect(fs.statSync(knownHosts).mode & 0o777).toBe(0o600);
    expect(fs.statSync(path.dirname(knownHosts)).mode & 0o777).toBe(0o700);
    // The user's key was authorised for the default user, through the agent's file API.
    const authorized = (await daemon.api.exec(box.id, ['cat', '/home/user/.ssh/authorized_keys'])).stdout;
    expect(authorized).toContain(fs.readFileSync(`${key}.pub`, 'utf8').split(' ').slice(0, 2).join(' '));
  });

  it('refuses a known_hosts entry that is not the sandbox key, before ssh sends anything', async () => {
    const pinned = fs.readFileSync(knownHosts, 'utf8');
    const impostor = makeKey(path.join(home, `impostor-${randomBytes(4).toString('hex')}`));
    fs.writeFileSync(knownHosts, `${box.id}.capsule ${impostor} ${box.id}\n`);
    try {
      const refused = await runCli(daemon, ['ssh', box.id, '--', 'touch', '/tmp/should-not-exist'], SSH_TIMEOUT_MS);
      expect(refused.status).not.toBe(0);
      expect(refused.stderr).toMatch(/possible impersonation/);
      expect((await daemon.api.exec(box.id, ['sh', '-c', 'ls /tmp/should-not-exist 2>&1 || true'])).stdout).toMatch(/No such file/);
    } finally {
      fs.writeFileSync(knownHosts, pinned);
    }
  });

  it('ssh -F <(capsule ssh-config) NAME.capsule works, scp copies in and out, and ssh itself refuses a swapped key', async () => {
    const config = await runCli(daemon, ['ssh-config']);
    expect(config.status, config.stderr).toBe(0);
    expect(config.stdout).toMatch(/^Host \*\.capsule$/m);
    const configFile = path.join(home, 'ssh_config');
    fs.writeFileSync(configFile, config.stdout);
    const sshOptions = ['-F', configFile, '-i', key, '-o', 'BatchMode=yes'];

    const byName = await run('ssh', [...sshOptions, 'box.capsule', 'true']);
    expect(byName.status, byName.stderr).toBe(0);

    const sent = path.join(home, 'sent.bin');
    const back = path.join(home, 'back.bin');
    fs.writeFileSync(sent, randomBytes(200_000));
    const copyIn = await run('scp', [...sshOptions, sent, 'box.capsule:/tmp/sent.bin']);
    expect(copyIn.status, copyIn.stderr).toBe(0);
    const copyOut = await run('scp', [...sshOptions, 'box.capsule:/tmp/sent.bin', back]);
    expect(copyOut.status, copyOut.stderr).toBe(0);
    expect(fs.readFileSync(back).equals(fs.readFileSync(sent))).toBe(true);

    // The guest swaps its key behind the daemon's back (the record and the pin still say the old one): ssh's own check refuses it.
    await daemon.api.exec(
      box.id,
      [
        'sh',
        '-c',
        'kill $(cat /run/sshd.pid); sleep 1; k=/etc/ssh/ssh_host_ed25519_key; rm -f $k $k.pub; ' +
          'ssh-keygen -q -t ed25519 -N "" -C "capsule@$(hostname)" -f $k && /usr/sbin/sshd -h $k -o ListenAddress=127.0.0.1',
      ],
      { user: 'root' },
    );
    const swapped = await run('ssh', [...sshOptions, 'box.capsule', 'true']);
    expect(swapped.status).not.toBe(0);
    expect(swapped.stderr).toMatch(/REMOTE HOST IDENTIFICATION HAS CHANGED|Host key verification failed/);

    // As a user who knows why: the daemon learns the new key, and the old pins go.
    await sshHostKeyOf(box.id);
    fs.writeFileSync(knownHosts, '');
  });

  it('gives two forks of a sandbox whose sshd ran host keys of their own', async () => {
    const parentKeys = await sshHostKeyOf(box.id);
    const forks = await daemon.api.fork(box.id, 2);
    try {
      for (const fork of forks) {
        expect(fork.sshHostKeys).toBeUndefined();
        // /init under the fork's own name ended the copied server and removed the copied keys.
        const copied = await daemon.api.exec(fork.id, ['sh', '-c', 'pgrep -x sshd; ls /etc/ssh | grep host_ || true'], { user: 'root' });
        expect(copied.stdout).toBe('');
      }
      const forkKeys = await Promise.all(forks.map((fork) => sshHostKeyOf(fork.id)));
      const all = [parentKeys[0], forkKeys[0]?.[0], forkKeys[1]?.[0]];
      expect(new Set(all).size).toBe(3);
      // The key each fork's sshd was started with is the one it reported: the parent's copied server was replaced.
      for (const [index, fork] of forks.entries()) {
        const served = await daemon.api.exec(fork.id, ['sh', '-c', 'cat /etc/ssh/ssh_host_ed25519_key.pub; pgrep -xc sshd'], {
          user: 'root',
        });
        expect(served.stdout.startsWith(`${forkKeys[index]?.[0]} capsule@${fork.id.replace('_', '-')}\n`)).toBe(true);
      }
    } finally {
      for (const fork of forks) await daemon.api.removeSandbox(fork.id);
    }
  });

  it('workspace push copies tracked and untracked-unignored files with their modes, then only what changed, or a ref', async () => {
    const repo = path.join(home, 'repo');
    fs.mkdirSync(repo);
    execFileSync('git', ['init', '-q', repo]);
    fs.writeFileSync(path.join(repo, '.gitignore'), 'build.log\n');
    fs.writeFileSync(path.join(repo, 'tracked.txt'), 'one\n', { mode: 0o644 });
    fs.writeFileSync(path.join(repo, 'run.sh'), '#!/bin/sh\necho ran\n', { mode: 0o755 });
    fs.symlinkSync('tracked.txt', path.join(repo, 'link'));
    fs.writeFileSync(path.join(repo, 'build.log'), 'ignored\n');
    fs.writeFileSync(path.join(repo, 'notes.txt'), 'untracked\n', { mode: 0o600 });
    execFileSync('git', ['-C', repo, 'add', '.gitignore', 'tracked.txt', 'run.sh', 'link']);
    const listing = async () =>
      (await daemon.api.exec(box.id, ['sh', '-c', "cd /home/user/src && find . -mindepth 1 -printf '%P %m %y %u %l\\n' | sort"])).stdout;

    const first = await runCli(daemon, ['workspace', 'push', 'box', repo, '--to', '/home/user/src']);
    expect(first.status, first.stderr).toBe(0);
    expect(await listing()).toBe(
      [
        '.gitignore 644 f user ',
        'link 777 l user tracked.txt',
        'notes.txt 600 f user ',
        'run.sh 755 f user ',
        'tracked.txt 644 f user ',
        '',
      ].join('\n'),
    );
    expect((await daemon.api.exec(box.id, ['/home/user/src/run.sh'], { user: 'user' })).stdout).toBe('ran\n');

    fs.appendFileSync(path.join(repo, 'tracked.txt'), 'two\n');
    fs.rmSync(path.join(repo, 'notes.txt'));
    const second = await runCli(daemon, ['workspace', 'push', 'box', repo, '--to', '/home/user/src']);
    expect(second.status, second.stderr).toBe(0);
    expect(second.stderr).toMatch(/^1 file sent, 1 removed/m);
    expect((await daemon.api.exec(box.id, ['cat', '/home/user/src/tracked.txt'])).stdout).toBe('one\ntwo\n');
    expect(await listing()).not.toMatch(/notes\.txt/);

    // A ref's files: what was committed, not what the work tree holds since; equal to what is there, so nothing is sent.
    execFileSync('git', ['-C', repo, '-c', 'user.email=t@t', '-c', 'user.name=t', 'commit', '-a', '-qm', 'two']);
    fs.writeFileSync(path.join(repo, 'scratch.txt'), 'not committed\n');
    fs.appendFileSync(path.join(repo, 'tracked.txt'), 'three\n');
    const ofRef = await runCli(daemon, ['workspace', 'push', 'box', repo, '--branch', 'HEAD']);
    expect(ofRef.status, ofRef.stderr).toBe(0);
    expect(ofRef.stderr).toMatch(/is up to date \(4 files\)/);
    expect(await listing()).not.toMatch(/scratch\.txt/);
  });

  it('capsule run --workspace DIR pushes the repository into the new sandbox and runs the command there', async () => {
    const repo = path.join(home, 'repo');
    const result = await runCli(daemon, ['run', '--workspace', repo, '--', 'sh', '-c', 'pwd; ./run.sh; cat tracked.txt']);
    expect(result.status, result.stderr).toBe(0);
    expect(result.stdout).toBe('/home/user/src\nran\none\ntwo\nthree\n');
  });

  it('works through a daemon on another host: TCP with TLS and an API key, no socket', async () => {
    const { tcpAddress, tls } = (await daemon.request<{ tcpAddress: string; tls: { fingerprintSha256: string } }>('GET', '/v1/info')).body;
    const remote = {
      ...daemon.env,
      CAPSULE_SOCKET: path.join(daemon.root, 'no.sock'),
      CAPSULE_HOST: `https://${tcpAddress}`,
      CAPSULE_API_KEY: (await daemon.api.createApiKey('ssh')).key,
      CAPSULE_TLS_FINGERPRINT: tls.fingerprintSha256,
    };
    const result = await run(process.execPath, [cliMain, 'ssh', 'box', '--', 'echo', 'over-tcp'], remote);
    expect(result.status, result.stderr).toBe(0);
    expect(result.stdout).toBe('over-tcp\n');
  });

  it('a restart keeps the host key: the pin holds and sshd starts again on demand', { timeout: 600_000 }, async () => {
    const before = (await daemon.api.sandbox(box.id)).sshHostKeys;
    expect(before).toHaveLength(1);
    for (const step of ['stop', 'start']) {
      const res = await daemon.request('POST', `/v1/sandboxes/${box.id}/${step}`);
      expect(res.status, res.text).toBe(200);
    }
    const again = await runCli(daemon, ['ssh', box.id, '--', 'true'], SSH_TIMEOUT_MS);
    expect(again.status, again.stderr).toBe(0);
    expect((await daemon.api.sandbox(box.id)).sshHostKeys).toEqual(before);
  });

  it('capsule rm removes the sandbox pins', async () => {
    expect(fs.readFileSync(knownHosts, 'utf8')).toContain(box.id);
    const removed = await runCli(daemon, ['rm', 'box']);
    expect(removed.status, removed.stderr).toBe(0);
    expect(fs.readFileSync(knownHosts, 'utf8')).toBe('');
  });
});
