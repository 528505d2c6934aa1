// One client's `GET /v1/events`: the history it missed from the store, then
// live events from the store's feed, as Server-Sent Events. It must never let
// a client that reads slowly grow the daemon's memory: such a client is cut
// with an `overflow` message carrying the id to resume from.
import type { ServerResponse } from 'node:http';
import { EVENT_STREAM_OVERFLOW } from '@capsule/protocol';
import { errorMessage } from '../errors.js';
import type { RecordedEvent } from '../store/event-feed.js';
import { lastEventIds, resourceEventsAfter, sandboxEventsAfter } from '../store/events.js';
import type { Store } from '../store/store.js';
import { advance, formatCursor, matches, seen, toCapsuleEvent, type EventCursor, type EventFilter } from './event-view.js';
import { formatSseComment, formatSseMessage } from './sse.js';

export interface EventStreamLimits {
  /** A comment is sent this often, so proxies keep a quiet stream open. */
  heartbeatMs: number;
  /** Live events held while the client's catch-up is still being read; one more cuts it. */
  maxPendingEvents: number;
  /** Bytes written to the client and not yet taken by its socket; more cuts it. */
  maxBufferedBytes: number;
  /** Rows read from each history at a time while catching up. */
  pageSize: number;
}

export const defaultEventStreamLimits: EventStreamLimits = {
  heartbeatMs: 15_000,
  maxPendingEvents: 1_000,
  maxBufferedBytes: 1024 * 1024,
  pageSize: 500,
};

/** Where a stream starts: after an event id, at a time, or with the events recorded from now on. */
export type StreamStart = { after: EventCursor } | { at: string } | 'now';

/** Answers `res` with the event stream; resolves once the catch-up is sent (live events follow until the client goes). */
export async function serveEventStream(
  store: Store,
  res: ServerResponse,
  filter: EventFilter,
  start: StreamStart,
  limits: EventStreamLimits = defaultEventStreamLimits,
): Promise<void> {
  let closed = false;
  let live = false;
  let cursor: EventCursor = { sandbox: 0, resource: 0 };
  const pending: RecordedEvent[] = [];

  // Called only once the subscription and the heartbeat below exist.
  const stop = () => {
    closed = true;
    unsubscribe();
    clearInterval(heartbeat);
  };
  /** Writes the event if the client has not had it and wants it; false when the socket's buffer is full. */
  const deliver = (event: RecordedEvent): boolean => {
    // A catch-up page read before the client was cut or went may still be in hand.
    if (closed || seen(cursor, event)) return true;
    cursor = advance(cursor, event);
    if (!matches(filter, event)) return true;
    return res.write(formatSseMessage({ id: formatCursor(cursor), data: JSON.stringify(toCapsuleEvent(event, cursor)) }));
  };
  const end = (last?: { event: string; code: string; message: string }) => {
    if (closed) return;
    stop();
    if (last) {
      const data = JSON.stringify({ code: last.code, message: last.message, lastEventId: formatCursor(cursor) });
      res.write(formatSseMessage({ id: formatCursor(cursor), event: last.event, data }));
    }
    res.end();
  };
  const cut = () =>
    end({ event: EVENT_STREAM_OVERFLOW, code: 'too_slow', message: 'the client read events too slowly; resume from lastEventId' });

  const unsubscribe = store.feed.subscribe((event) => {
    if (closed) return;
    if (!live) {
      if (pending.length >= limits.maxPendingEvents) cut();
      else pending.push(event);
      return;
    }
    deliver(event);
    if (res.writableLength > limits.maxBufferedBytes) cut();
  });
  const heartbeat = setInterval(() => res.write(formatSseComment('keepalive')), limits.heartbeatMs);
  res.once('close', stop);

  res.writeHead(200, {
    'content-type': 'text/event-stream; charset=utf-8',
    'cache-control': 'no-store',
    // nginx buffers responses unless told not to.
    'x-accel-buffering': 'no',
  });
  res.write(formatSseComment('capsule events'));
  try {
    cursor = start === 'now' ? await lastEventIds(store) : 'at' in start ? await lastEventIds(store, start.at) : start.after;
    await catchUp(
      store,
      limits.pageSize,
      cursor,
      () => closed,
      async (event) => {
        if (!deliver(event)) await drained(res);
      },
    );
  } catch (err) {
    end({ event: 'error', code: 'internal', message: `reading the event history failed: ${errorMessage(err)}` });
    return;
  }
  if (closed) return;
  live = true;
  for (const event of pending.splice(0)) deliver(event);
  if (res.writableLength > limits.maxBufferedBytes) cut();
}

/** Sends both histories after `from`, merged by time (each in id order), until they are read or `stopped()`. */
async function catchUp(
  store: Store,
  pageSize: number,
  from: EventCursor,
  stopped: () => boolean,
  send: (event: RecordedEvent) => Promise<void>,
): Promise<void> {
  const sources = [
    { read: (after: number) => sandboxEventsAfter(store, after, pageSize), after: from.sandbox, page: [] as RecordedEvent[], done: false },
    {
      read: (after: number) => resourceEventsAfter(store, after, pageSize),
      after: from.resource,
      page: [] as RecordedEvent[],
      done: false,
    },
  ];
  while (!stopped()) {
    for (const source of sources) {
      if (source.page.length > 0 || source.done) continue;
      source.page = await source.read(source.after);
      // Rows written after this read reach the stream live: it subscribed before reading.
      source.done = source.page.length < pageSize;
      source.after = source.page.at(-1)?.id ?? source.after;
    }
    const [sandbox, resource] = sources.map((s) => s.page[0]);
    if (!sandbox && !resource) return;
    const next = !resource || (sandbox && sandbox.at <= resource.at) ? sources[0]! : sources[1]!;
    await send(next.page.shift()!);
  }
}

function drained(res: ServerResponse): Promise<void> {
  return new Promise((resolve) => {
    const settle = () => {
      res.off('drain', settle).off('close', settle);
      resolve();
    };
    res.once('drain', settle).once('close', settle);
  });
}
