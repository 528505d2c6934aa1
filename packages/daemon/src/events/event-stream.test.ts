import { setTimeout as sleep } from 'node:timers/promises';
import type { ServerResponse } from 'node:http';
import { Writable } from 'node:stream';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { recordResourceEvent } from '../store/events.js';
import { startingSandboxRow } from '../store/sandbox-row.test-fixture.js';
import { Store } from '../store/store.js';
import { NO_FILTER, parseFilter } from './event-view.js';
import { defaultEventStreamLimits, serveEventStream } from './event-stream.js';

/** A response whose client reads at once (`reading`) or never: what was written, parsed back into messages. */
class FakeResponse extends Writable {
  text = '';
  constructor(reading: boolean) {
    super({ highWaterMark: 256 });
    this.reading = reading;
    // Recorded as written: a client that never reads takes none of it.
    const write = this.write.bind(this);
    this.write = ((chunk: string) => {
      this.text += chunk;
      return write(chunk);
    }) as typeof this.write;
  }
  readonly reading: boolean;
  override _write(_chunk: Buffer, _encoding: string, callback: () => void): void {
    if (this.reading) callback();
  }
  writeHead(): this {
    return this;
  }
  messages(): { id?: string; event?: string; data: string }[] {
    return this.text
      .split('\n\n')
      .filter((block) => block !== '' && !block.startsWith(':'))
      .map((block) => {
        const field = (name: string) =>
          block
            .split('\n')
            .find((line) => line.startsWith(`${name}: `))
            ?.slice(name.length + 2);
        return { id: field('id'), event: field('event'), data: field('data') ?? '' };
      });
  }
  types(): string[] {
    return this.messages()
      .filter((m) => m.event === undefined)
      .map((m) => (JSON.parse(m.data) as { type: string }).type);
  }
}

const asResponse = (fake: FakeResponse) => fake as unknown as ServerResponse;

describe('the event stream (real SQLite, in memory)', () => {
  let store: Store;
  beforeEach(async () => {
    store = await Store.open(':memory:');
  });
  afterEach(() => store.close());

  it('replays both histories after a cursor in time order, then goes live without repeating one', async () => {
    // The two histories merge by their millisecond times: events of different histories within one
    // millisecond have no order between them, so these are written a few milliseconds apart.
    await store.insertSandbox(startingSandboxRow('sb_a'));
    await sleep(3);
    await recordResourceEvent(store, { type: 'image.pulled', image: 'alpine:3', reason: 'user' });
    await sleep(3);
    await store.transition('sb_a', 'running', 'user');
    const res = new FakeResponse(true);
    await serveEventStream(store, asResponse(res), NO_FILTER, { after: { sandbox: 0, resource: 0 } });
    await store.transition('sb_a', 'killed', 'timeout');
    expect(res.types()).toEqual(['sandbox.created', 'image.pulled', 'sandbox.running', 'sandbox.killed']);
    expect(res.messages().map((m) => m.id)).toEqual(['1-0', '1-1', '2-1', '3-1']);
    res.emit('close');
  });

  it('starts at a time, and with neither id nor time sends only new events', async () => {
    await store.insertSandbox(startingSandboxRow('sb_a'));
    const fromNow = new FakeResponse(true);
    await serveEventStream(store, asResponse(fromNow), NO_FILTER, 'now');
    const fromTime = new FakeResponse(true);
    await serveEventStream(store, asResponse(fromTime), NO_FILTER, { at: new Date(Date.now() - 60_000).toISOString() });
    await store.transition('sb_a', 'running', 'user');
    expect(fromNow.types()).toEqual(['sandbox.running']);
    expect(fromTime.types()).toEqual(['sandbox.created', 'sandbox.running']);
  });

  it('sends only what the filter wants, yet resumes past what it skipped', async () => {
    await store.insertSandbox(startingSandboxRow('sb_a'));
    await store.insertSandbox(startingSandboxRow('sb_b'));
    const res = new FakeResponse(true);
    await serveEventStream(store, asResponse(res), parseFilter({ sandbox: 'sb_b' }), { after: { sandbox: 0, resource: 0 } });
    expect(res.messages().map((m) => m.id)).toEqual(['2-0']);
  });

  it('cuts a client that reads too slowly with an overflow message naming where to resume, and stops feeding it', async () => {
    await store.insertSandbox(startingSandboxRow('sb_a'));
    const res = new FakeResponse(false);
    await serveEventStream(store, asResponse(res), NO_FILTER, 'now', { ...defaultEventStreamLimits, maxBufferedBytes: 2048 });
    for (let i = 0; i < 50; i++) await store.transition('sb_a', i % 2 ? 'paused' : 'running', 'user');
    const messages = res.messages();
    const last = messages.at(-1)!;
    expect(last.event).toBe('overflow');
    const { lastEventId } = JSON.parse(last.data) as { lastEventId: string };
    // Every event before it was sent; the resume id is the last one's.
    expect(lastEventId).toBe(messages.at(-2)!.id);
    expect(messages.length).toBeLessThan(50);
    expect(res.writableEnded).toBe(true);
    const written = res.text.length;
    await store.transition('sb_a', 'killed', 'user');
    expect(res.text.length).toBe(written);
  });

  it('stops feeding a client once it disconnects', async () => {
    await store.insertSandbox(startingSandboxRow('sb_a'));
    const res = new FakeResponse(true);
    await serveEventStream(store, asResponse(res), NO_FILTER, 'now');
    res.emit('close');
    await store.transition('sb_a', 'running', 'user');
    expect(res.types()).toEqual([]);
  });
});

describe('a client cut while its catch-up is read (real SQLite, in memory)', () => {
  it('gets nothing after its overflow message', async () => {
    const store = await Store.open(':memory:');
    for (const id of ['sb_a', 'sb_b', 'sb_c']) await store.insertSandbox(startingSandboxRow(id));
    const res = new FakeResponse(true);
    // One live event more than may wait while the catch-up is read, arriving during its first page read.
    const serving = serveEventStream(
      store,
      asResponse(res),
      NO_FILTER,
      { after: { sandbox: 0, resource: 0 } },
      {
        ...defaultEventStreamLimits,
        maxPendingEvents: 0,
        pageSize: 1,
      },
    );
    await store.transition('sb_a', 'running', 'user');
    await serving;
    const messages = res.messages();
    expect(messages.at(-1)?.event).toBe('overflow');
    expect(res.errored).toBeNull();
    await store.close();
  });
});
