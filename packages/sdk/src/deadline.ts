// A request's deadline: the caller's AbortSignal combined with a request
// timeout that bounds waiting for an answer, never the operation itself. The
// timer can start later than the request (an upload arms it once its body is sent).
import { TimeoutError } from './errors.js';

export interface Deadline {
  signal: AbortSignal;
  /** Starts the request timer (when it was created disarmed); a second call does nothing. */
  arm(): void;
  /** Stop the request timer but keep forwarding the caller's abort (for streams). */
  stopTimer(): void;
  dispose(): void;
}

export function formatSeconds(ms: number): string {
  return `${Number((ms / 1000).toFixed(1))} s`;
}

/** `what` names the request in the timeout's message; `armed: false` delays the timer until arm(). */
export function startDeadline(
  callerSignal: AbortSignal | undefined,
  timeoutMs: number,
  what: string,
  { armed = true }: { armed?: boolean } = {},
): Deadline {
  const controller = new AbortController();
  const forwardAbort = () => controller.abort(callerSignal?.reason);
  if (callerSignal?.aborted) forwardAbort();
  else callerSignal?.addEventListener('abort', forwardAbort, { once: true });
  let timer: NodeJS.Timeout | undefined;
  let started = false;
  let stopped = false;
  const arm = () => {
    if (started || stopped || timeoutMs <= 0) return;
    started = true;
    timer = setTimeout(() => {
      controller.abort(
        new TimeoutError('request_timeout', `capsuled did not answer ${what} within ${formatSeconds(timeoutMs)}`, {
          hint: 'The daemon may be overloaded: check `capsule daemon status`, or raise requestTimeoutMs',
        }),
      );
    }, timeoutMs);
    timer.unref();
  };
  if (armed) arm();
  const stopTimer = () => {
    stopped = true;
    clearTimeout(timer);
  };
  return {
    signal: controller.signal,
    arm,
    stopTimer,
    dispose: () => {
      stopTimer();
      callerSignal?.removeEventListener('abort', forwardAbort);
    },
  };
}
