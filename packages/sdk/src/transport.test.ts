import { afterEach, describe, expect, it } from 'vitest';
import { HttpTransport } from './transport.js';
import { sendJson, startStandInDaemon, type StandInDaemon } from './testing/stand-in-daemon.js';

let daemon: StandInDaemon | undefined;
let transport: HttpTransport | undefined;

afterEach(async () => {
  transport?.close();
  await daemon?.close();
  transport = undefined;
  daemon = undefined;
});

describe('HttpTransport request bodies (stand-in daemon)', () => {
  it('streams an async-iterable body as it is produced, chunked unless a length is given', async () => {
    const seen: { encoding: string | undefined; length: string | undefined }[] = [];
    daemon = await startStandInDaemon((_request, res, req) => {
      seen.push({ encoding: req.headers['transfer-encoding'], length: req.headers['content-length'] });
      sendJson(res, 200, { ok: true });
    });
    transport = new HttpTransport({ socketPath: daemon.socketPath });
    async function* parts() {
      yield Buffer.from('one,');
      yield new Uint8Array([116, 119, 111]); // "two"
    }
    const chunked = await transport.request({ method: 'POST', path: '/upload', body: parts() });
    chunked.cancel();
    const sized = await transport.request({ method: 'POST', path: '/upload', body: parts(), headers: { 'content-length': '7' } });
    sized.cancel();
    expect(daemon.requests.map((r) => r.body)).toEqual(['one,two', 'one,two']);
    expect(seen).toEqual([
      { encoding: 'chunked', length: undefined },
      { encoding: undefined, length: '7' },
    ]);
  });

  it("rejects with the body's own error when it fails midway", async () => {
    daemon = await startStandInDaemon((_request, res) => sendJson(res, 200, {}));
    transport = new HttpTransport({ socketPath: daemon.socketPath });
    const failure = new Error('disk read failed');
    async function* failing() {
      yield Buffer.from('partial');
      throw failure;
    }
    await expect(transport.request({ method: 'POST', path: '/upload', body: failing() })).rejects.toBe(failure);
  });
});
