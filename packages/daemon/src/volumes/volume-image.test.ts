import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { loadConfig } from '../config.js';
import { freeDiskMiB } from '../disk-admission.js';
import { CapsuleError } from '../errors.js';
import { silentLogger } from '../log.js';
import { startingSandboxRow } from '../store/sandbox-row.test-fixture.js';
import { Store } from '../store/store.js';
import { Volumes } from './volumes.js';

const MIB = 1024 * 1024;

async function refusal(work: Promise<unknown>): Promise<string> {
  try {
    await work;
    return 'accepted';
  } catch (err) {
    return err instanceof CapsuleError ? `${err.code}: ${err.message}` : `not a CapsuleError: ${String(err)}`;
  }
}

async function* chunksOf(bytes: Buffer, size = 64 * 1024): AsyncGenerator<Buffer> {
  for (let at = 0; at < bytes.length; at += size) yield bytes.subarray(at, at + size);
}

async function readAll(stream: AsyncIterable<Buffer>): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of stream) chunks.push(chunk);
  return Buffer.concat(chunks);
}

// Real qemu-img, e2fsck and debugfs; no VM. Confined as the daemon runs them unless a test says otherwise.
describe.each([
  { jail: true, title: 'confined' },
  { jail: false, title: 'unconfined (CAPSULE_JAIL=off)' },
])('volume export and import, $title', ({ jail }) => {
  let work: string;
  let store: Store;
  let volumes: Volumes;
  beforeEach(async () => {
    work = fs.mkdtempSync(path.join(os.tmpdir(), 'capsule-volume-image-'));
    store = await Store.open(':memory:');
    volumes = new Volumes(store, { ...loadConfig({ CAPSULE_STATE_DIR: work }), diskReserveMiB: 0, jail }, silentLogger);
  });
  afterEach(async () => {
    await store.close();
    fs.rmSync(work, { recursive: true, force: true });
  });
  const file = (name: string) => path.join(work, 'volumes', `${name}.ext4`);
  /** The volumes folder holds the files of these volumes and nothing else (no half-made import). */
  const onlyVolumes = (...names: string[]) =>
    expect(fs.readdirSync(path.join(work, 'volumes')).sort()).toEqual(names.map((n) => `${n}.ext4`).sort());
  const put = (volume: string, name: string, text: string) => {
    const source = path.join(work, 'source');
    fs.writeFileSync(source, text);
    execFileSync('debugfs', ['-w', '-R', `write ${source} ${name}`, file(volume)], { stdio: 'ignore' });
  };
  const read = (volume: string, name: string) =>
    execFileSync('debugfs', ['-R', `cat ${name}`, file(volume)], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] });
  const exported = async (name: string) => {
    const { bytes, image } = await volumes.export(name);
    const all = await readAll(image);
    expect(all.length).toBe(bytes);
    return all;
  };
  /** A qcow2 made by qemu-img here, as an attacker could make it. */
  const crafted = (options: string[], size?: string) => {
    const out = path.join(work, 'crafted.qcow2');
    fs.rmSync(out, { force: true });
    execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', ...options, out, ...(size ? [size] : [])], { stdio: 'ignore' });
    return fs.readFileSync(out);
  };

  it('exports a compressed image that imports as the same filesystem, leaving no work file', async () => {
    await volumes.create('data', '128M');
    put('data', 'greeting', 'hello from the first volume\n');
    const image = await exported('data');
    expect(image.subarray(0, 4).toString('latin1')).toBe('QFI\xfb');
    expect(image.length).toBeLessThan(4 * MIB);
    const volume = await volumes.import('copy', chunksOf(image));
    expect(volume).toMatchObject({ name: 'copy', sizeBytes: 128 * MIB, attachments: [] });
    // Not byte for byte: the import's e2fsck -f stamps the superblock with the time of its check.
    expect(fs.statSync(file('copy')).size).toBe(fs.statSync(file('data')).size);
    expect(read('copy', 'greeting')).toBe('hello from the first volume\n');
    expect(volume.diskBytes).toBeLessThan(16 * MIB);
    onlyVolumes('data', 'copy');
    expect(await refusal(volumes.import('copy', chunksOf(image)))).toMatch(/^name_taken/);
  });

  it('refuses a truncated image, and leaves nothing behind', async () => {
    await volumes.create('data', '64M');
    put('data', 'greeting', 'x'.repeat(200_000));
    const image = await exported('data');
    expect(await refusal(volumes.import('cut', chunksOf(image.subarray(0, Math.floor(image.length / 2)))))).toMatch(
      /^invalid_argument: not a volume image/,
    );
    expect(await refusal(volumes.import('cut', chunksOf(image.subarray(0, 20))))).toMatch(/^invalid_argument: not a volume image/);
    onlyVolumes('data');
    expect(await refusal(volumes.describe('cut'))).toMatch(/^volume_not_found/);
  });

  it('refuses another format: a raw disk, random bytes, a qcow2 holding no ext4', async () => {
    await volumes.create('data', '64M');
    expect(await refusal(volumes.import('raw', chunksOf(fs.readFileSync(file('data')))))).toMatch(/does not start as a qcow2 image/);
    expect(await refusal(volumes.import('noise', chunksOf(Buffer.from('QFI\xfb and then nothing like a header', 'latin1'))))).toMatch(
      /^invalid_argument: not a volume image/,
    );
    expect(await refusal(volumes.import('empty', chunksOf(crafted([], String(64 * MIB)))))).toMatch(/no ext4 filesystem/);
    onlyVolumes('data');
  });

  it('refuses a qcow2 whose backing file or data file is a host file, never copying that file', async () => {
    // The host file is another volume: an import that followed it would hand its data to whoever imports.
    await volumes.create('secret', '64M');
    put('secret', 'password', 'hunter2\n');
    const viaBacking = crafted(['-F', 'raw', '-b', file('secret')]);
    expect(await refusal(volumes.import('stolen', chunksOf(viaBacking)))).toMatch(/has a backing file/);
    // (qemu-img create makes the data file afresh, so it is pointed at a file of its own.)
    const viaDataFile = crafted(['-o', `data_file=${path.join(work, 'host-file')},data_file_raw=on`], String(64 * MIB));
    expect(await refusal(volumes.import('stolen', chunksOf(viaDataFile)))).toMatch(/keeps its data in another file/);
    expect(read('secret', 'password')).toBe('hunter2\n');
    onlyVolumes('secret');
  });

  it('refuses an image larger than a volume may be, and an upload larger than its header allows, before storing it', async () => {
    expect(await refusal(volumes.import('huge', chunksOf(crafted([], '5T'))))).toMatch(/no volume size/);
    expect(await refusal(volumes.import('odd', chunksOf(crafted([], String(64 * MIB + 512)))))).toMatch(/no volume size/);
    // A header claiming 64 MiB, then far more bytes than such an image can hold: refused as they arrive.
    const header = crafted([], String(64 * MIB));
    // (It ends at 1 GiB, so that a daemon that let it through would not fill the test host's disk.)
    let sent = 0;
    async function* oversized(): AsyncGenerator<Buffer> {
      yield header;
      const junk = Buffer.alloc(MIB, 1);
      for (; sent < 1024 * MIB; sent += junk.length) yield junk;
    }
    expect(await refusal(volumes.import('bomb', oversized()))).toMatch(/larger than a qcow2 image of its size can be/);
    expect(sent).toBeLessThan(200 * MIB);
    onlyVolumes();
  });

  it('stops unpacking an image whose data would eat into the disk reserve, and leaves nothing behind', async () => {
    // 512 MiB of one byte repeated, written as compressed clusters: under 1 MiB of qcow2.
    const bombFile = path.join(work, 'bomb.qcow2');
    execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', bombFile, '512M']);
    execFileSync('qemu-io', ['-f', 'qcow2', '-c', 'write -c -P 1 0 512M', bombFile], { stdio: 'ignore' });
    const bomb = fs.readFileSync(bombFile);
    fs.rmSync(bombFile);
    expect(bomb.length).toBeLessThan(MIB);
    // A reserve 64 MiB below the free disk now: the upload fits, its data does not.
    const reserveMiB = freeDiskMiB(work) - 64;
    const reserving = new Volumes(store, { ...loadConfig({ CAPSULE_STATE_DIR: work }), diskReserveMiB: reserveMiB, jail }, silentLogger);
    expect(await refusal(reserving.import('bomb', chunksOf(bomb)))).toMatch(/^insufficient_storage: .* while unpacking the image/);
    onlyVolumes();
  });

  it('refuses to export while a sandbox writes the volume (a reader may hold it), and a missing volume', async () => {
    await volumes.create('data', '64M');
    await store.insertSandbox(startingSandboxRow('sb_writer'));
    await volumes.attach('sb_writer', await volumes.plan([{ name: 'data', mount: '/data' }]));
    expect(await refusal(volumes.export('data'))).toMatch(/^volume_in_use: cannot export volume "data".*sb_writer/);
    await store.transition('sb_writer', 'killed', 'user');
    await store.insertSandbox(startingSandboxRow('sb_reader'));
    await volumes.attach('sb_reader', await volumes.plan([{ name: 'data', mount: '/data', readOnly: true }]));
    expect((await exported('data')).length).toBeGreaterThan(0);
    expect(await refusal(volumes.export('nope'))).toMatch(/^volume_not_found/);
    onlyVolumes('data');
  });
});
