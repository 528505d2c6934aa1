// GET/POST /files against the bundled agent on a unix socket: envd's
// statuses and JSON errors, multipart and raw uploads, gzip and ranges, and a
// 100 MiB round trip through a slow reader while the agent's memory is watched.
import { createHash, randomBytes } from 'node:crypto';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readFileSync, realpathSync, rmSync, statSync, writeFileSync } from 'node:fs';
import type http2 from 'node:http2';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';
import { gunzipSync, gzipSync } from 'node:zlib';
import { createClient } from '@connectrpc/connect';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { EventType, Filesystem } from '@capsule/protocol/agent';
import { useAgentForFile, type RunningAgent } from '../test/agent-fixture.js';
import { plainRequest, startRequest } from '../test/plain-http-client.js';
import { lookupUser } from './users.js';

let agent: RunningAgent;
let session: http2.ClientHttp2Session;
const root = realpathSync(mkdtempSync(join(tmpdir(), 'capsule-files-test-')));
chmodSync(root, 0o755);
const otherUser = process.getuid?.() === 0 ? lookupUser('nobody') : undefined;

useAgentForFile((started) => {
  agent = started;
  session = agent.http2Session();
});

afterAll(() => {
  session?.close();
  rmSync(root, { recursive: true, force: true });
});

const query = (params: Record<string, string>) => `/files?${new URLSearchParams(params)}`;

const boundary = 'capsule-test-boundary-7MA4YWxkTrZu0gW';
function multipartBody(parts: Array<{ name: string; filename?: string; data: Buffer | string }>): Buffer {
  const pieces: Buffer[] = [];
  for (const part of parts) {
    const disposition = `form-data; name="${part.name}"${part.filename === undefined ? '' : `; filename="${part.filename}"`}`;
    pieces.push(Buffer.from(`--${boundary}\r\nContent-Disposition: ${disposition}\r\nContent-Type: application/octet-stream\r\n\r\n`));
    pieces.push(Buffer.from(part.data));
    pieces.push(Buffer.from('\r\n'));
  }
  pieces.push(Buffer.from(`--${boundary}--\r\n`));
  return Buffer.concat(pieces);
}
const multipartHeaders = { 'content-type': `multipart/form-data; boundary=${boundary}` };

