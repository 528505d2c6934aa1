// Checks each decoded line of a streaming exec against the ExecEvent shapes of
// the protocol before the SDK trusts it. Unknown event types are skipped so that
// a newer daemon can add some; a known type with wrong fields is a protocol error.
import type { ExecEvent } from '@capsule/protocol';
import { CapsuleError } from './errors.js';

const isObject = (value: unknown): value is Record<string, unknown> => typeof value === 'object' && value !== null && !Array.isArray(value);
const isInteger = (value: unknown): value is number => Number.isInteger(value);
const isOptionalString = (value: unknown) => value === undefined || typeof value === 'string';

function isWellFormed(event: Record<string, unknown>): boolean {
  switch (event['type']) {
    case 'start':
      return isInteger(event['pid']);
    case 'stdout':
    case 'stderr':
      return typeof event['data'] === 'string';
    case 'exit':
      return isInteger(event['exitCode']) && isInteger(event['durationMs']) && isOptionalString(event['signal']);
    case 'error':
      return typeof event['code'] === 'string' && typeof event['message'] === 'string' && isOptionalString(event['hint']);
    default:
      return true;
  }
}

const knownTypes = new Set(['start', 'stdout', 'stderr', 'exit', 'error']);

/** Returns the event, or undefined for an event type this SDK does not know. */
export function toExecEvent(value: unknown): ExecEvent | undefined {
  if (!isObject(value) || typeof value['type'] !== 'string') {
    throw new CapsuleError('protocol_error', 'capsuled sent an exec event without a type');
  }
  if (!knownTypes.has(value['type'])) return undefined;
  if (!isWellFormed(value)) {
    throw new CapsuleError('protocol_error', `capsuled sent a malformed "${value['type']}" exec event`);
  }
  return value as ExecEvent;
}
