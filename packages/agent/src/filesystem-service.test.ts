// filesystem.Filesystem as a client sees it: the bundled agent on a unix
// socket, a Connect client, temp directories.
import {
  chmodSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  realpathSync,
  rmSync,
  statSync,
  symlinkSync,
  writeFileSync,
  appendFileSync,
  renameSync,
  existsSync,
} from 'node:fs';
import { tmpdir, userInfo } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { Code, ConnectError, createClient, type Client } from '@connectrpc/connect';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { EventType, FileType, Filesystem, type FilesystemEvent } from '@capsule/protocol/agent';
import { useAgentForFile, type RunningAgent } from '../test/agent-fixture.js';

let agent: RunningAgent;
let fs: Client<typeof Filesystem>;
const root = realpathSync(mkdtempSync(join(tmpdir(), 'capsule-fs-test-')));
const me = userInfo();

useAgentForFile((started) => {
  agent = started;
  fs = createClient(Filesystem, agent.connectTransport());
});

afterAll(() => {
  rmSync(root, { recursive: true, force: true });
});

async function codeOf(promise: Promise<unknown>): Promise<{ code: Code | undefined; message: string }> {
  try {
    await promise;
  } catch (error) {
    if (error instanceof ConnectError) return { code: error.code, message: error.rawMessage };
    throw error;
  }
  return { code: undefined, message: '' };
}

const basic = (user: string) => ({ authorization: `Basic ${Buffer.from(`${user}:`).toString('base64')}` });

describe('Stat', () => {
  it('describes files, directories and symlinks like envd', async () => {
    const dir = join(root, 'stat');
    mkdirSync(dir);
    writeFileSync(join(dir, 'file.txt'), 'hello');
    chmodSync(join(dir, 'file.txt'), 0o640);
    symlinkSync(join(dir, 'file.txt'), join(dir, 'link'));
    symlinkSync(join(dir, 'missing'), join(dir, 'dangling'));

    const file = (await fs.stat({ path: join(dir, 'file.txt') })).entry!;
    expect(file).toMatchObject({
      name: 'file.txt',
      type: FileType.FILE,
      path: join(dir, 'file.txt'),
      size: 5n,
      mode: 0o640,
      permissions: '-rw-r-----',
      owner: me.username,
      isSymlink: false,
    });
    expect(file.symlinkTarget).toBeUndefined();
    const mtime = statSync(join(dir, 'file.txt')).mtimeMs;
    expect(Math.abs(Number(file.modifiedTime!.seconds) * 1000 + file.modifiedTime!.nanos / 1e6 - mtime)).toBeLessThan(1);

    const directory = (await fs.stat({ path: dir })).entry!;
    expect(directory).toMatchObject({ name: 'stat', type: FileType.DIRECTORY, permissions: expect.stringMatching(/^drwx/) });

    const link = (await fs.stat({ path: join(dir, 'link') })).entry!;
    expect(link).toMatchObject({
      name: 'link',
      type: FileType.FILE, // the target's type
      mode: 0o640, // the target's bits
      permissions: 'Lrwxrwxrwx',
      symlinkTarget: join(dir, 'file.txt'),
      isSymlink: true,
    });
    const dangling = (await fs.stat({ path: join(dir, 'dangling') })).entry!;
    expect(dangling).toMatchObject({ type: FileType.UNSPECIFIED, symlinkTarget: join(dir, 'dangling'), isSymlink: true });
  });

  it('answers NotFound for missing paths, Unauthenticated for unknown users', async () => {
    expect((await codeOf(fs.stat({ path: join(root, 'nope') }))).code).toBe(Code.NotFound);
    expect((await codeOf(fs.stat({ path: join(root, 'nope', 'deeper') }))).code).toBe(Code.NotFound);
    expect((await codeOf(fs.stat({ path: '/' }, { headers: basic('capsule-no-such-user') }))).code).toBe(Code.Unauthenticated);
    expect((await codeOf(fs.stat({ path: '~other/x' }))).code).toBe(Code.InvalidArgument);
  });

  it('resolves relative paths and ~ against the user home', async () => {
    const name = `capsule-fs-test-${process.pid}-${Date.now()}`;
    const inHome = join(realpathSync(me.homedir), name);
    mkdirSync(inHome);
    try {
      expect((await fs.stat({ path: name })).entry?.path).toBe(inHome);
      expect((await fs.stat({ path: `~/${name}` })).entry?.path).toBe(inHome);
    } finally {
      rmSync(inHome, { recursive: true, force: true });
    }
  });
});

