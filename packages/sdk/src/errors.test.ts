import { errorCodes } from '@capsule/protocol';
import { describe, expect, it } from 'vitest';
import { CapsuleError, CommandExitError, InvalidArgumentError, NotFoundError, TimeoutError, errorFromWire } from './errors.js';

describe('errorFromWire', () => {
  it('maps every wire code of the protocol to a CapsuleError that keeps code, message, hint and status', () => {
    for (const [code, status] of Object.entries(errorCodes)) {
      const error = errorFromWire({ code, message: `m-${code}`, hint: 'h' }, status);
      expect(error).toBeInstanceOf(CapsuleError);
      expect(error).toMatchObject({ code, message: `m-${code}`, hint: 'h', status });
    }
  });

  it('picks the subclass from the code and sets its name', () => {
    expect(errorFromWire({ code: 'sandbox_not_found', message: 'x' })).toBeInstanceOf(NotFoundError);
    expect(errorFromWire({ code: 'template_not_found', message: 'x' }).name).toBe('NotFoundError');
    expect(errorFromWire({ code: 'invalid_argument', message: 'x' })).toBeInstanceOf(InvalidArgumentError);
    expect(errorFromWire({ code: 'timeout', message: 'x' }).name).toBe('TimeoutError');
    expect(errorFromWire({ code: 'timeout', message: 'x' })).toBeInstanceOf(TimeoutError);
  });

  it('keeps a code this SDK does not know on the base class', () => {
    const error = errorFromWire({ code: 'quota_exceeded', message: 'x' });
    expect(error.constructor).toBe(CapsuleError);
    expect(error.code).toBe('quota_exceeded');
  });
});

describe('CommandExitError', () => {
  it('carries the exit code and output and names the last stderr line', () => {
    const error = new CommandExitError({ exitCode: 3, stdout: 'out', stderr: 'warning\nboom\n' });
    expect(error).toMatchObject({ name: 'CommandExitError', code: 'command_exit', exitCode: 3, stdout: 'out', stderr: 'warning\nboom\n' });
    expect(error.message).toBe('Command exited with code 3: boom');
    expect(new CommandExitError({ exitCode: 137, signal: 'SIGKILL', stdout: '', stderr: '' }).message).toBe(
      'Command was killed by SIGKILL',
    );
  });
});
