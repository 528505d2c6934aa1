import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { existsSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { retireOtherSshIdentity } from './ssh-identity.js';

describe("a copied sandbox's SSH identity", () => {
  let dir: string;
  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'capsule-ssh-identity-'));
  });
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  /** Keys made for `owner`, and a stand-in for the sshd holding them (any process whose pid the pid file holds). */
  function copiedIdentity(owner: string) {
    const server = spawn('sleep', ['60']);
    const pidFile = join(dir, 'sshd.pid');
    writeFileSync(pidFile, `${server.pid}\n`);
    writeFileSync(join(dir, 'ssh_host_ed25519_key'), 'private');
    writeFileSync(join(dir, 'ssh_host_ed25519_key.pub'), `ssh-ed25519 AAAA capsule@${owner}\n`);
    writeFileSync(join(dir, 'sshd_config'), 'x');
    return { server, pidFile };
  }

  it('made for another sandbox is retired: its server ended, its host keys removed, the rest of the folder kept', async () => {
    const { server, pidFile } = copiedIdentity('sb-parent');
    const exited = once(server, 'exit');
    await retireOtherSshIdentity({ pidFile, keysDir: dir }, 'sb-fork');
    expect((await exited)[1]).toBe('SIGTERM');
    expect(readdirSync(dir).sort()).toEqual(['sshd.pid', 'sshd_config']);
  });

  it('made for this sandbox is kept, server and keys (a restart boots under another name, then is told its own)', async () => {
    const { server, pidFile } = copiedIdentity('sb-same');
    try {
      await retireOtherSshIdentity({ pidFile, keysDir: dir }, 'sb-same');
      // Long enough for a signal, had one been sent, to have ended it.
      await new Promise((resolve) => setTimeout(resolve, 200));
      expect(server.exitCode).toBeNull();
      expect(server.signalCode).toBeNull();
      expect(readdirSync(dir)).toContain('ssh_host_ed25519_key');
    } finally {
      server.kill();
    }
  });

  it('is nothing to do where no keys were made', async () => {
    await retireOtherSshIdentity({ pidFile: join(dir, 'none.pid'), keysDir: join(dir, 'missing') }, 'sb-any');
    expect(existsSync(join(dir, 'missing'))).toBe(false);
  });
});