describe('MakeDir, Move, Remove', () => {
  it('makes nested directories, then says AlreadyExists; a file in the way is InvalidArgument', async () => {
    const nested = join(root, 'made', 'a', 'b');
    const made = (await fs.makeDir({ path: nested })).entry!;
    expect(made).toMatchObject({ name: 'b', type: FileType.DIRECTORY, path: nested });
    expect(statSync(nested).isDirectory()).toBe(true);
    expect(statSync(nested).mode & 0o777).toBe(0o755);
    expect((await codeOf(fs.makeDir({ path: nested }))).code).toBe(Code.AlreadyExists);
    writeFileSync(join(root, 'made', 'file'), '');
    expect((await codeOf(fs.makeDir({ path: join(root, 'made', 'file') }))).code).toBe(Code.InvalidArgument);
  });

  it('moves into directories it creates, and says NotFound for a missing source', async () => {
    writeFileSync(join(root, 'to-move.txt'), 'moving');
    const destination = join(root, 'moved', 'deep', 'renamed.txt');
    const moved = (await fs.move({ source: join(root, 'to-move.txt'), destination })).entry!;
    expect(moved).toMatchObject({ name: 'renamed.txt', type: FileType.FILE, path: destination, size: 6n });
    expect(readFileSync(destination, 'utf8')).toBe('moving');
    expect(existsSync(join(root, 'to-move.txt'))).toBe(false);
    expect((await codeOf(fs.move({ source: join(root, 'to-move.txt'), destination }))).code).toBe(Code.NotFound);
  });

  it('removes files and whole trees, is quiet about missing paths, and refuses /', async () => {
    mkdirSync(join(root, 'doomed', 'sub'), { recursive: true });
    writeFileSync(join(root, 'doomed', 'sub', 'f'), 'x');
    writeFileSync(join(root, 'doomed-file'), 'x');
    await fs.remove({ path: join(root, 'doomed-file') });
    await fs.remove({ path: join(root, 'doomed') });
    expect(existsSync(join(root, 'doomed'))).toBe(false);
    expect(existsSync(join(root, 'doomed-file'))).toBe(false);
    await fs.remove({ path: join(root, 'doomed') }); // envd: RemoveAll of nothing is fine
    expect((await codeOf(fs.remove({ path: '/' }))).code).toBe(Code.InvalidArgument);
  });
});

describe('ListDir', () => {
  const tree = join(root, 'tree');
  beforeAll(() => {
    mkdirSync(join(tree, 'test-dir', 'sub-dir-1'), { recursive: true });
    mkdirSync(join(tree, 'test-dir', 'sub-dir-2'));
    writeFileSync(join(tree, 'test-dir', 'sub-dir-1', 'file.txt'), 'Hello, World!');
    const links = join(root, 'links');
    mkdirSync(join(links, 'real-dir'), { recursive: true });
    writeFileSync(join(links, 'real-dir', 'file.txt'), 'via symlink');
    writeFileSync(join(links, 'real-file.txt'), 'plain');
    symlinkSync(join(links, 'real-dir'), join(links, 'link-dir'));
    symlinkSync(join(links, 'real-file.txt'), join(links, 'link-file'));
    symlinkSync(join(links, 'cyclic'), join(links, 'cyclic'));
  });

  const paths = async (path: string, depth: number) => (await fs.listDir({ path, depth })).entries.map((entry) => entry.path).sort();

  it('lists to the requested depth (0 means 1)', async () => {
    expect(await paths(tree, 0)).toEqual([join(tree, 'test-dir')]);
    expect(await paths(tree, 1)).toEqual([join(tree, 'test-dir')]);
    expect(await paths(tree, 2)).toEqual([
      join(tree, 'test-dir'),
      join(tree, 'test-dir', 'sub-dir-1'),
      join(tree, 'test-dir', 'sub-dir-2'),
    ]);
    expect(await paths(tree, 3)).toEqual([
      join(tree, 'test-dir'),
      join(tree, 'test-dir', 'sub-dir-1'),
      join(tree, 'test-dir', 'sub-dir-1', 'file.txt'),
      join(tree, 'test-dir', 'sub-dir-2'),
    ]);
    const file = (await fs.listDir({ path: tree, depth: 3 })).entries.find((entry) => entry.name === 'file.txt');
    expect(file).toMatchObject({ type: FileType.FILE, size: 13n, permissions: '-rw-r--r--' });
  });

  it('follows a symlink given as the path, lists (never descends) symlinks inside', async () => {
    const links = join(root, 'links');
    expect(await paths(join(links, 'link-dir'), 1)).toEqual([join(links, 'link-dir', 'file.txt')]);
    expect(await paths(links, 3)).toEqual(
      ['cyclic', 'link-dir', 'link-file', 'real-dir', join('real-dir', 'file.txt'), 'real-file.txt'].map((name) => join(links, name)),
    );
    const linkDir = (await fs.listDir({ path: links })).entries.find((entry) => entry.name === 'link-dir');
    expect(linkDir).toMatchObject({ type: FileType.DIRECTORY, isSymlink: true, symlinkTarget: join(links, 'real-dir') });
    const notDir = await codeOf(fs.listDir({ path: join(links, 'link-file') }));
    expect(notDir.code).toBe(Code.InvalidArgument);
    expect(notDir.message).toContain('not a directory');
    const cyclic = await codeOf(fs.listDir({ path: join(links, 'cyclic') }));
    expect(cyclic.code).toBe(Code.FailedPrecondition);
    expect(cyclic.message).toContain('cyclic symlink');
    expect((await codeOf(fs.listDir({ path: join(root, 'no-such-dir') }))).code).toBe(Code.NotFound);
  });
});

