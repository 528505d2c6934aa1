// `sandbox.files` and `sandbox.commands` beyond a foreground run, against a
// real capsuled and a real microVM: contents round-tripped with checksums,
// listing, watching, moves and removal, typed not-found errors, and background
// processes (reattached after their client went away, stdin, kill).
import { createHash, randomBytes } from 'node:crypto';
import { Readable } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CapsuleError, CommandExitError, InvalidArgumentError, NotFoundError, Sandbox, type FilesystemEvent } from '../src/index.js';
import { TestDaemon } from '../../daemon/test/fixture.js';

const MiB = 1024 * 1024;
const sha256 = (bytes: Uint8Array) => createHash('sha256').update(bytes).digest('hex');

/** Resolves once `predicate` holds for the events seen so far (no timers: the test's own timeout bounds it). */
function eventsUntil(predicate: (seen: FilesystemEvent[]) => boolean) {
  const seen: FilesystemEvent[] = [];
  let wake = () => {};
  const reached = new Promise<void>((resolve) => (wake = () => predicate(seen) && resolve()));
  return { seen, reached, onEvent: (event: FilesystemEvent) => void (seen.push(event), wake()) };
}

describe('sandbox.files and background commands against a real daemon (real QEMU microVM)', () => {
  const daemon = new TestDaemon();
  let sandbox: Sandbox;

  beforeAll(async () => {
    await daemon.start();
    sandbox = await Sandbox.create({ template: 'base', timeoutMs: 10 * 60_000, socketPath: daemon.socketPath });
  });
  afterAll(async () => {
    await sandbox?.kill().catch(() => undefined);
    sandbox?.client.close();
    await daemon.destroy();
  });

  it('writes and reads text, creating parent directories', async () => {
    const info = await sandbox.files.write('/tmp/sdk/deep/hello.txt', 'héllo wörld\n');
    expect(info).toEqual({ name: 'hello.txt', path: '/tmp/sdk/deep/hello.txt', type: 'file' });
    expect(await sandbox.files.read('/tmp/sdk/deep/hello.txt')).toBe('héllo wörld\n');
    expect((await sandbox.commands.run('cat /tmp/sdk/deep/hello.txt')).stdout).toBe('héllo wörld\n');
  });

  it('round-trips 8 MiB of bytes, a Node stream and a Blob with equal checksums', async () => {
    const bytes = randomBytes(8 * MiB);
    await sandbox.files.write('/tmp/sdk/bytes.bin', bytes);
    const back = await sandbox.files.read('/tmp/sdk/bytes.bin', { format: 'bytes' });
    expect(back.byteLength).toBe(bytes.byteLength);
    expect(sha256(back)).toBe(sha256(bytes));
    expect((await sandbox.commands.run('sha256sum /tmp/sdk/bytes.bin')).stdout.split(' ')[0]).toBe(sha256(bytes));

    // A generated stream: the SDK never sees the whole of it at once.
    const chunks = Array.from({ length: 128 }, () => randomBytes(64 * 1024));
    await sandbox.files.write('/tmp/sdk/stream.bin', Readable.from(chunks));
    const stream = await sandbox.files.read('/tmp/sdk/stream.bin', { format: 'stream' });
    const hash = createHash('sha256');
    let size = 0;
    for await (const chunk of stream as unknown as AsyncIterable<Uint8Array>) {
      hash.update(chunk);
      size += chunk.byteLength;
    }
    expect(size).toBe(8 * MiB);
    expect(hash.digest('hex')).toBe(sha256(Buffer.concat(chunks)));

    await sandbox.files.write('/tmp/sdk/blob.txt', new Blob(['from ', 'a blob']));
    expect(await sandbox.files.read('/tmp/sdk/blob.txt')).toBe('from a blob');
  });

  it('lists with depth, stats, checks existence and makes directories', async () => {
    await sandbox.files.write('/tmp/tree/a/b/c.txt', 'c');
    await sandbox.files.write('/tmp/tree/top.txt', 'top');
    expect((await sandbox.files.list('/tmp/tree')).map((e) => [e.name, e.type])).toEqual([
      ['a', 'dir'],
      ['top.txt', 'file'],
    ]);
    expect((await sandbox.files.list('/tmp/tree', { depth: 3 })).map((e) => e.path)).toEqual([
      '/tmp/tree/a',
      '/tmp/tree/a/b',
      '/tmp/tree/a/b/c.txt',
      '/tmp/tree/top.txt',
    ]);
    const info = await sandbox.files.getInfo('/tmp/tree/top.txt');
    expect(info).toMatchObject({ name: 'top.txt', type: 'file', size: 3, owner: 'root', permissions: '-rw-r--r--', isSymlink: false });
    expect(info.modifiedTime).toBeInstanceOf(Date);
    expect(await sandbox.files.exists('/tmp/tree/top.txt')).toBe(true);
    expect(await sandbox.files.exists('/tmp/tree/nope')).toBe(false);
    expect(await sandbox.files.makeDir('/tmp/tree/new/dir')).toBe(true);
    expect(await sandbox.files.makeDir('/tmp/tree/new/dir')).toBe(false);
  });

  it('writes as another user, who then owns the file', async () => {
    const written = await sandbox.files.write('notes.txt', 'mine', { user: 'user' });
    expect(written.path).toBe('/home/user/notes.txt');
    expect(await sandbox.files.getInfo('~/notes.txt', { user: 'user' })).toMatchObject({ owner: 'user', group: 'user' });
    await expect(sandbox.files.read('/etc/hostname', { user: 'nobody-here' })).rejects.toMatchObject({ code: 'unauthenticated' });
  });

  it('renames and removes', async () => {
    await sandbox.files.write('/tmp/mv/from.txt', 'moving');
    const moved = await sandbox.files.rename('/tmp/mv/from.txt', '/tmp/mv/sub/to.txt');
    expect(moved).toMatchObject({ path: '/tmp/mv/sub/to.txt', type: 'file' });
    expect(await sandbox.files.exists('/tmp/mv/from.txt')).toBe(false);
    await sandbox.files.remove('/tmp/mv');
    expect(await sandbox.files.exists('/tmp/mv/sub/to.txt')).toBe(false);
    await sandbox.files.remove('/tmp/mv'); // already gone: not an error
  });

  it('reports missing paths as NotFoundError and a directory read as InvalidArgumentError', async () => {
    await expect(sandbox.files.read('/no/such/file')).rejects.toBeInstanceOf(NotFoundError);
    await expect(sandbox.files.getInfo('/no/such/file')).rejects.toBeInstanceOf(NotFoundError);
    await expect(sandbox.files.list('/no/such/dir')).rejects.toBeInstanceOf(NotFoundError);
    await expect(sandbox.files.rename('/no/such/file', '/tmp/x')).rejects.toBeInstanceOf(NotFoundError);
    await expect(sandbox.files.watchDir('/no/such/dir', () => {})).rejects.toBeInstanceOf(NotFoundError);
    await expect(sandbox.files.read('/tmp', { format: 'bytes' })).rejects.toBeInstanceOf(InvalidArgumentError);
    const missing = await sandbox.files.read('/no/such/file').catch((e: unknown) => e);
    expect(missing).toMatchObject({ code: 'not_found', message: expect.stringContaining('/no/such/file') });
  });

  it('rejects with the abort reason when the signal fires', async () => {
    const reason = new Error('caller gave up');
    await expect(sandbox.files.read('/etc/hostname', { signal: AbortSignal.abort(reason) })).rejects.toBe(reason);
    await expect(sandbox.commands.list({ signal: AbortSignal.abort(reason) })).rejects.toBe(reason);
  });

  it('watches a directory, recursively, until stopped', async () => {
    await sandbox.files.makeDir('/tmp/watched/sub');
    const flat = eventsUntil((seen) => seen.some((e) => e.name === 'one.txt' && e.type === 'create'));
    const deep = eventsUntil((seen) => seen.some((e) => e.name === 'sub/two.txt'));
    let exited: unknown = 'not yet';
    const flatWatch = await sandbox.files.watchDir('/tmp/watched', flat.onEvent, { onExit: (error) => void (exited = error) });
    const deepWatch = await sandbox.files.watchDir('/tmp/watched', deep.onEvent, { recursive: true });
    await sandbox.files.write('/tmp/watched/sub/two.txt', '2');
    await sandbox.files.write('/tmp/watched/one.txt', '1');
    await Promise.all([flat.reached, deep.reached]);
    await flatWatch.stop();
    await deepWatch.stop();
    expect(exited).toBeUndefined();
    expect(flat.seen.some((e) => e.name.startsWith('sub/'))).toBe(false);
  });

  it('runs a background command, waits for it and lists it while it runs', async () => {
    const lines: string[] = [];
    const handle = await sandbox.commands.run('read go; echo "started $go"; echo oops >&2; exit 3', {
      background: true,
      onStdout: (l) => void lines.push(l),
    });
    expect(handle.pid).toBeGreaterThan(0);
    expect((await sandbox.commands.list()).map((p) => p.pid)).toContain(handle.pid);
    await handle.sendStdin('now\n');
    const failure = await handle.wait().catch((e: unknown) => e);
    expect(failure).toBeInstanceOf(CommandExitError);
    expect(failure).toMatchObject({ exitCode: 3, stdout: 'started now\n', stderr: 'oops\n' });
    expect(lines.join('')).toBe('started now\n');
    expect(handle.exitCode).toBe(3);
  });

  it('sends stdin and closes it', async () => {
    const handle = await sandbox.commands.run(['sh', '-c', 'tr a-z A-Z'], { background: true });
    await handle.sendStdin('shout\n');
    await handle.closeStdin();
    expect((await handle.wait()).stdout).toBe('SHOUT\n');
    const piped = await sandbox.commands.run('wc -c', { background: true, stdin: '12345' });
    expect((await piped.wait()).stdout.trim()).toBe('5');
  });

  it('kills a background command, and reports unknown pids', async () => {
    const handle = await sandbox.commands.run(['sleep', '600'], { background: true, timeoutMs: 0 });
    expect(await sandbox.commands.kill(handle.pid, { killSignal: 'SIGTERM' })).toBe(true);
    await expect(handle.wait()).rejects.toMatchObject({ signal: 'SIGTERM', exitCode: 143 });
    expect(await sandbox.commands.kill(handle.pid)).toBe(false);
    await expect(sandbox.commands.connect(999_999)).rejects.toBeInstanceOf(NotFoundError);
    await expect(sandbox.commands.sendStdin(999_999, 'x')).rejects.toBeInstanceOf(NotFoundError);
  });

  it('reconnects to a background command after the client that started it went away', async () => {
    const first = await Sandbox.connect(sandbox.id, { socketPath: daemon.socketPath });
    const started = await first.commands.run('read line; echo "got:$line"', { background: true, timeoutMs: 0 });
    first.client.close(); // its connections are gone; the process is not
    const again = await Sandbox.connect(sandbox.id, { socketPath: daemon.socketPath });
    try {
      expect((await again.commands.list()).map((p) => p.pid)).toContain(started.pid);
      const seen: string[] = [];
      const handle = await again.commands.connect(started.pid, { onStdout: (s) => void seen.push(s) });
      await again.commands.sendStdin(started.pid, 'hello\n');
      expect((await handle.wait()).stdout).toBe('got:hello\n');
      expect(seen.join('')).toBe('got:hello\n');
    } finally {
      again.client.close();
    }
  });

  it('disconnects a handle without ending its command', async () => {
    const handle = await sandbox.commands.run(['sleep', '600'], { background: true, timeoutMs: 0 });
    handle.disconnect();
    await expect(handle.wait()).rejects.toMatchObject({ code: 'disconnected' });
    expect((await sandbox.commands.list()).map((p) => p.pid)).toContain(handle.pid);
    expect(await sandbox.commands.kill(handle.pid)).toBe(true);
  });

  it('reports a sandbox that is gone as such, not as a missing file', async () => {
    const other = await Sandbox.create({ template: 'base', socketPath: daemon.socketPath });
    await other.kill();
    const error = await other.files.exists('/etc/hostname').catch((e: unknown) => e);
    expect(error).toBeInstanceOf(CapsuleError);
    expect((error as CapsuleError).code).toMatch(/sandbox_not_found|sandbox_not_running/);
    await expect(other.files.getInfo('/etc/hostname')).rejects.toMatchObject({ code: (error as CapsuleError).code });
    await expect(other.commands.kill(1)).rejects.toMatchObject({ code: (error as CapsuleError).code });
    await expect(other.commands.run('true', { background: true })).rejects.toMatchObject({
      code: expect.stringMatching(/sandbox_not_found|sandbox_not_running/),
    });
    other.client.close();
  });
});
