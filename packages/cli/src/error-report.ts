// Prints a failure the way every capsule command does: `capsule: <message>`, then
// `hint: <hint>` when there is one, and the stack only with --debug. It decides the
// exit code of failures; it never prints to stdout.
import { CapsuleError } from '@capsule/sdk';
import { EXIT_CAPSULE_FAILURE } from './exit-codes.js';

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
  return EXIT_CAPSULE_FAILURE;
}
