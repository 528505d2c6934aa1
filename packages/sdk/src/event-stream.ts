// Reading capsuled's event stream (`GET /v1/events`, Server-Sent Events):
// messages parsed by eventsource-parser, bounded so that a daemon (or a proxy)
// that never ends a message cannot grow the client's memory; and the check a
// webhook receiver runs on a delivery's signature.
import { createHmac, timingSafeEqual } from 'node:crypto';
import { createParser, type EventSourceMessage } from 'eventsource-parser';
import { CapsuleError } from './errors.js';

/** A message may not buffer more characters than this before it ends. */
export const MAX_EVENT_MESSAGE_CHARS = 1024 * 1024;

/** Splits an SSE byte stream into its messages, in order. */
export async function* parseServerSentEvents(source: AsyncIterable<Uint8Array>): AsyncGenerator<EventSourceMessage, void, undefined> {
  const ready: EventSourceMessage[] = [];
  let failure: Error | undefined;
  const parser = createParser({
    maxBufferSize: MAX_EVENT_MESSAGE_CHARS,
    onEvent: (message) => ready.push(message),
    onError: (error) => {
      failure = new CapsuleError('protocol_error', `capsuled sent an event stream that cannot be read: ${error.message}`);
    },
  });
  const decoder = new TextDecoder();
  for await (const chunk of source) {
    parser.feed(decoder.decode(chunk, { stream: true }));
    if (failure) throw failure;
    yield* ready.splice(0);
  }
  parser.feed(decoder.decode());
  yield* ready.splice(0);
}

/** A message's JSON data; anything else is the daemon breaking the protocol. */
export function parseEventData(data: string): unknown {
  try {
    return JSON.parse(data);
  } catch {
    throw new CapsuleError('protocol_error', `capsuled sent an event that is not JSON: ${JSON.stringify(data.slice(0, 80))}`);
  }
}

/**
 * Whether `signatureHeader` (a delivery's Capsule-Signature, `t=<seconds>,v1=<hex>`)
 * signs `body` (the raw request body, before any JSON parsing) with `secret`,
 * at a time no further than `toleranceSeconds` from now (a replay of an old
 * delivery fails).
 */
export function verifyWebhookSignature(options: {
  secret: string;
  signatureHeader: string | undefined;
  body: string | Uint8Array;
  toleranceSeconds?: number;
  nowSeconds?: number;
}): boolean {
  const { secret, signatureHeader, body, toleranceSeconds = 300, nowSeconds = Date.now() / 1000 } = options;
  const fields = new Map<string, string[]>();
  for (const part of (signatureHeader ?? '').split(',')) {
    const [key, value] = part.split('=', 2).map((s) => s.trim());
    if (key && value) fields.set(key, [...(fields.get(key) ?? []), value]);
  }
  const timestamp = Number(fields.get('t')?.[0]);
  if (!Number.isInteger(timestamp) || Math.abs(nowSeconds - timestamp) > toleranceSeconds) return false;
  const expected = createHmac('sha256', secret)
    .update(`${timestamp}.`)
    .update(typeof body === 'string' ? Buffer.from(body) : body)
    .digest();
  return (fields.get('v1') ?? []).some((hex) => {
    const given = Buffer.from(hex, 'hex');
    return given.length === expected.length && timingSafeEqual(given, expected);
  });
}
