// How a process in the sandbox ended, from the agent's end event (envd's
// `exit_code`, `exited`, and a Go-style `status` such as "signal: killed")
// to the SDK's terms: an exit code, with 128+N and the signal's name when a
// signal ended it, as the daemon's exec reports it. Pure; unit-tested.
import { exitCodeForSignal, signalFromStatus } from '@capsule/protocol/agent';

export interface ProcessEnd {
  exitCode: number;
  exited: boolean;
  status: string;
  error?: string | undefined;
}

export type ProcessOutcome =
  | { kind: 'exited'; exitCode: number; signal?: NodeJS.Signals }
  /** The process could not be started (or its end is unknown): `message` says why. */
  | { kind: 'failed'; message: string };

export function outcomeOf(end: ProcessEnd): ProcessOutcome {
  const signal = end.exited ? undefined : signalFromStatus(end.status);
  if (signal) return { kind: 'exited', exitCode: exitCodeForSignal(signal), signal };
  if (end.exited || end.exitCode >= 0) return { kind: 'exited', exitCode: end.exitCode };
  return { kind: 'failed', message: (end.error || end.status || 'the process could not be started').slice(0, 1000) };
}

/** A signal name the agent can send (envd knows only these two). */
export type ProcessSignal = 'SIGKILL' | 'SIGTERM';
