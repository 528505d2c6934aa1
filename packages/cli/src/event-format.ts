// `capsule events` and `capsule webhook`'s text and options: one line per
// event, the webhook and delivery tables, and `--since`/`--filter` parsing.
// Pure functions of their inputs (the clock is a parameter), so tests pin them.
import type { CapsuleEvent, Webhook, WebhookDelivery } from '@capsule/protocol';
import { InvalidArgumentError } from 'commander';
import { formatAge, renderTable } from './human-format.js';
import { parseDurationMs } from './option-parsers.js';

/** `2026-01-02T15:04:05.000Z  sandbox.killed   sb_…  base  timeout: message`. */
export function formatEventLine(event: CapsuleEvent): string {
  const subject = event.sandboxId ?? event.template ?? event.image ?? '-';
  const detail = event.sandboxId !== undefined && event.template !== undefined ? `${subject} (${event.template})` : subject;
  return `${event.at}  ${event.type.padEnd(16)}  ${detail}  ${event.reason}${event.message ? `: ${event.message}` : ''}\n`;
}

/** `--since`: an event id as it is, or a duration (`10m`) as the time that long ago. */
export function parseSince(value: string, now: number = Date.now()): string {
  if (/^\d+-\d+$/.test(value.trim())) return value.trim();
  return new Date(now - parseDurationMs(value)).toISOString();
}

export interface EventFilters {
  sandboxes: string[];
  templates: string[];
  types: string[];
}

const FILTER_KEYS = { sandbox: 'sandboxes', template: 'templates', type: 'types' } as const;

/** `--filter sandbox=ID|template=NAME|type=TYPE`, repeatable; values of one key add up (any matches). */
export function collectEventFilter(value: string, previous: EventFilters = { sandboxes: [], templates: [], types: [] }): EventFilters {
  const equals = value.indexOf('=');
  const key = value.slice(0, equals);
  if (equals <= 0 || !Object.hasOwn(FILTER_KEYS, key) || value.slice(equals + 1) === '') {
    throw new InvalidArgumentError(`filter "${value}" must be sandbox=ID, template=NAME or type=TYPE`);
  }
  const field = FILTER_KEYS[key as keyof typeof FILTER_KEYS];
  return { ...previous, [field]: [...previous[field], ...value.slice(equals + 1).split(',')] };
}

export function webhookTable(webhooks: readonly Webhook[], now: number = Date.now()): string {
  return renderTable(
    ['ID', 'URL', 'EVENTS', 'CREATED'],
    webhooks.map((w) => [w.id, w.url, w.events.length > 0 ? w.events.join(',') : 'all', formatAge(w.createdAt, now)]),
  );
}

export function deliveryTable(deliveries: readonly WebhookDelivery[], now: number = Date.now()): string {
  return renderTable(
    ['EVENT', 'TYPE', 'STATUS', 'ATTEMPTS', 'HTTP', 'UPDATED', 'ERROR'],
    deliveries.map((d) => [
      d.eventId,
      d.eventType,
      d.status,
      String(d.attempts),
      d.httpStatus !== undefined ? String(d.httpStatus) : '-',
      formatAge(d.updatedAt, now),
      d.error ?? '',
    ]),
  );
}
