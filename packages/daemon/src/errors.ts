// The daemon's one error family. Every failure a client can see is a
// CapsuleError with a stable code from @capsule/protocol; anything else that
// escapes is a bug and is reported as `internal`.
import { httpStatusOf, type ErrorCode } from '@capsule/protocol';

export class CapsuleError extends Error {
  readonly code: ErrorCode;
  readonly hint: string | undefined;

  constructor(code: ErrorCode, message: string, options: { hint?: string; cause?: unknown } = {}) {
    super(message, { cause: options.cause });
    this.name = 'CapsuleError';
    this.code = code;
    this.hint = options.hint;
  }

  get status(): number {
    return httpStatusOf(this.code);
  }
}

export function errorMessage(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
