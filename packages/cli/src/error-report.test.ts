import { CapsuleError } from '@capsule/sdk';
import { describe, expect, it } from 'vitest';
import { exitCodeOfFailure } from './error-report.js';

describe('exitCodeOfFailure', () => {
  it("answers as docker run does: 127 for a missing command, 126 for one that cannot start, 125 for Capsule's own failures", () => {
    const execFailed = (message: string) => new CapsuleError('exec_failed', message);
    expect(
      exitCodeOfFailure(execFailed(`process 0 failed: error starting process 'nope': exec: "nope": executable file not found in $PATH`)),
    ).toBe(127);
    expect(exitCodeOfFailure(execFailed("error starting process '/no/such': fork/exec /no/such: no such file or directory"))).toBe(127);
    expect(exitCodeOfFailure(execFailed("error starting process '/etc/hostname': fork/exec /etc/hostname: permission denied"))).toBe(126);
    expect(exitCodeOfFailure(new CapsuleError('template_not_found', 'template "nope" does not exist'))).toBe(125);
    expect(exitCodeOfFailure(new Error('a bug'))).toBe(125);
  });
});