/** Collects WatchDir events until `until` says enough (or times out). */
async function watchEvents(
  request: { path: string; recursive?: boolean; includeEntry?: boolean },
  act: () => Promise<void> | void,
  until: (events: FilesystemEvent[]) => boolean,
): Promise<FilesystemEvent[]> {
  const controller = new AbortController();
  const events: FilesystemEvent[] = [];
  const stream = fs.watchDir(request, { signal: controller.signal, headers: { 'keepalive-ping-interval': '1' } })[Symbol.asyncIterator]();
  const first = await stream.next();
  expect(first.value?.event.case).toBe('start');
  const timer = setTimeout(() => controller.abort(), 5000);
  try {
    await act();
    for (;;) {
      const next = await stream.next();
      if (next.done) break;
      if (next.value.event.case === 'filesystem') events.push(next.value.event.value);
      if (until(events)) break;
    }
  } catch (error) {
    if (!controller.signal.aborted) throw error;
  } finally {
    clearTimeout(timer);
    controller.abort();
  }
  return events;
}

const summary = (events: FilesystemEvent[]) => events.map((event) => `${EventType[event.type]} ${event.name}`);
const has = (events: FilesystemEvent[], type: EventType, name: string) =>
  events.some((event) => event.type === type && event.name === name);

describe('WatchDir', () => {
  it('reports create, write, rename and remove, and carries entries only where envd does', async () => {
    const dir = join(root, 'watch-flat');
    mkdirSync(dir);
    writeFileSync(join(dir, 'existing.txt'), 'old');
    const events = await watchEvents(
      { path: dir, includeEntry: true },
      async () => {
        writeFileSync(join(dir, 'new.txt'), 'hello');
        await sleep(50);
        appendFileSync(join(dir, 'new.txt'), ' world');
        await sleep(50);
        renameSync(join(dir, 'new.txt'), join(dir, 'renamed.txt'));
        await sleep(50);
        rmSync(join(dir, 'existing.txt'));
        await sleep(50);
        chmodSync(join(dir, 'renamed.txt'), 0o600);
      },
      (seen) => has(seen, EventType.CHMOD, 'renamed.txt'),
    );
    const lines = summary(events);
    expect(lines).toContain('CREATE new.txt');
    expect(lines).toContain('WRITE new.txt');
    expect(lines).toContain('RENAME new.txt');
    expect(lines).toContain('CREATE renamed.txt');
    expect(lines).toContain('REMOVE existing.txt');
    expect(lines).toContain('CHMOD renamed.txt');
    expect(lines.indexOf('CREATE new.txt')).toBeLessThan(lines.indexOf('RENAME new.txt'));
    const created = events.find((event) => event.type === EventType.CREATE && event.name === 'new.txt');
    expect(created?.entry).toMatchObject({ name: 'new.txt', type: FileType.FILE, path: join(dir, 'new.txt') });
    for (const event of events.filter((item) => item.type === EventType.REMOVE || item.type === EventType.RENAME)) {
      expect(event.entry).toBeUndefined();
    }
  });

  it('watches subdirectories when recursive, including ones created while watching', async () => {
    const dir = join(root, 'watch-deep');
    mkdirSync(join(dir, 'sub'), { recursive: true });
    const events = await watchEvents(
      { path: dir, recursive: true },
      async () => {
        writeFileSync(join(dir, 'sub', 'inner.txt'), 'a');
        await sleep(50);
        appendFileSync(join(dir, 'sub', 'inner.txt'), 'b');
        // Created faster than a watch can be added: found by the scan of the new directory.
        mkdirSync(join(dir, 'fresh', 'deeper'), { recursive: true });
        writeFileSync(join(dir, 'fresh', 'deeper', 'f.txt'), 'x');
        await sleep(100);
        writeFileSync(join(dir, 'fresh', 'deeper', 'later.txt'), 'y');
        await sleep(50);
        renameSync(join(dir, 'sub', 'inner.txt'), join(dir, 'fresh', 'moved.txt'));
        await sleep(50);
        rmSync(join(dir, 'fresh', 'deeper'), { recursive: true });
      },
      (seen) => has(seen, EventType.REMOVE, join('fresh', 'deeper')),
    );
    const lines = summary(events);
    expect(lines).toContain('CREATE sub/inner.txt');
    expect(lines).toContain('WRITE sub/inner.txt');
    expect(lines).toContain('CREATE fresh');
    expect(lines).toContain('CREATE fresh/deeper');
    expect(lines).toContain('CREATE fresh/deeper/f.txt');
    expect(lines).toContain('CREATE fresh/deeper/later.txt');
    expect(lines).toContain('RENAME sub/inner.txt');
    expect(lines).toContain('CREATE fresh/moved.txt');
    expect(lines).toContain('REMOVE fresh/deeper');
    // Each happened once, and a removed directory's own watch adds nothing.
    expect(lines.filter((line) => line === 'CREATE fresh/deeper/f.txt')).toHaveLength(1);
    expect(lines.some((line) => line.includes('deeper/deeper'))).toBe(false);
  });

  it('does not see into subdirectories unless recursive', async () => {
    const dir = join(root, 'watch-shallow');
    mkdirSync(join(dir, 'sub'), { recursive: true });
    const events = await watchEvents(
      { path: dir },
      async () => {
        writeFileSync(join(dir, 'sub', 'hidden.txt'), 'x');
        await sleep(100);
        writeFileSync(join(dir, 'visible.txt'), 'y');
      },
      (seen) => has(seen, EventType.CREATE, 'visible.txt'),
    );
    expect(summary(events).some((line) => line.includes('hidden'))).toBe(false);
  });

  it('reports the watched directory itself going away as "."', async () => {
    const dir = join(root, 'watch-gone');
    mkdirSync(dir);
    const events = await watchEvents(
      { path: dir },
      () => rmSync(dir, { recursive: true }),
      (seen) => has(seen, EventType.REMOVE, '.'),
    );
    expect(summary(events)).toEqual(['REMOVE .']);
  });

  it('refuses missing paths and files with envd codes', async () => {
    const collect = async (path: string) => {
      for await (const response of fs.watchDir({ path })) void response;
    };
    expect((await codeOf(collect(join(root, 'no-such-dir')))).code).toBe(Code.NotFound);
    writeFileSync(join(root, 'plain-file'), '');
    expect((await codeOf(collect(join(root, 'plain-file')))).code).toBe(Code.InvalidArgument);
  });
});