describe('POST /files', () => {
  it('writes a raw body, creating parent directories, and answers with envd entries', async () => {
    const target = join(root, 'raw', 'a', 'b', 'file.bin');
    const response = await plainRequest(session, {
      method: 'POST',
      path: query({ path: target }),
      headers: { 'content-type': 'application/octet-stream' },
      body: Buffer.from('raw bytes'),
    });
    expect(response.status).toBe(200);
    expect(response.json()).toEqual([{ path: target, name: 'file.bin', type: 'file' }]);
    expect(readFileSync(target, 'utf8')).toBe('raw bytes');
    expect(statSync(join(root, 'raw', 'a')).mode & 0o777).toBe(0o755);
    // Nothing left over from the temp file + rename.
    expect(statSync(join(root, 'raw', 'a', 'b')).isDirectory()).toBe(true);
    expect(readFileSync(target).length).toBe(9);
  });

  it('writes every multipart "file" part to the path in its filename, skipping other fields', async () => {
    const one = join(root, 'multi', 'one.txt');
    const two = join(root, 'multi', 'nested', 'two.txt');
    const response = await plainRequest(session, {
      method: 'POST',
      path: '/files',
      headers: multipartHeaders,
      body: multipartBody([
        { name: 'file', filename: one, data: 'first' },
        { name: 'comment', data: 'not a file' },
        { name: 'file', filename: two, data: `second\r\n--${boundary.slice(0, 10)} not a boundary` },
      ]),
    });
    expect(response.status).toBe(200);
    expect(response.json()).toEqual([
      { path: one, name: 'one.txt', type: 'file' },
      { path: two, name: 'two.txt', type: 'file' },
    ]);
    expect(readFileSync(one, 'utf8')).toBe('first');
    expect(readFileSync(two, 'utf8')).toBe(`second\r\n--${boundary.slice(0, 10)} not a boundary`);
  });

  it('uses the path parameter over the filename, accepts gzip bodies, keeps an existing file mode', async () => {
    const target = join(root, 'query-path.sh');
    writeFileSync(target, 'old');
    chmodSync(target, 0o755);
    const response = await plainRequest(session, {
      method: 'POST',
      path: query({ path: target }),
      headers: { ...multipartHeaders, 'content-encoding': 'gzip' },
      body: gzipSync(multipartBody([{ name: 'file', filename: 'ignored.txt', data: '#!/bin/sh\necho new\n' }])),
    });
    expect(response.status).toBe(200);
    expect(readFileSync(target, 'utf8')).toBe('#!/bin/sh\necho new\n');
    expect(statSync(target).mode & 0o777).toBe(0o755);
  });

  it.skipIf(!otherUser)('gives new files and directories to the user named by username=', async () => {
    const target = join(root, 'owned', 'by', 'nobody.txt');
    const response = await plainRequest(session, {
      method: 'POST',
      path: query({ path: target, username: 'nobody' }),
      headers: { 'content-type': 'application/octet-stream' },
      body: 'mine',
    });
    expect(response.status).toBe(200);
    expect(statSync(target).uid).toBe(otherUser!.uid);
    expect(statSync(join(root, 'owned')).uid).toBe(otherUser!.uid);
  });

  it('leaves neither the file nor a temp file behind when the client gives up mid-upload', async () => {
    const dir = join(root, 'aborted');
    mkdirSync(dir);
    const stream = session.request({
      ':method': 'POST',
      ':path': query({ path: join(dir, 'partial.bin') }),
      'content-type': 'application/octet-stream',
    });
    stream.on('error', () => {});
    stream.write(randomBytes(256 * 1024));
    await sleep(100);
    stream.destroy(); // RST_STREAM without END_STREAM: the body is incomplete
    await sleep(200);
    const { readdirSync } = await import('node:fs');
    expect(readdirSync(dir)).toEqual([]);
    expect(agent.isRunning()).toBe(true);
  });

  it('answers envd statuses with JSON errors for bad requests', async () => {
    const post = (path: string, headers: Record<string, string>, body: Buffer | string) =>
      plainRequest(session, { method: 'POST', path, headers, body });
    const cases: Array<[Promise<Awaited<ReturnType<typeof post>>>, number]> = [
      [post(query({ path: join(root, 'x') }), { 'content-type': 'text/plain' }, 'x'), 400],
      [post('/files', { 'content-type': 'application/octet-stream' }, 'x'), 400],
      [post(query({ path: join(root, 'x'), username: 'capsule-no-such-user' }), { 'content-type': 'application/octet-stream' }, 'x'), 401],
      [post(query({ path: root }), { 'content-type': 'application/octet-stream' }, 'x'), 400],
      [post(query({ path: '~other/x' }), { 'content-type': 'application/octet-stream' }, 'x'), 400],
      [post('/files', { 'content-type': 'multipart/form-data' }, 'x'), 400],
      [
        post(
          '/files',
          multipartHeaders,
          `--${boundary}\r\nContent-Disposition: form-data; name="file"; filename="${join(root, 'cut')}"\r\n\r\nno end`,
        ),
        400,
      ],
      [post('/files', multipartHeaders, multipartBody([{ name: 'file', data: 'no filename' }])), 400],
      [post('/files', { ...multipartHeaders, 'content-encoding': 'br' }, 'x'), 400],
      [post('/files', { ...multipartHeaders, 'content-encoding': 'gzip' }, 'not gzip at all'), 400],
    ];
    for (const [pending, status] of cases) {
      const response = await pending;
      expect(response.status).toBe(status);
      expect(response.json()).toMatchObject({ code: status, message: expect.any(String) });
    }
    const duplicate = await post(
      '/files',
      multipartHeaders,
      multipartBody([
        { name: 'file', filename: join(root, 'dup.txt'), data: 'a' },
        { name: 'file', filename: join(root, 'dup.txt'), data: 'b' },
      ]),
    );
    expect(duplicate.status).toBe(400);
    expect((duplicate.json() as { message: string }).message).toContain('cannot upload multiple files to the same path');
    expect(readFileSync(join(root, 'dup.txt'), 'utf8')).toBe('a');
    expect(existsSync(join(root, 'cut'))).toBe(false); // a cut-off upload leaves nothing behind
    expect((await plainRequest(session, { method: 'PUT', path: '/files' })).status).toBe(405);
  });
});

