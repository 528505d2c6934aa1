// What a recorded history row is as an event on the wire: its type, its id
// (a cursor over both histories, so that one id resumes a stream exactly),
// and whether a client's filter wants it. It must never read the database:
// the stream and the webhooks call it for every event.
import { EVENT_FAMILIES, EVENT_TYPES, type CapsuleEvent, type SandboxState } from '@capsule/protocol';
import { CapsuleError } from '../errors.js';
import type { RecordedEvent } from '../store/event-feed.js';

/**
 * Where a reader is in the two histories: the last sandbox_events and
 * resource_events ids it has seen. Written `<sandbox>-<resource>`; the rows
 * of each table are delivered in id order, so nothing before it is missed.
 */
export interface EventCursor {
  sandbox: number;
  resource: number;
}

export function formatCursor(cursor: EventCursor): string {
  return `${cursor.sandbox}-${cursor.resource}`;
}

/** The cursor an event id names, or undefined when `text` is not one. */
export function parseCursor(text: string): EventCursor | undefined {
  const match = /^(\d{1,15})-(\d{1,15})$/.exec(text.trim());
  if (!match) return undefined;
  return { sandbox: Number(match[1]), resource: Number(match[2]) };
}

/** Whether the reader at `cursor` has already had `event`. */
export function seen(cursor: EventCursor, event: RecordedEvent): boolean {
  return event.id <= (event.kind === 'sandbox' ? cursor.sandbox : cursor.resource);
}

/** The cursor after `event`. */
export function advance(cursor: EventCursor, event: RecordedEvent): EventCursor {
  return event.kind === 'sandbox'
    ? { ...cursor, sandbox: Math.max(cursor.sandbox, event.id) }
    : { ...cursor, resource: Math.max(cursor.resource, event.id) };
}

/** A sandbox row's type: its first row (state `starting`) is its creation, the others the state it entered. */
export function eventType(event: RecordedEvent): string {
  if (event.kind === 'resource') return event.type;
  return event.state === 'starting' ? 'sandbox.created' : `sandbox.${event.state}`;
}

/** The event as clients see it, with the id of the cursor after it. */
export function toCapsuleEvent(event: RecordedEvent, cursorAfter: EventCursor): CapsuleEvent {
  const common = {
    id: formatCursor(cursorAfter),
    type: eventType(event),
    at: event.at,
    reason: event.reason,
    ...(event.message !== null ? { message: event.message } : {}),
  };
  if (event.kind === 'sandbox')
    return { ...common, sandboxId: event.sandboxId, template: event.template, state: event.state as SandboxState };
  return {
    ...common,
    ...(event.template !== null ? { template: event.template } : {}),
    ...(event.image !== null ? { image: event.image } : {}),
    ...(event.workload !== null ? { workload: event.workload } : {}),
  };
}

/** What a reader wants; an empty list does not filter. */
export interface EventFilter {
  sandboxes: string[];
  templates: string[];
  /** Exact types or families (`sandbox`). */
  types: string[];
}

export const NO_FILTER: EventFilter = { sandboxes: [], templates: [], types: [] };

const knownTypes = new Set<string>([...EVENT_TYPES, ...EVENT_FAMILIES]);

/** Event types or families from a list; refuses names it does not know, so a typo is not a silent empty stream. */
export function checkEventTypes(types: string[]): string[] {
  const unknown = types.filter((t) => !knownTypes.has(t));
  if (unknown.length > 0) {
    throw new CapsuleError('invalid_argument', `unknown event type ${unknown.join(', ')}`, {
      hint: `use one of ${[...EVENT_FAMILIES, ...EVENT_TYPES].join(', ')}`,
    });
  }
  return types;
}

/** A filter from the query's comma-separated lists. */
export function parseFilter(query: {
  sandbox?: string | undefined;
  template?: string | undefined;
  type?: string | undefined;
}): EventFilter {
  const list = (text: string | undefined) =>
    (text ?? '')
      .split(',')
      .map((s) => s.trim())
      .filter((s) => s !== '');
  return { sandboxes: list(query.sandbox), templates: list(query.template), types: checkEventTypes(list(query.type)) };
}

export function matches(filter: EventFilter, event: RecordedEvent): boolean {
  if (filter.types.length > 0) {
    const type = eventType(event);
    if (!filter.types.some((t) => t === type || type.startsWith(`${t}.`))) return false;
  }
  if (filter.sandboxes.length > 0 && (event.kind !== 'sandbox' || !filter.sandboxes.includes(event.sandboxId))) return false;
  if (filter.templates.length > 0 && (event.template === null || !filter.templates.includes(event.template))) return false;
  return true;
}
