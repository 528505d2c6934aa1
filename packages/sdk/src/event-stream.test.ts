import { createHmac } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { MAX_EVENT_MESSAGE_CHARS, parseServerSentEvents, verifyWebhookSignature } from './event-stream.js';

async function* chunks(...parts: (string | Uint8Array)[]): AsyncGenerator<Uint8Array> {
  for (const part of parts) yield typeof part === 'string' ? Buffer.from(part) : part;
}

async function collect<T>(source: AsyncIterable<T>): Promise<T[]> {
  const out: T[] = [];
  for await (const item of source) out.push(item);
  return out;
}

describe('parseServerSentEvents', () => {
  it('reads messages split anywhere, comments skipped, a UTF-8 character cut between chunks kept whole', async () => {
    const euro = Buffer.from('€');
    const messages = await collect(
      parseServerSentEvents(
        chunks(
          ': capsule events\n\nid: 1-0\nda',
          'ta: {"a":"',
          euro.subarray(0, 1),
          Buffer.concat([euro.subarray(1), Buffer.from('"}\n\n')]),
          'event: overflow\nid: 2-0\ndata: x\n\n',
        ),
      ),
    );
    expect(messages.map((m) => [m.id, m.event, m.data])).toEqual([
      ['1-0', undefined, '{"a":"€"}'],
      ['2-0', 'overflow', 'x'],
    ]);
  });

  it('refuses a message that never ends rather than buffer it', async () => {
    const endless = async function* () {
      for (let sent = 0; sent <= MAX_EVENT_MESSAGE_CHARS; sent += 64 * 1024) yield Buffer.from(`data: ${'x'.repeat(64 * 1024)}\n`);
    };
    await expect(collect(parseServerSentEvents(endless()))).rejects.toThrow(/cannot be read/);
  });
});

describe('verifyWebhookSignature', () => {
  const body = '{"id":"s1","type":"sandbox.killed"}';
  const sign = (secret: string, t: number, text: string) =>
    `t=${t},v1=${createHmac('sha256', secret).update(`${t}.${text}`).digest('hex')}`;

  it('accepts the signature of the body at a recent time', () => {
    expect(verifyWebhookSignature({ secret: 'whsec_a', signatureHeader: sign('whsec_a', 1000, body), body, nowSeconds: 1010 })).toBe(true);
  });

  it('refuses another body, another secret, an old timestamp and a missing header', () => {
    const header = sign('whsec_a', 1000, body);
    expect(verifyWebhookSignature({ secret: 'whsec_a', signatureHeader: header, body: `${body} `, nowSeconds: 1000 })).toBe(false);
    expect(verifyWebhookSignature({ secret: 'whsec_b', signatureHeader: header, body, nowSeconds: 1000 })).toBe(false);
    expect(verifyWebhookSignature({ secret: 'whsec_a', signatureHeader: header, body, nowSeconds: 1000 + 301 })).toBe(false);
    expect(verifyWebhookSignature({ secret: 'whsec_a', signatureHeader: undefined, body, nowSeconds: 1000 })).toBe(false);
    expect(verifyWebhookSignature({ secret: 'whsec_a', signatureHeader: header.replace('t=1000', 't=1001'), body, nowSeconds: 1000 })).toBe(
      false,
    );
  });
});