describe('uploads seen by a directory watch', () => {
  it('look like envd writing in place: CREATE + WRITE when new, WRITE when replaced, no temp files', async () => {
    const dir = join(root, 'watched-uploads');
    mkdirSync(dir);
    const fs = createClient(Filesystem, agent.connectTransport());
    const controller = new AbortController();
    const lines: string[] = [];
    const stream = fs.watchDir({ path: dir }, { signal: controller.signal })[Symbol.asyncIterator]();
    expect((await stream.next()).value?.event.case).toBe('start');
    const collecting = (async () => {
      try {
        for (let next = await stream.next(); !next.done; next = await stream.next()) {
          if (next.value.event.case === 'filesystem')
            lines.push(`${EventType[next.value.event.value.type]} ${next.value.event.value.name}`);
        }
      } catch {
        // aborted below
      }
    })();
    const upload = (data: string) =>
      plainRequest(session, {
        method: 'POST',
        path: query({ path: join(dir, 'up.txt') }),
        headers: { 'content-type': 'application/octet-stream' },
        body: data,
      });
    expect((await upload('first')).status).toBe(200);
    await sleep(150);
    const afterFirst = lines.length;
    expect((await upload('second')).status).toBe(200);
    await sleep(150);
    controller.abort();
    await collecting;
    expect(lines.slice(0, afterFirst)).toEqual(['CREATE up.txt', 'WRITE up.txt']);
    expect(lines.slice(afterFirst)).toEqual(['WRITE up.txt']);
  });
});

describe('GET /files', () => {
  const file = join(root, 'download.txt');
  const content = 'line of text\n'.repeat(1000);
  beforeAll(() => writeFileSync(file, content));

  it('streams the file with length, type and modification time', async () => {
    const response = await plainRequest(session, { path: query({ path: file }) });
    expect(response.status).toBe(200);
    expect(response.body.toString()).toBe(content);
    expect(response.headers['content-length']).toBe(String(content.length));
    expect(response.headers['content-type']).toBe('text/plain; charset=utf-8');
    expect(Date.parse(String(response.headers['last-modified']))).toBe(Math.floor(statSync(file).mtimeMs / 1000) * 1000);
    const empty = join(root, 'empty');
    writeFileSync(empty, '');
    expect((await plainRequest(session, { path: query({ path: empty }) })).body.length).toBe(0);
  });

  it('compresses with gzip when asked, serves ranges unencoded', async () => {
    const gzipped = await plainRequest(session, { path: query({ path: file }), headers: { 'accept-encoding': 'gzip, deflate, br' } });
    expect(gzipped.status).toBe(200);
    expect(gzipped.headers['content-encoding']).toBe('gzip');
    expect(gzipped.body.length).toBeLessThan(content.length / 10);
    expect(gunzipSync(gzipped.body).toString()).toBe(content);
    const identity = await plainRequest(session, { path: query({ path: file }), headers: { 'accept-encoding': 'gzip;q=0.5, identity' } });
    expect(identity.headers['content-encoding']).toBeUndefined();

    const ranged = await plainRequest(session, {
      path: query({ path: file }),
      headers: { range: 'bytes=5-11', 'accept-encoding': 'gzip' },
    });
    expect(ranged.status).toBe(206);
    expect(ranged.headers['content-encoding']).toBeUndefined();
    expect(ranged.headers['content-range']).toBe(`bytes 5-11/${content.length}`);
    expect(ranged.body.toString()).toBe(content.slice(5, 12));
    const beyond = await plainRequest(session, { path: query({ path: file }), headers: { range: `bytes=${content.length}-` } });
    expect(beyond.status).toBe(416);
    const refused = await plainRequest(session, { path: query({ path: file }), headers: { 'accept-encoding': 'identity;q=0, br' } });
    expect(refused.status).toBe(400);
  });

  it('answers 404, 400 and 401 with JSON errors like envd', async () => {
    const missing = await plainRequest(session, { path: query({ path: join(root, 'nope.txt') }) });
    expect(missing.status).toBe(404);
    expect(missing.json()).toEqual({ code: 404, message: `path '${join(root, 'nope.txt')}' does not exist` });
    const directory = await plainRequest(session, { path: query({ path: root }) });
    expect(directory.status).toBe(400);
    expect((directory.json() as { message: string }).message).toContain('is a directory');
    expect((await plainRequest(session, { path: query({ path: file, username: 'capsule-no-such-user' }) })).status).toBe(401);
    expect((await plainRequest(session, { path: query({ path: '/dev/null' }) })).status).toBe(400);
  });
});

