import type { ExecResult } from '@capsule/protocol';
import { describe, expect, it } from 'vitest';
import { hostKeysFromStart } from './ssh-server.js';

const KEY = 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJmZfpM3+UY4csgW9fGLh7mcZU99/5+oS9uHkGeZNLl5';

function result(stdout: string, exitCode = 0, stderr = ''): ExecResult {
  return { exitCode, stdout, stderr, stdoutTruncated: false, stderrTruncated: false, durationMs: 1 };
}

describe('the host keys a guest reports', () => {
  it('are taken without their comment', () => {
    expect(hostKeysFromStart(result(`${KEY} capsule@sb-one\n`), 'sb_one')).toEqual([KEY]);
  });

  it('are refused when the line is not a key, or its blob names another type', () => {
    expect(() => hostKeysFromStart(result('hello\n'), 'sb_one')).toThrow(/something other than host keys/);
    expect(() => hostKeysFromStart(result(KEY.replace('ssh-ed25519', 'ssh-rsa')), 'sb_one')).toThrow(/something other/);
    expect(() => hostKeysFromStart(result(''), 'sb_one')).toThrow(/reported 0 SSH host keys/);
  });

  it('say when the sandbox has no SSH server, and why a start failed', () => {
    expect(() => hostKeysFromStart(result('', 3), 'sb_one')).toThrow(expect.objectContaining({ code: 'ssh_unavailable' }));
    expect(() => hostKeysFromStart(result('', 1, 'Bind to port 22 failed'), 'sb_one')).toThrow(/Bind to port 22 failed/);
  });
});
