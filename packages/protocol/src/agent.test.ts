import { describe, expect, it } from 'vitest';
import { exitCodeForSignal, signalFromStatus } from './agent.js';

describe('signals in envd statuses', () => {
  it('reads signals out of envd status strings', () => {
    expect(signalFromStatus('signal: killed')).toBe('SIGKILL');
    expect(signalFromStatus('signal: terminated')).toBe('SIGTERM');
    expect(signalFromStatus('signal: aborted')).toBe('SIGABRT');
    expect(signalFromStatus('signal: segmentation fault')).toBe('SIGSEGV');
    expect(signalFromStatus('signal: no such thing')).toBeUndefined();
    expect(signalFromStatus('exit status 1')).toBeUndefined();
    expect(exitCodeForSignal('SIGKILL')).toBe(137);
  });
});
