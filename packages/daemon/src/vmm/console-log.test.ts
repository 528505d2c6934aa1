import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { ConsoleLog, readConsoleLog } from './console-log.js';

describe('console log', () => {
  it('keeps at most about twice its limit, newest bytes last', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'console-'));
    const socketPath = path.join(dir, 'console.sock');
    const logFile = path.join(dir, 'console.log');
    // Lines go out one at a time so that the log sees many small chunks and rotates.
    const server = net.createServer(async (socket) => {
      for (let i = 0; i < 100; i++) {
        socket.write(`line ${String(i).padStart(3, '0')} ${'x'.repeat(90)}\n`);
        await new Promise((r) => setTimeout(r, 2));
      }
      socket.end();
    });
    await new Promise<void>((r) => server.listen(socketPath, r));
    const log = new ConsoleLog(socketPath, logFile, 2000);
    log.attach();
    await new Promise((r) => setTimeout(r, 1500));
    log.detach();
    server.close();
    const total = fs.statSync(logFile).size + fs.statSync(`${logFile}.1`).size;
    expect(total).toBeLessThanOrEqual(4000);
    const text = readConsoleLog(logFile).toString();
    expect(text.trim().split('\n').at(-1)).toMatch(/^line 099/);
    expect(readConsoleLog(logFile, 100).length).toBe(100);
    fs.rmSync(dir, { recursive: true, force: true });
  });
});

describe('console log, one oversized chunk', () => {
  it('keeps only the newest bytes of a chunk larger than the limit', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'console-'));
    const socketPath = path.join(dir, 'console.sock');
    const logFile = path.join(dir, 'console.log');
    const server = net.createServer((socket) => socket.end(`${'a'.repeat(50_000)}THE END`));
    await new Promise<void>((r) => server.listen(socketPath, r));
    const log = new ConsoleLog(socketPath, logFile, 1000);
    log.attach();
    await new Promise((r) => setTimeout(r, 300));
    log.detach();
    server.close();
    const text = readConsoleLog(logFile).toString();
    expect(text.length).toBeLessThanOrEqual(2000);
    expect(text.endsWith('THE END')).toBe(true);
    fs.rmSync(dir, { recursive: true, force: true });
  });
});
