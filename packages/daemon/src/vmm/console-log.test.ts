import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { MAX_TIME_MARKS } from '../time-index.js';
import { ConsoleLog, readConsoleLog } from './console-log.js';

/** Serves `send` on a console socket, captures it with a ConsoleLog of `limit` bytes, returns the log file. */
async function capture(send: (socket: net.Socket) => Promise<void> | void, limit: number, settleMs: number, bytesPerSecond?: number) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'console-'));
  const socketPath = path.join(dir, 'console.sock');
  const logFile = path.join(dir, 'console.log');
  const server = net.createServer((socket) => {
    // The log detaches with data still unread, as a daemon stopping does: the sender sees a reset.
    socket.on('error', () => undefined);
    void send(socket);
  });
  await new Promise<void>((r) => server.listen(socketPath, r));
  const log = new ConsoleLog(socketPath, logFile, limit, bytesPerSecond);
  log.attach();
  await new Promise((r) => setTimeout(r, settleMs));
  log.detach();
  server.close();
  return { logFile, cleanup: () => fs.rmSync(dir, { recursive: true, force: true }) };
}

describe('console log', () => {
  it('keeps what a guest wrote last once its VM has ended, past the rate (finish, not detach)', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'console-'));
    const socketPath = path.join(dir, 'console.sock');
    const logFile = path.join(dir, 'console.log');
    // A boot that fails: a burst of output, the reason last, then QEMU is gone.
    const output = `${'x'.repeat(64 * 1024)}\ncapsule-init: error: the reason\n`;
    const server = net.createServer((socket) => {
      socket.on('error', () => undefined);
      socket.end(output);
    });
    await new Promise<void>((r) => server.listen(socketPath, r));
    const log = new ConsoleLog(socketPath, logFile, 1024 * 1024, 1024);
    log.attach();
    // By now the rate (1 KiB/s) holds the rest back unread.
    await new Promise((r) => setTimeout(r, 300));
    await log.finish(2000);
    server.close();
    expect(readConsoleLog(logFile).toString()).toBe(output);
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('keeps at most about twice its limit, newest bytes last', async () => {
    // Lines go out one at a time so that the log sees many small chunks and rotates.
    const { logFile, cleanup } = await capture(
      async (socket) => {
        for (let i = 0; i < 100; i++) {
          socket.write(`line ${String(i).padStart(3, '0')} ${'x'.repeat(90)}\n`);
          await new Promise((r) => setTimeout(r, 2));
        }
        socket.end();
      },
      2000,
      1500,
    );
    const total = fs.statSync(logFile).size + fs.statSync(`${logFile}.1`).size;
    expect(total).toBeLessThanOrEqual(4000);
    expect(readConsoleLog(logFile).toString().trim().split('\n').at(-1)).toMatch(/^line 099/);
    expect(readConsoleLog(logFile, 100).length).toBe(100);
    cleanup();
  });

  it('keeps only the newest bytes of a chunk larger than the limit', async () => {
    const { logFile, cleanup } = await capture((socket) => void socket.end(`${'a'.repeat(50_000)}THE END`), 1000, 300);
    const text = readConsoleLog(logFile).toString();
    expect(text.length).toBeLessThanOrEqual(2000);
    expect(text.endsWith('THE END')).toBe(true);
    cleanup();
  });

  it('reads a guest flooding its console no faster than the rate, leaving the rest with the sender', async () => {
    const flood = Buffer.alloc(16 * 1024 * 1024, 'y\n');
    let unsent = 0;
    const { logFile, cleanup } = await capture(
      (socket) => {
        socket.write(flood);
        // What the reader has not taken stays with the sender (QEMU holds the guest's UART).
        setTimeout(() => (unsent = socket.writableLength), 1400).unref();
      },
      64 * 1024 * 1024,
      1500,
      64 * 1024,
    );
    const logged = fs.statSync(logFile).size;
    // Two one-second windows of 64 KiB, each possibly overrun by one chunk (at most 64 KiB).
    expect(logged).toBeGreaterThan(0);
    expect(logged).toBeLessThanOrEqual(4 * 64 * 1024);
    expect(unsent).toBeGreaterThan(flood.length / 2);
    cleanup();
  });

  it('gives what was written since a moment, across a rotation, to the second', async () => {
    let between = 0;
    const { logFile, cleanup } = await capture(
      async (socket) => {
        socket.write(`before ${'b'.repeat(1500)}\n`);
        await new Promise((r) => setTimeout(r, 1100));
        between = Date.now();
        await new Promise((r) => setTimeout(r, 1100));
        // Past the 2000-byte limit: the live file is rotated, the marks with it.
        socket.write(`after one ${'a'.repeat(900)}\n`);
        await new Promise((r) => setTimeout(r, 50));
        socket.end('after two\n');
      },
      2000,
      2600,
    );
    expect(fs.existsSync(`${logFile}.1`)).toBe(true);
    const since = readConsoleLog(logFile, undefined, between).toString();
    expect(since.startsWith('after one')).toBe(true);
    expect(since.endsWith('after two\n')).toBe(true);
    expect(readConsoleLog(logFile).toString().startsWith('before')).toBe(true);
    expect(readConsoleLog(logFile, undefined, Date.now() + 1000).length).toBe(0);
    cleanup();
  });

  it('rotates early rather than keep more than MAX_TIME_MARKS marks (a guest trickling a byte a second)', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'console-'));
    const logFile = path.join(dir, 'console.log');
    // A previous daemon left the live file with a full index: the next write starts a new file.
    fs.writeFileSync(logFile, 'old\n');
    fs.writeFileSync(`${logFile}.times`, '0 1000\n'.repeat(MAX_TIME_MARKS));
    const server = net.createServer((socket) => socket.end('new\n'));
    const socketPath = path.join(dir, 'console.sock');
    await new Promise<void>((resolve) => server.listen(socketPath, resolve));
    const log = new ConsoleLog(socketPath, logFile);
    log.attach();
    await new Promise((r) => setTimeout(r, 300));
    log.detach();
    server.close();
    expect(fs.readFileSync(`${logFile}.1`, 'utf8')).toBe('old\n');
    expect(fs.readFileSync(logFile, 'utf8')).toBe('new\n');
    expect(fs.readFileSync(`${logFile}.times`, 'utf8').trim().split('\n')).toHaveLength(1);
    fs.rmSync(dir, { recursive: true, force: true });
  });
});
