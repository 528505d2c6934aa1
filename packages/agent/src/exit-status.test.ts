import { describe, expect, it } from 'vitest';
import { describeExit, describeSignal } from './exit-status.js';

describe('describeExit', () => {
  it('reads like Go for normal exits', () => {
    expect(describeExit(0, null)).toEqual({ exitCode: 0, exited: true, status: 'exit status 0' });
    expect(describeExit(127, null)).toEqual({ exitCode: 127, exited: true, status: 'exit status 127', error: 'exit status 127' });
  });

  it('reads like Go for deaths by signal, with exit code -1', () => {
    expect(describeExit(null, 'SIGKILL')).toEqual({ exitCode: -1, exited: false, status: 'signal: killed', error: 'signal: killed' });
    expect(describeExit(null, 'SIGTERM').status).toBe('signal: terminated');
    expect(describeExit(null, 'SIGSEGV').status).toBe('signal: segmentation fault');
    expect(describeExit(null, 'SIGINT').status).toBe('signal: interrupt');
  });

  it('names signals it has no description for by number', () => {
    expect(describeSignal(40)).toBe('signal 40');
    expect(describeSignal('SIGHUP')).toBe('hangup');
  });
});
