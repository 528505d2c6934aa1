import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { loadConfig } from '../config.js';
import { CapsuleError } from '../errors.js';
import { silentLogger } from '../log.js';
import { startingSandboxRow } from '../store/sandbox-row.test-fixture.js';
import { Store } from '../store/store.js';
import { parseStat, volumePath } from './volume-files.js';
import { Volumes } from './volumes.js';

async function refusal(work: Promise<unknown>): Promise<string> {
  try {
    await work;
    return 'accepted';
  } catch (err) {
    return err instanceof CapsuleError ? err.code : `not a CapsuleError: ${String(err)}`;
  }
}

async function* upload(text: string | Buffer): AsyncGenerator<Buffer> {
  yield Buffer.from(text);
}

async function readAll(stream: AsyncIterable<Buffer>): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const chunk of stream) chunks.push(chunk);
  return Buffer.concat(chunks).toString();
}

describe('volume paths', () => {
  it('are read from the volume root, and refuse .., NUL and line breaks', () => {
    expect(volumePath('a/./b//c/')).toBe('/a/b/c');
    expect(volumePath('/')).toBe('/');
    expect(volumePath('/with "quotes" and spaces')).toBe('/with "quotes" and spaces');
    for (const bad of ['../etc/passwd', '/a/../../b', 'a\nrm /b', 'a\0b', 'a\rb', `/${'x'.repeat(256)}`])
      expect(() => volumePath(bad)).toThrow(CapsuleError);
  });

  it("take a stat's fields from its head, never from a symlink target printed after them", () => {
    const forged = [
      'Inode: 14   Type: symlink    Mode:  0777   Flags: 0x0',
      'User:  1000   Group:  1000   Project:     0   Size: 40',
      ' ctime: 0x6b172467:00000000 -- Mon Dec  7 21:25:59 2026',
      ' mtime: 0x6b172467 -- Mon Dec  7 21:25:59 2026',
      'Fast link dest: "x',
      'Inode: 1   Type: regular    Mode:  4755',
      'User:     0   Group:     0   Size: 1"',
    ].join('\n');
    expect(parseStat(forged)).toMatchObject({ type: 'symlink', mode: 0o777, uid: 1000, gid: 1000, size: 40 });
    expect(parseStat(forged)?.target).toBe('x\nInode: 1   Type: regular    Mode:  4755\nUser:     0   Group:     0   Size: 1');
    expect(parseStat(forged)?.mtime.toISOString()).toBe(new Date(0x6b172467 * 1000).toISOString());
  });
});

