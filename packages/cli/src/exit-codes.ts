// The exit codes `capsule` ends with, in one place: a command's own code for
// run/exec (128+N when a signal ended it), 125 when Capsule itself failed, 126
// and 127 when the command could not be started or found, 2 for usage errors,
// as docker and the shell do it.
import { constants } from 'node:os';

export const EXIT_OK = 0;
/** A check failed (`daemon status` when not running, `doctor` with a failed check). */
export const EXIT_CHECK_FAILED = 1;
export const EXIT_USAGE = 2;
/** The daemon refused, was unreachable, or the input was invalid. */
export const EXIT_CAPSULE_FAILURE = 125;
/** run/exec: the command exists in the sandbox but could not be started (not executable, or the start failed). */
export const EXIT_COMMAND_NOT_STARTED = 126;
/** run/exec: no such command in the sandbox. */
export const EXIT_COMMAND_NOT_FOUND = 127;

export function signalNumber(signal: string): number | undefined {
  return (constants.signals as Record<string, number | undefined>)[signal];
}

/** The exit code the shell would report for a command that ended this way. */
export function exitCodeOfCommand(exit: { exitCode: number; signal?: string | undefined }): number {
  if (exit.signal !== undefined) {
    const number = signalNumber(exit.signal);
    if (number !== undefined) return 128 + number;
  }
  // Codes outside 0-255 would wrap around in process.exit (256 would read as success).
  if (!Number.isInteger(exit.exitCode) || exit.exitCode < 0 || exit.exitCode > 255) return 255;
  return exit.exitCode;
}

/** What `capsule` ends with when it was itself interrupted by `signal`. */
export function exitCodeOfInterruption(signal: NodeJS.Signals): number {
  return 128 + (signalNumber(signal) ?? 2);
}
