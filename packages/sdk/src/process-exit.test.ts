import { describe, expect, it } from 'vitest';
import { outcomeOf } from './process-exit.js';

describe('outcomeOf an agent end event', () => {
  it('reads an exit code', () => {
    expect(outcomeOf({ exitCode: 0, exited: true, status: 'exit status 0' })).toEqual({ kind: 'exited', exitCode: 0 });
    expect(outcomeOf({ exitCode: 3, exited: true, status: 'exit status 3' })).toEqual({ kind: 'exited', exitCode: 3 });
  });

  it('turns a signal into 128+N and its name, as the daemon exec does', () => {
    expect(outcomeOf({ exitCode: -1, exited: false, status: 'signal: killed' })).toEqual({
      kind: 'exited',
      exitCode: 137,
      signal: 'SIGKILL',
    });
    expect(outcomeOf({ exitCode: -1, exited: false, status: 'signal: terminated' })).toEqual({
      kind: 'exited',
      exitCode: 143,
      signal: 'SIGTERM',
    });
    expect(outcomeOf({ exitCode: -1, exited: false, status: 'signal: aborted' })).toMatchObject({ signal: 'SIGABRT' });
  });

  it("reports a process that never ran as failed, with the agent's reason cut short", () => {
    expect(outcomeOf({ exitCode: -1, exited: false, status: '', error: 'exec: "nope": not found' })).toEqual({
      kind: 'failed',
      message: 'exec: "nope": not found',
    });
    expect(outcomeOf({ exitCode: -1, exited: false, status: 'x'.repeat(5000) })).toMatchObject({
      kind: 'failed',
      message: 'x'.repeat(1000),
    });
  });
});