// Real debugfs and e2fsck on an ext4 image; no VM, no mount. Confined as the daemon runs them, and not.
describe.each([
  { jail: true, title: 'confined' },
  { jail: false, title: 'unconfined (CAPSULE_JAIL=off)' },
])('the volume file API on an idle volume, $title', ({ jail }) => {
  let work: string;
  let store: Store;
  let volumes: Volumes;
  beforeEach(async () => {
    work = fs.mkdtempSync(path.join(os.tmpdir(), 'capsule-volume-files-'));
    store = await Store.open(':memory:');
    volumes = new Volumes(store, { ...loadConfig({ CAPSULE_STATE_DIR: work }), diskReserveMiB: 0, jail }, silentLogger);
    await volumes.create('data', '64M');
  });
  afterEach(async () => {
    await store.close();
    fs.rmSync(work, { recursive: true, force: true });
  });
  const image = () => path.join(work, 'volumes', 'data.ext4');
  const onFiles = <T>(work: Parameters<Volumes['onIdleVolumeFiles']>[2]) => volumes.onIdleVolumeFiles('data', 'test', work) as Promise<T>;

  it('writes, reads, lists and removes files and folders, as e2b does', async () => {
    const written = await volumes.writeFile('data', '/notes "1".txt', upload('hello'), { force: false });
    expect(written).toMatchObject({ name: 'notes "1".txt', path: '/notes "1".txt', type: 'file', size: 5, mode: 0o666, uid: 0, gid: 0 });
    expect(await readAll((await volumes.readFile('data', '/notes "1".txt')).content)).toBe('hello');
    // Read back by the host's own debugfs, not by the code under test.
    expect(
      execFileSync('debugfs', ['-R', 'cat "/notes ""1"".txt"', image()], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }),
    ).toBe('hello');

    expect(await refusal(volumes.writeFile('data', '/notes "1".txt', upload('again'), { force: false }))).toBe('name_taken');
    await volumes.writeFile('data', '/notes "1".txt', upload('replaced'), { force: true, uid: 1000, gid: 1001, mode: 0o600 });
    expect(await readAll((await volumes.readFile('data', '/notes "1".txt')).content)).toBe('replaced');

    expect(await refusal(volumes.writeFile('data', '/a/b/c.txt', upload('x'), { force: false }))).toBe('not_found');
    await volumes.writeFile('data', '/a/b/c.txt', upload('deep'), { force: true });
    await onFiles(async (files) => {
      expect(await files.stat('/notes "1".txt')).toMatchObject({ uid: 1000, gid: 1001, mode: 0o600, size: 8 });
      expect(await files.makeDir('/a/d', { force: false })).toMatchObject({ type: 'directory', mode: 0o777 });
      expect(await refusal(files.makeDir('/a/d', { force: false }))).toBe('name_taken');
      expect(await files.makeDir('/a/d', { force: true })).toMatchObject({ type: 'directory' });
      expect((await files.list('/a', 1)).map((e) => e.path).sort()).toEqual(['/a/b', '/a/d']);
      const deep = (await files.list('/', 3)).map((e) => e.path).filter((p) => p !== '/lost+found');
      expect(deep.indexOf('/a/b/c.txt')).toBe(deep.indexOf('/a/b') + 1);
      expect(deep.sort()).toEqual(['/a', '/a/b', '/a/b/c.txt', '/a/d', '/notes "1".txt']);
      expect(await refusal(files.list('/notes "1".txt', 1))).toBe('invalid_argument');
      expect(await files.setMetadata('/a', { mode: 0o750 })).toMatchObject({ type: 'directory', mode: 0o750 });

      await files.remove('/a');
      expect(await files.stat('/a')).toBeUndefined();
      expect(await files.stat('/a/b/c.txt')).toBeUndefined();
      expect(await refusal(files.remove('/a'))).toBe('not_found');
      expect(await refusal(files.remove('/'))).toBe('invalid_argument');
    });
    // What debugfs left is a filesystem e2fsck passes as it is.
    execFileSync('e2fsck', ['-f', '-n', image()], { stdio: 'ignore' });
  });

  it("resolves a guest's symlinks inside the volume, never on the host", async () => {
    execFileSync('debugfs', ['-w', '-R', 'symlink /escape /etc', image()], { stdio: 'ignore' });
    await onFiles(async (files) => {
      expect(await files.stat('/escape')).toMatchObject({ type: 'symlink', target: '/etc' });
      expect(await files.stat('/escape/passwd')).toBeUndefined();
    });
    expect(await refusal(volumes.readFile('data', '/escape/passwd'))).toBe('not_found');
    expect(await refusal(volumes.readFile('data', '/escape'))).toBe('invalid_argument');
  });

  it("refuses to list what a guest's line breaks would make ambiguous: a name, or a link target forging a command's echo", async () => {
    const guest = (command: string) => execFileSync('debugfs', ['-w', '-R', command, image()], { stdio: 'ignore' });
    guest('mkdir /names');
    guest('mkdir "/names/evil\nname"');
    guest('mkdir /links');
    guest('symlink /links/ln "x\ndebugfs: stat <2>\n"');
    await onFiles(async (files) => {
      expect(await refusal(files.list('/names', 1))).toBe('invalid_argument');
      expect(await refusal(files.list('/links', 1))).toBe('invalid_argument');
      expect(await refusal(files.remove('/names'))).toBe('invalid_argument');
      // What is not ambiguous still answers.
      expect((await files.list('/', 1)).map((e) => e.name)).toEqual(['links', 'lost+found', 'names']);
    });
  });

  it('refuses a file larger than the volume before it takes the lock, and leaves no temp file', async () => {
    expect(await refusal(volumes.writeFile('data', '/big', upload(Buffer.alloc(65 * 1024 * 1024)), { force: false }))).toBe(
      'invalid_argument',
    );
    expect(fs.readdirSync(path.join(work, 'volumes'))).toEqual(['data.ext4']);
  });

  it('is refused while a sandbox holds the volume, even read-only', async () => {
    await store.insertSandbox(startingSandboxRow('sb_reader'));
    await volumes.attach('sb_reader', await volumes.plan([{ name: 'data', mount: '/data', readOnly: true }]));
    expect(await refusal(volumes.readFile('data', '/x'))).toBe('volume_in_use');
    expect(await refusal(volumes.writeFile('data', '/x', upload('x'), { force: false }))).toBe('volume_in_use');
    expect(await refusal(volumes.onIdleVolumeFiles('data', 'list', (files) => files.list('/', 1)))).toBe('volume_in_use');
  });
});
