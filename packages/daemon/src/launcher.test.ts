import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { Readable } from 'node:stream';
import {
  capDetachedLog,
  filterThrough,
  isProcessAlive,
  LaunchError,
  MAX_LINE_CHARS,
  runCommand,
  spawnDetached,
  tailOfFile,
  terminateGroup,
  waitForExit,
} from './launcher.js';

describe('launcher', () => {
  it('returns the output of a successful command', async () => {
    const { stdout, stderr } = await runCommand('sh', ['-c', 'echo out; echo err >&2'], { input: undefined });
    expect(stdout).toBe('out\n');
    expect(stderr).toBe('err\n');
  });

  it('quotes the last output lines when a command fails', async () => {
    const err = await runCommand('sh', ['-c', 'for i in $(seq 1 100); do echo line$i; done; exit 3']).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(LaunchError);
    const launch = err as LaunchError;
    expect(launch.exitCode).toBe(3);
    expect(launch.message).toMatch(/^sh exited with code 3/);
    expect(launch.message).toContain('line100');
    expect(launch.message).not.toContain('line1\n');
  });

  it('says "Failed to launch" for a missing program', async () => {
    await expect(runCommand('/no/such/program', [])).rejects.toThrow(/Failed to launch program/);
  });

  it('kills the whole process group on timeout', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'launcher-'));
    const pidFile = path.join(dir, 'grandchild');
    const started = Date.now();
    await expect(runCommand('sh', ['-c', `sleep 30 & echo $! > ${pidFile}; wait`], { timeoutMs: 300 })).rejects.toThrow(/timed out/);
    expect(Date.now() - started).toBeLessThan(10_000);
    const grandchild = Number(fs.readFileSync(pidFile, 'utf8'));
    expect(await waitForExit(grandchild, 5000)).toBe(true);
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('starts detached children that it can find and stop again', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'launcher-'));
    const log = path.join(dir, 'child.log');
    const pid = await spawnDetached('sh', ['-c', 'echo started; exec sleep 30'], { logFile: log });
    expect(isProcessAlive(pid)).toBe(true);
    await new Promise((r) => setTimeout(r, 200));
    expect(tailOfFile(log)).toContain('started');
    await terminateGroup(pid, 1000);
    expect(isProcessAlive(pid)).toBe(false);
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('streams through a filter command and reports its failure with its stderr', async () => {
    const compressed = await runCommand('sh', ['-c', 'printf hello | zstd -q -c | base64 -w0']);
    const out = filterThrough('zstd', ['-d', '-q', '-c'], Readable.from([Buffer.from(compressed.stdout, 'base64')]));
    const chunks: Buffer[] = [];
    for await (const chunk of out) chunks.push(chunk as Buffer);
    expect(Buffer.concat(chunks).toString()).toBe('hello');

    const bad = filterThrough('zstd', ['-d', '-q', '-c'], Readable.from([Buffer.from('not zstd at all')]));
    await expect(
      (async () => {
        for await (const _ of bad) void _;
      })(),
    ).rejects.toThrow(/zstd exited with code 1[\s\S]*zstd/);
  });

  it('cuts a line a child never ends: lines handed on and quoted in errors stay bounded', async () => {
    const lines: string[] = [];
    // 8 MiB without a newline, then a failure.
    const err = await runCommand('sh', ['-c', 'head -c 8388608 /dev/zero | tr "\\0" x; exit 4'], {
      onLine: (line) => lines.push(line),
    }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(LaunchError);
    expect(Math.max(...lines.map((l) => l.length))).toBeLessThanOrEqual(MAX_LINE_CHARS);
    expect(lines.join('').length).toBe(8 * 1024 * 1024);
    expect((err as LaunchError).message.length).toBeLessThan(41 * (MAX_LINE_CHARS + 64));
  });

  it('keeps the log of a detached child that never stops writing near its limit, the child writing on', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'launcher-'));
    const log = path.join(dir, 'qemu.log');
    const pid = await spawnDetached('sh', ['-c', 'n=0; while :; do n=$((n+1)); echo "warning $n: the guest did something odd"; done'], {
      logFile: log,
    });
    try {
      for (let i = 0; i < 10; i++) {
        await new Promise((r) => setTimeout(r, 100));
        capDetachedLog(log, 64 * 1024);
        // Between two checks the child may have written more, never an unbounded amount.
        expect(fs.statSync(log).size).toBeLessThan(64 * 1024 * 1024);
      }
      capDetachedLog(log, 64 * 1024);
      expect(fs.statSync(log).size).toBeLessThan(1024 * 1024);
      expect(fs.statSync(`${log}.1`).size).toBeLessThanOrEqual(32 * 1024);
      // The child's appends land at the new end of the file, not past a hole where the old end was.
      await new Promise((r) => setTimeout(r, 100));
      expect(fs.readFileSync(log, 'utf8').slice(0, 200)).toMatch(/^(?:[^\0]*\n)?warning \d+/);
    } finally {
      await terminateGroup(pid, 1000);
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});
