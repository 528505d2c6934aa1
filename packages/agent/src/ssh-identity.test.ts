import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { existsSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { retireSshIdentity } from './ssh-identity.js';

describe("a copied sandbox's SSH identity", () => {
  let dir: string;
  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'capsule-ssh-identity-'));
  });
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  it('is retired: the running server is ended and the host keys removed, the rest of the folder kept', async () => {
    // A stand-in for the copied sshd: any process whose pid the pid file holds.
    const server = spawn('sleep', ['60']);
    const exited = once(server, 'exit');
    const pidFile = join(dir, 'sshd.pid');
    writeFileSync(pidFile, `${server.pid}\n`);
    for (const name of ['ssh_host_ed25519_key', 'ssh_host_ed25519_key.pub', 'sshd_config']) writeFileSync(join(dir, name), 'x');

    await retireSshIdentity({ pidFile, keysDir: dir });

    expect((await exited)[1]).toBe('SIGTERM');
    expect(readdirSync(dir).sort()).toEqual(['sshd.pid', 'sshd_config']);
  });

  it('is nothing to do where no server ran and no keys were made', async () => {
    await retireSshIdentity({ pidFile: join(dir, 'none.pid'), keysDir: join(dir, 'missing') });
    expect(existsSync(join(dir, 'missing'))).toBe(false);
  });
});
