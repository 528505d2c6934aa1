// Large /files transfers through the VM's bulk port (a second virtio-serial
// port; see api/bulk-files.ts), against a real daemon and microVM: checksums
// both ways (raw, multipart and chunked uploads), the daemon's log showing the
// bulk path was taken, malformed forms refused with nothing lost, clients
// aborting mid-transfer leaving nothing behind, and the agent's rules (errors
// in envd's shape) still applied.
import { createHash, randomBytes } from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, beforeAll, describe, expect } from 'vitest';
import { eventually, it, TestDaemon } from './fixture.js';

const MiB = 1024 * 1024;
const BULK_LOG = 'file transfer through the bulk port';

describe('/files through the bulk port', () => {
  const daemon = new TestDaemon({ CAPSULE_WARM_POOL_SIZE: '0' });
  let id: string;
  beforeAll(async () => {
    await daemon.start();
    id = (await daemon.api.createSandbox()).id;
  }, 300_000);
  afterAll(async () => {
    await daemon.destroy();
  });

  const sh = async (script: string): Promise<string> => {
    return (await daemon.api.exec(id, ['sh', '-c', script])).stdout;
  };
  const bulkTransfers = () =>
    daemon
      .log()
      .split('\n')
      .filter((line) => line.includes(BULK_LOG))
      .map((line) => JSON.parse(line) as { direction: string; bytes: number });
  /** The count once the daemon's log caught up (it logs a transfer just after its client has the answer). */
  const settledTransfers = async () => {
    await sleep(300);
    return bulkTransfers().length;
  };
  const expectTransfers = (count: number) =>
    eventually(() => (bulkTransfers().length === count ? true : undefined), 5000, `${count} bulk transfers in the log`);
  const auth = (user: string) => `Basic ${Buffer.from(`${user}:`).toString('base64')}`;
  const filesPath = (path: string) => `/v1/sandboxes/${id}/envd/files?path=${encodeURIComponent(path)}`;

  /** POST of `chunks` with `contentType`, with a Content-Length unless `chunked`; the status and the body of the answer. */
  const post = (path: string, contentType: string, chunks: Buffer[], { user = 'root', chunked = false } = {}) =>
    new Promise<{ status: number; text: string }>((resolve, reject) => {
      const length = chunks.reduce((sum, chunk) => sum + chunk.length, 0);
      const req = http.request(
        {
          socketPath: daemon.socketPath,
          method: 'POST',
          path: filesPath(path),
          headers: { authorization: auth(user), 'content-type': contentType, ...(chunked ? {} : { 'content-length': length }) },
        },
        (res) => {
          let text = '';
          res.setEncoding('utf8').on('data', (c: string) => (text += c));
          res.on('end', () => resolve({ status: res.statusCode ?? 0, text }));
        },
      );
      req.on('error', reject);
      for (const chunk of chunks) req.write(chunk);
      req.end();
    });
  /** POST of `data` as octet-stream. */
  const upload = (path: string, data: Buffer, user = 'root') => post(path, 'application/octet-stream', [data], { user });
  /** A multipart/form-data body of `parts` (a Buffer is a file part, a string a plain field), ended as `ending` says. */
  const form = (parts: Array<{ name: string; value: Buffer | string }>, ending = '--\r\n') => {
    const boundary = `capsule-test-${randomBytes(8).toString('hex')}`;
    const chunks = parts.flatMap(({ name, value }) => [
      Buffer.from(
        `--${boundary}\r\ncontent-disposition: form-data; name="${name}"${typeof value === 'string' ? '' : '; filename="blob"\r\ncontent-type: application/octet-stream'}\r\n\r\n`,
      ),
      typeof value === 'string' ? Buffer.from(value) : value,
      Buffer.from('\r\n'),
    ]);
    return { contentType: `multipart/form-data; boundary=${boundary}`, chunks: [...chunks, Buffer.from(`--${boundary}${ending}`)] };
  };
  /** GET; the status, length and SHA-256 of the body. */
  const download = (path: string, headers: http.OutgoingHttpHeaders = {}) =>
    new Promise<{ status: number; length: number; sha256: string; contentLength: string | undefined; encoding: string | undefined }>(
      (resolve, reject) => {
        const req = http.request(
          { socketPath: daemon.socketPath, path: filesPath(path), headers: { authorization: auth('root'), ...headers } },
          (res) => {
            const hash = createHash('sha256');
            let length = 0;
            res.on('data', (c: Buffer) => {
              hash.update(c);
              length += c.length;
            });
            res.on('end', () =>
              resolve({
                status: res.statusCode ?? 0,
                length,
                sha256: hash.digest('hex'),
                contentLength: res.headers['content-length'],
                encoding: res.headers['content-encoding'],
              }),
            );
            res.on('error', reject);
          },
        );
        req.on('error', reject);
        req.end();
      },
    );
  const daemonFdCount = () => fs.readdirSync(`/proc/${daemon.pid}/fd`).length;
  const sha256 = (data: Buffer) => createHash('sha256').update(data).digest('hex');
  /** What might leak in the guest: bulk helpers still running, upload temp files, the agent's open fds. */
  const guestLeftovers = () =>
    sh('ps -eo args | grep -c "[b]ulk-"; ls -a /var/tmp | grep -c "^.capsule-upload-"; ls /proc/$(pidof -s node)/fd | wc -l');

  it('uploads and downloads 128 MiB through the bulk port, byte for byte', async () => {
    const data = randomBytes(128 * MiB);
    const before = await settledTransfers();
    const up = await upload('/var/tmp/bulk-big.bin', data);
    expect(up.status, up.text).toBe(200);
    expect(JSON.parse(up.text)).toEqual([{ path: '/var/tmp/bulk-big.bin', name: 'bulk-big.bin', type: 'file' }]);
    expect((await sh('stat -c "%s %U %a" /var/tmp/bulk-big.bin')).trim()).toBe(`${128 * MiB} root 644`);
    const down = await download('/var/tmp/bulk-big.bin');
    expect(down.status).toBe(200);
    expect(down.contentLength).toBe(String(128 * MiB));
    expect(down.length).toBe(128 * MiB);
    expect(down.sha256).toBe(sha256(data));
    await expectTransfers(before + 2);
    expect(bulkTransfers().slice(before)).toEqual([
      expect.objectContaining({ direction: 'upload', bytes: 128 * MiB }),
      expect.objectContaining({ direction: 'download', bytes: 128 * MiB }),
    ]);
  }, 300_000);

  it("takes a form's file and a body of unknown length through the port, and downloads for gzip-accepting clients; a form whose file comes later through HTTP/2", async () => {
    const before = await settledTransfers();
    const first = randomBytes(16 * MiB + 3);
    const fileFirst = form([
      { name: 'file', value: first },
      { name: 'note', value: 'skipped, as envd does' },
    ]);
    const up = await post('/var/tmp/form-first.bin', fileFirst.contentType, fileFirst.chunks);
    expect(up.status, up.text).toBe(200);
    expect(JSON.parse(up.text)).toEqual([{ path: '/var/tmp/form-first.bin', name: 'form-first.bin', type: 'file' }]);
    // Asked for gzip, as fetch clients do by default: the bulk port's unencoded bytes are quicker than compressing in the guest.
    const gzipAccepted = await download('/var/tmp/form-first.bin', { 'accept-encoding': 'gzip, deflate' });
    expect(gzipAccepted.encoding).toBeUndefined();
    expect(gzipAccepted.sha256).toBe(sha256(first));

    const streamed = randomBytes(8 * MiB);
    const pieces = [streamed.subarray(0, 3 * MiB), streamed.subarray(3 * MiB, 3 * MiB + 1), streamed.subarray(3 * MiB + 1)];
    expect((await post('/var/tmp/chunked.bin', 'application/octet-stream', pieces, { chunked: true })).status).toBe(200);
    expect((await download('/var/tmp/chunked.bin')).sha256).toBe(sha256(streamed));
    await expectTransfers(before + 4);
    expect(
      bulkTransfers()
        .slice(before)
        .map((t) => t.direction === 'upload' && t.bytes),
    ).toEqual([first.length, false, streamed.length, false]);

    const later = randomBytes(8 * MiB);
    const fileLater = form([
      { name: 'note', value: 'first' },
      { name: 'file', value: later },
    ]);
    expect((await post('/var/tmp/form-later.bin', fileLater.contentType, fileLater.chunks)).status).toBe(200);
    expect(await settledTransfers()).toBe(before + 4);
    expect((await download('/var/tmp/form-later.bin')).sha256).toBe(sha256(later));
  }, 180_000);

  it('refuses a form with a second file or a cut-off ending, and keeps the file it would have replaced', async () => {
    await sh('echo kept > /var/tmp/kept.txt');
    const baseline = await guestLeftovers();
    const twoFiles = form([
      { name: 'file', value: randomBytes(4 * MiB) },
      { name: 'file', value: Buffer.from('second') },
    ]);
    const cutOff = form([{ name: 'file', value: randomBytes(4 * MiB) }], '');
    for (const body of [twoFiles, cutOff]) {
      const res = await post('/var/tmp/kept.txt', body.contentType, body.chunks);
      expect(res.status, res.text).toBe(400);
      expect(res.text).toMatch(/error reading form/);
    }
    expect((await sh('cat /var/tmp/kept.txt')).trim()).toBe('kept');
    expect(await guestLeftovers()).toBe(baseline);
    // The port works after them.
    const data = randomBytes(4 * MiB);
    expect((await upload('/var/tmp/after-forms.bin', data)).status).toBe(200);
    expect((await download('/var/tmp/after-forms.bin')).sha256).toBe(sha256(data));
  }, 120_000);

  it('keeps small files on HTTP/2, correct both ways', async () => {
    const before = await settledTransfers();
    const data = randomBytes(100 * 1024);
    expect((await upload('/var/tmp/small.bin', data)).status).toBe(200);
    const down = await download('/var/tmp/small.bin');
    expect(down.sha256).toBe(sha256(data));
    expect(await settledTransfers()).toBe(before);
  }, 60_000);

  it('answers refused bulk uploads with the same envd errors as small ones', async () => {
    const refusals = [
      { what: 'an unknown user', path: '/var/tmp/refused.bin', user: 'nobody-here', status: 401 },
      { what: 'a directory as the target', path: '/var/tmp', user: 'root', status: 400 },
      { what: 'a path under a file', path: '/var/tmp/small.bin/under', user: 'root', status: 500 },
    ];
    const before = await settledTransfers();
    for (const refusal of refusals) {
      const small = await upload(refusal.path, randomBytes(1024), refusal.user);
      const large = await upload(refusal.path, randomBytes(8 * MiB), refusal.user);
      expect(small.status, refusal.what).toBe(refusal.status);
      expect(large.status, refusal.what).toBe(refusal.status);
      expect(JSON.parse(large.text), refusal.what).toEqual(JSON.parse(small.text));
    }
    expect(await settledTransfers()).toBe(before);
    // The port is fine after refusals.
    const data = randomBytes(4 * MiB);
    expect((await upload('/var/tmp/after-refusal.bin', data)).status).toBe(200);
    expect((await download('/var/tmp/after-refusal.bin')).sha256).toBe(sha256(data));
    await expectTransfers(before + 2);
  }, 120_000);

  it('takes back-to-back transfers through the port, and lets concurrent ones fall back to HTTP/2', async () => {
    const data = randomBytes(8 * MiB);
    expect((await upload('/var/tmp/shared.bin', data)).status).toBe(200);
    let before = await settledTransfers();
    for (let i = 0; i < 3; i++) expect((await download('/var/tmp/shared.bin')).sha256).toBe(sha256(data));
    await expectTransfers(before + 3);

    before = await settledTransfers();
    const other = randomBytes(8 * MiB);
    const [up, ...downs] = await Promise.all([
      upload('/var/tmp/other.bin', other),
      download('/var/tmp/shared.bin'),
      download('/var/tmp/shared.bin'),
    ]);
    expect(up!.status).toBe(200);
    for (const down of downs) expect(down.sha256).toBe(sha256(data));
    expect((await download('/var/tmp/other.bin')).sha256).toBe(sha256(other));
    const taken = (await settledTransfers()) - before;
    expect(taken).toBeGreaterThanOrEqual(2); // at least one of the three, and the last download
    expect(taken).toBeLessThan(4);
  }, 120_000);

  it('survives clients that abort mid-upload and mid-download, leaking nothing', async () => {
    const baseline = await guestLeftovers();
    const daemonFds = daemonFdCount();

    // Upload: announce 64 MiB, send 8, go away.
    await new Promise<void>((resolve) => {
      const req = http.request({
        socketPath: daemon.socketPath,
        method: 'POST',
        path: filesPath('/var/tmp/aborted.bin'),
        headers: { authorization: auth('root'), 'content-type': 'application/octet-stream', 'content-length': 64 * MiB },
      });
      req.on('error', () => resolve());
      req.on('close', () => resolve());
      req.write(randomBytes(8 * MiB), () => setTimeout(() => req.destroy(), 500));
    });

    // Download: read 4 MiB of the big file, go away.
    await new Promise<void>((resolve, reject) => {
      const req = http.request(
        { socketPath: daemon.socketPath, path: filesPath('/var/tmp/bulk-big.bin'), headers: { authorization: auth('root') } },
        (res) => {
          let got = 0;
          res.on('data', (c: Buffer) => {
            got += c.length;
            if (got >= 4 * MiB) req.destroy();
          });
          res.on('error', () => undefined);
        },
      );
      req.on('error', () => undefined);
      req.on('close', () => resolve());
      req.on('timeout', () => reject(new Error('timed out')));
      req.end();
    });

    // Both directions work again, through the bulk port, with nothing stale mixed in.
    const before = await settledTransfers();
    const data = randomBytes(16 * MiB);
    const up = await upload('/var/tmp/after-abort.bin', data);
    expect(up.status, up.text).toBe(200);
    const down = await download('/var/tmp/after-abort.bin');
    expect(down.sha256).toBe(sha256(data));
    await expectTransfers(before + 2);

    expect((await sh('ls /var/tmp | grep -c aborted; true')).trim()).toBe('0');
    expect(await guestLeftovers()).toBe(baseline);
    await eventually(() => (daemonFdCount() <= daemonFds ? true : undefined), 10_000, 'the daemon to close what the transfers opened');
  }, 300_000);
});