describe('100 MiB through /files', () => {
  it('uploads (multipart) and downloads (slow reader) with equal sha256, the agent staying small', async () => {
    const size = 100 * 1024 * 1024;
    const target = join(root, 'big', 'blob.bin');
    const sentHash = createHash('sha256');
    const rssSamples: number[] = [];
    const baseline = agent.rssBytes();
    const sampler = setInterval(() => rssSamples.push(agent.rssBytes()), 25);
    try {
      async function* body() {
        yield Buffer.from(`--${boundary}\r\nContent-Disposition: form-data; name="file"; filename="${target}"\r\n\r\n`);
        for (let sent = 0; sent < size; sent += 1024 * 1024) {
          const chunk = randomBytes(1024 * 1024);
          sentHash.update(chunk);
          yield chunk;
        }
        yield Buffer.from(`\r\n--${boundary}--\r\n`);
      }
      const upload = await plainRequest(session, {
        method: 'POST',
        path: '/files',
        headers: multipartHeaders,
        body: Readable.from(body()),
      });
      expect(upload.status).toBe(200);
      const expected = sentHash.digest('hex');
      expect(statSync(target).size).toBe(size);
      expect(createHash('sha256').update(readFileSync(target)).digest('hex')).toBe(expected);

      const { status, headers, stream } = await startRequest(session, { path: query({ path: target }) });
      expect(status).toBe(200);
      expect(headers['content-length']).toBe(String(size));
      const receivedHash = createHash('sha256');
      let received = 0;
      let sinceNap = 0;
      for await (const chunk of stream) {
        receivedHash.update(chunk as Buffer);
        received += (chunk as Buffer).length;
        sinceNap += (chunk as Buffer).length;
        // A slow reader: a nap every 4 MiB, the agent must wait for it rather than buffer.
        if (sinceNap >= 4 * 1024 * 1024) {
          sinceNap = 0;
          await sleep(40);
        }
      }
      expect(received).toBe(size);
      expect(receivedHash.digest('hex')).toBe(expected);
    } finally {
      clearInterval(sampler);
    }
    const growth = Math.max(...rssSamples) - baseline;
    console.log(`agent RSS: baseline ${(baseline / 2 ** 20).toFixed(1)} MiB, peak growth ${(growth / 2 ** 20).toFixed(1)} MiB`);
    // Far below the file's size: nothing is buffered whole (the rest is GC lag).
    expect(growth).toBeLessThan(80 * 1024 * 1024);
    expect(agent.isRunning()).toBe(true);
  }, 120_000);
});

afterAll(() => {
  if (existsSync(join(root, 'big'))) rmSync(join(root, 'big'), { recursive: true, force: true });
});
