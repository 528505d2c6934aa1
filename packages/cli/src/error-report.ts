// Prints a failure the way every capsule command does: `capsule: <message>`, then
// `hint: <hint>` when there is one, and the stack only with --debug. It decides the
// exit code of failures; it never prints to stdout.
import { CapsuleError } from '@capsule/sdk';
import { EXIT_CAPSULE_FAILURE, EXIT_COMMAND_NOT_FOUND, EXIT_COMMAND_NOT_STARTED } from './exit-codes.js';

export function formatError(error: unknown, { debug = false, subject }: { debug?: boolean; subject?: string } = {}): string {
  const prefix = subject === undefined ? 'capsule: ' : `capsule: ${subject}: `;
  const lines: string[] = [];
  if (error instanceof CapsuleError) {
    lines.push(prefix + error.message);
    if (error.hint) lines.push(`hint: ${error.hint}`);
  } else if (error instanceof Error && error.name === 'AbortError') {
    lines.push(`${prefix}interrupted`);
  } else {
    lines.push(prefix + (error instanceof Error ? error.message : String(error)));
    if (!debug) lines.push('hint: this looks like a bug in capsule; run again with --debug for details');
  }
  if (debug && error instanceof Error && error.stack) {
    lines.push(error.stack);
    if (error instanceof CapsuleError) lines.push(`code: ${error.code}${error.status ? `, HTTP ${error.status}` : ''}`);
  }
  return `${lines.join('\n')}\n`;
}

/** Writes the error to stderr and returns the exit code the process should end with. */
export function reportError(error: unknown, options: { debug?: boolean; subject?: string } = {}): number {
  process.stderr.write(formatError(error, options));
  return exitCodeOfFailure(error);
}

/**
 * 127 for a command the sandbox does not have, 126 for one it could not
 * start, as docker run and the shell answer; 125 for every other failure.
 * The agent words a missing program as envd does (Go's exec messages).
 */
export function exitCodeOfFailure(error: unknown): number {
  if (!(error instanceof CapsuleError) || error.code !== 'exec_failed') return EXIT_CAPSULE_FAILURE;
  return /executable file not found|no such file or directory/.test(error.message) ? EXIT_COMMAND_NOT_FOUND : EXIT_COMMAND_NOT_STARTED;
}
