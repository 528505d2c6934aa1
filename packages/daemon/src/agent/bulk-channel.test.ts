// The host end of the bulk port against a fake guest on a unix socket (QEMU's
// side of bulk.sock): exact byte counts down, frames up, stale bytes skipped,
// garbage, silence and early closes bounded, one transfer at a time.
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { PassThrough, Readable, Writable } from 'node:stream';
import { afterEach, describe, expect, it } from 'vitest';
import { BulkChannel } from './bulk-channel.js';

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'bulk-channel-'));
let server: net.Server | undefined;
const guestSockets = new Set<net.Socket>();
afterEach(async () => {
  // A paused guest socket never sees the host leave: close them all.
  for (const socket of guestSockets) socket.destroy();
  guestSockets.clear();
  await new Promise((resolve) => (server ? server.close(resolve) : resolve(undefined)));
  server = undefined;
});

/** A fake guest: `onConnection` gets each host connection. */
async function fakeGuest(onConnection: (socket: net.Socket) => void): Promise<string> {
  const socketPath = path.join(dir, `bulk-${Math.random().toString(36).slice(2)}.sock`);
  server = net.createServer((socket) => {
    socket.on('error', () => undefined);
    guestSockets.add(socket);
    onConnection(socket);
  });
  await new Promise<void>((resolve) => server!.listen(socketPath, resolve));
  return socketPath;
}

function collector(): { sink: Writable; bytes: () => Buffer } {
  const chunks: Buffer[] = [];
  const sink = new Writable({
    write(chunk: Buffer, _encoding, callback) {
      chunks.push(chunk);
      callback();
    },
  });
  return { sink, bytes: () => Buffer.concat(chunks) };
}

const limits = { uploads: true, idleTimeoutMs: 300 };

describe('BulkChannel', () => {
  it('downloads exactly the announced bytes after the header, skipping stale bytes and dropping extra ones', async () => {
    let transferId = '';
    const body = Buffer.alloc(300_000, 9);
    const socketPath = await fakeGuest((socket) => {
      setTimeout(
        () => socket.write(Buffer.concat([Buffer.alloc(70_000, 1), Buffer.from(`CAPSBULK${transferId}`), body, Buffer.alloc(1000, 2)])),
        20,
      );
    });
    const channel = new BulkChannel(socketPath, limits);
    const transfer = (await channel.open())!;
    transferId = transfer.id;
    const { sink, bytes } = collector();
    await transfer.download(sink, body.length);
    transfer.release();
    expect(bytes().equals(body)).toBe(true);
  });

  it('fails a download whose guest sends garbage without the header, past the stale-byte bound', async () => {
    const junk = Buffer.alloc(1024 * 1024, 0x41);
    const socketPath = await fakeGuest((socket) => {
      let sent = 0;
      const more = () => {
        while (sent < 20 * 1024 * 1024 && !socket.destroyed) {
          sent += junk.length;
          if (!socket.write(junk)) return void socket.once('drain', more);
        }
      };
      more();
    });
    const transfer = (await new BulkChannel(socketPath, limits).open())!;
    const { sink, bytes } = collector();
    await expect(transfer.download(sink, 10)).rejects.toThrow(/without the transfer's header/);
    transfer.release();
    expect(bytes().length).toBe(0);
  });

  it('fails a download whose guest goes silent or closes early', async () => {
    let transferId = '';
    const silent = await fakeGuest((socket) => setTimeout(() => socket.write(`CAPSBULK${transferId}abc`), 20));
    let transfer = (await new BulkChannel(silent, limits).open())!;
    transferId = transfer.id;
    await expect(transfer.download(collector().sink, 100)).rejects.toThrow(/no download bytes/);
    transfer.release();

    for (const socket of guestSockets) socket.destroy();
    await new Promise((resolve) => server!.close(resolve));
    const closing = await fakeGuest((socket) => setTimeout(() => socket.end(`CAPSBULK${transferId}abc`), 20));
    transfer = (await new BulkChannel(closing, limits).open())!;
    transferId = transfer.id;
    await expect(transfer.download(collector().sink, 100)).rejects.toThrow(/closed with 97 of 100 bytes to go/);
    transfer.release();
  });

  /** The frames of `chunks` as the guest's helper reads them, with the end frame if `end`. */
  const framed = (chunks: string[], end: boolean) =>
    Buffer.concat([
      ...chunks.flatMap((chunk) => [Buffer.from([0, 0, 0, chunk.length]), Buffer.from(chunk)]),
      ...(end ? [Buffer.alloc(4)] : []),
    ]);

  it('uploads the header and the body as frames, and the end frame only when the body ended well', async () => {
    const received: Buffer[] = [];
    const socketPath = await fakeGuest((socket) => socket.on('data', (chunk: Buffer) => received.push(chunk)));
    const channel = new BulkChannel(socketPath, limits);
    const transfer = (await channel.open())!;
    expect(await transfer.upload(Readable.from([Buffer.from('abc'), Buffer.from('def')]))).toBe(6);
    await new Promise((resolve) => setTimeout(resolve, 50));
    transfer.release();
    expect(Buffer.concat(received)).toEqual(Buffer.concat([Buffer.from(`CAPSBULK${transfer.id}`), framed(['abc', 'def'], true)]));

    // A body that fails (a malformed form, a client gone) never gets its end frame.
    received.length = 0;
    const again = (await channel.open())!;
    const failing = (async function* () {
      yield Buffer.from('abc');
      throw new Error('the form is malformed');
    })();
    await expect(again.upload(failing)).rejects.toThrow(/malformed/);
    await new Promise((resolve) => setTimeout(resolve, 50));
    again.release();
    expect(Buffer.concat(received)).toEqual(Buffer.concat([Buffer.from(`CAPSBULK${again.id}`), framed(['abc'], false)]));
  });

  it('fails an upload when the guest stops taking bytes', async () => {
    const stuck = await fakeGuest((socket) => socket.pause());
    const stalled = (await new BulkChannel(stuck, limits).open())!;
    const endless = new PassThrough();
    const upload = stalled.upload(endless);
    const chunk = Buffer.alloc(1024 * 1024);
    const feed = () => {
      while (endless.write(chunk));
    };
    feed();
    endless.on('drain', feed);
    await expect(upload).rejects.toThrow(/took no upload bytes/);
    endless.off('drain', feed);
    stalled.release();
  });

  it('runs one transfer at a time: another gets the port once the first let go of it', async () => {
    const socketPath = await fakeGuest(() => undefined);
    const channel = new BulkChannel(socketPath, limits);
    const first = (await channel.open())!;
    expect(await channel.open()).toBeUndefined();
    first.release();
    const second = await channel.open();
    expect(second).toBeDefined();
    expect(second!.id).not.toBe(first.id);
    second!.release();
  });

  it('gives no transfer when nothing listens on the socket', async () => {
    expect(await new BulkChannel(path.join(dir, 'missing.sock'), limits).open()).toBeUndefined();
  });
});
