// Operations that report progress (image pulls and imports, template builds)
// answer application/x-ndjson events, the last one `done` or `error`, so a
// client can draw progress; a client that stops reading holds back only what can wait.
import type { ServerResponse } from 'node:http';
import type { BuildEvent, ImageEvent } from '@capsule/protocol';
import { CapsuleError, errorMessage } from '../errors.js';

type StreamEvent = ImageEvent | BuildEvent;

/**
 * Runs an operation that reports events and streams them as NDJSON lines;
 * the last one is the operation's `done` event or an `error`.
 */
export async function streamEvents<E extends StreamEvent>(
  res: ServerResponse,
  run: (emit: (event: E) => Promise<void> | undefined, signal: AbortSignal) => Promise<E>,
): Promise<void> {
  const controller = new AbortController();
  res.once('close', () => {
    if (!res.writableFinished) controller.abort(new Error('the client disconnected'));
  });
  res.writeHead(200, { 'content-type': 'application/x-ndjson', 'cache-control': 'no-store' });
  let lastProgress = 0;
  const emit = (event: StreamEvent): Promise<void> | undefined => {
    if (res.destroyed) return undefined;
    // Progress is thinned to a few lines a second; a slow client must not hold the pull back.
    if (event.type === 'progress' && event.doneBytes !== event.totalBytes && Date.now() - lastProgress < 100) return undefined;
    if (event.type === 'progress') lastProgress = Date.now();
    if (res.write(`${JSON.stringify(event)}\n`)) return undefined;
    // The client is behind: a producer that can wait (a build's output) waits for it to catch up or go.
    return new Promise((resolve) => {
      const settle = () => {
        res.off('drain', settle).off('close', settle);
        resolve();
      };
      res.once('drain', settle).once('close', settle);
    });
  };
  try {
    emit(await run(emit, controller.signal));
  } catch (err) {
    const e = err instanceof CapsuleError ? err : new CapsuleError('internal', errorMessage(err));
    emit({ type: 'error', code: e.code, message: e.message, ...(e.hint ? { hint: e.hint } : {}) });
  }
  res.end();
}