describe('CreateWatcher / GetWatcherEvents / RemoveWatcher', () => {
  it('buffers events between polls until removed', async () => {
    const dir = join(root, 'polled');
    mkdirSync(join(dir, 'sub'), { recursive: true });
    const { watcherId } = await fs.createWatcher({ path: dir, recursive: true, includeEntry: true });
    expect(watcherId).toMatch(/^w/);
    writeFileSync(join(dir, 'sub', 'a.txt'), 'a');
    writeFileSync(join(dir, 'b.txt'), 'b');
    const seen: FilesystemEvent[] = [];
    const deadline = Date.now() + 3000;
    while (!(has(seen, EventType.CREATE, 'sub/a.txt') && has(seen, EventType.CREATE, 'b.txt')) && Date.now() < deadline) {
      seen.push(...(await fs.getWatcherEvents({ watcherId })).events);
      await sleep(20);
    }
    expect(has(seen, EventType.CREATE, 'sub/a.txt')).toBe(true);
    expect(seen.find((event) => event.name === 'b.txt')?.entry?.path).toBe(join(dir, 'b.txt'));
    // Drained: the next poll starts empty.
    await sleep(50);
    expect((await fs.getWatcherEvents({ watcherId })).events.filter((event) => event.type === EventType.CREATE)).toEqual([]);
    await fs.removeWatcher({ watcherId });
    expect((await codeOf(fs.getWatcherEvents({ watcherId }))).code).toBe(Code.NotFound);
    expect((await codeOf(fs.removeWatcher({ watcherId }))).code).toBe(Code.NotFound);
    expect((await codeOf(fs.createWatcher({ path: join(root, 'no-such-dir') }))).code).toBe(Code.NotFound);
  });
});
