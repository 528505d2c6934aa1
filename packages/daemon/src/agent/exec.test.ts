import type { ExecEvent } from '@capsule/protocol';
import { describe, expect, it } from 'vitest';
import { CapsuleError } from '../errors.js';
import { collectExec } from './exec.js';

async function* events(list: ExecEvent[]): AsyncGenerator<ExecEvent> {
  yield* list;
}
const b64 = (s: string) => Buffer.from(s).toString('base64');

describe('exec results', () => {
  it('collects output per stream and cuts it at the limit', async () => {
    const result = await collectExec(
      events([
        { type: 'start', pid: 1 },
        { type: 'stdout', data: b64('hello ') },
        { type: 'stderr', data: b64('oops') },
        { type: 'stdout', data: b64('world') },
        { type: 'exit', exitCode: 0, durationMs: 5 },
      ]),
      8,
    );
    expect(result).toMatchObject({ stdout: 'hello wo', stderr: 'oops', stdoutTruncated: true, stderrTruncated: false, exitCode: 0 });
  });

  it('turns an error event into a CapsuleError with its code', async () => {
    const err = await collectExec(events([{ type: 'error', code: 'timeout', message: 'too slow' }])).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(CapsuleError);
    expect((err as CapsuleError).code).toBe('timeout');
    expect((err as CapsuleError).status).toBe(504);
  });

  it('treats a stream without an end as a protocol error', async () => {
    await expect(collectExec(events([{ type: 'start', pid: 1 }]))).rejects.toMatchObject({ code: 'agent_protocol_error' });
  });
});
