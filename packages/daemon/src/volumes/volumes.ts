// Volumes: named ext4 disks that outlive sandboxes, one sparse file each under
// <stateDir>/volumes, made and grown with e2fsprogs (no mount, no root needed),
// and which sandbox holds which. One writer or any number of readers: every
// change of who holds what goes through one lock, so two creates never both
// win a volume. It never starts a VM, and never runs a tool that parses a
// guest-written filesystem as root (confined.ts).
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import type { Readable } from 'node:stream';
import type { Volume, VolumeMountRequest, VolumeSnapshot } from '@capsule/protocol';
import type { DaemonConfig } from '../config.js';
import { assertDiskRoom } from '../disk-admission.js';
import { CapsuleError } from '../errors.js';
import { LaunchError, runCommand } from '../launcher.js';
import type { Logger } from '../log.js';
import type { Store } from '../store/store.js';
import {
  deleteVolume,
  deleteVolumeSnapshot,
  getVolume,
  getVolumeSnapshot,
  insertSandboxVolumes,
  insertVolume,
  insertVolumeSnapshot,
  listVolumes,
  listVolumeSnapshots,
  liveAttachments,
  setVolumeSize,
  type LiveAttachment,
  type VolumeRecord,
  type VolumeSnapshotRecord,
} from '../store/volumes.js';
import { Turns } from '../turns.js';
import { onVolumeFile } from './confined.js';
import { VolumeFiles, type NewEntryOptions, type VolumeEntry } from './volume-files.js';
import { checkVolumeImage, receiveVolumeImage, unpackVolumeImage, writeVolumeImage } from './volume-image.js';
import { assertVolumeName, checkVolumeMounts, volumeSizeMiB } from './volume-rules.js';

/** A volume a create is about to attach: the file QEMU gets and what the guest does with it. */
export interface PlannedAttachment {
  volume: string;
  file: string;
  /** The disk serial the guest finds it by. */
  serial: string;
  mount: string;
  readOnly: boolean;
}

const MIB = 1024 * 1024;

/** The holder that keeps `readOnly` access to a volume from being given: any holder keeps a writer out, a writer keeps everyone out. */
export function conflictingHolder<T extends { read_only: number }>(readOnly: boolean, holders: T[]): T | undefined {
  return holders.find((holder) => !readOnly || holder.read_only === 0);
}

function inUse(volume: string, holder: LiveAttachment, doing: string): CapsuleError {
  const who = holder.sandbox_name ? `${holder.sandbox_id} (${holder.sandbox_name})` : holder.sandbox_id;
  return new CapsuleError(
    'volume_in_use',
    `cannot ${doing}: volume "${volume}" is attached ${holder.read_only ? 'read-only' : 'read-write'} to sandbox ${who}, which is ${holder.sandbox_state}`,
    { hint: `remove that sandbox first (\`capsule rm ${holder.sandbox_id}\`); read-only attachments may share a volume no sandbox writes` },
  );
}

export class Volumes {
  /** One change at a time of which volumes exist and who holds them. */
  private readonly lock = new Turns(1);

  constructor(
    private readonly store: Store,
    private readonly config: DaemonConfig,
    private readonly log: Logger,
  ) {}

  private get dir(): string {
    return path.join(this.config.stateDir, 'volumes');
  }

  /** The volume's disk file; its name was checked (assertVolumeName) before it gets here. */
  private file(name: string): string {
    return path.join(this.dir, `${name}.ext4`);
  }

  /** A volume's snapshots' folder: `snapshots` is no volume's file name (those end in .ext4). */
  private snapshotDir(volume: string): string {
    return path.join(this.dir, 'snapshots', volume);
  }

  private async exclusively<T>(work: () => Promise<T>): Promise<T> {
    const release = await this.lock.take(new AbortController().signal);
    try {
      return await work();
    } finally {
      release();
    }
  }

  async create(name: string, size: string | undefined): Promise<Volume> {
    assertVolumeName(name);
    const sizeMiB = volumeSizeMiB(size);
    return await this.exclusively(async () => this.describeRecord(await this.createUnlocked(name, sizeMiB)));
  }

  async list(): Promise<Volume[]> {
    const holders = await liveAttachments(this.store);
    return (await listVolumes(this.store)).map((record) =>
      this.toApi(
        record,
        holders.filter((holder) => holder.volume === record.name),
      ),
    );
  }

  async describe(name: string): Promise<Volume> {
    return await this.describeRecord(await this.record(name));
  }

  /** The volumes each sandbox that holds any now mounts, in its create's order. */
  async mountsBySandbox(): Promise<Map<string, { volume: string; mount: string; readOnly: boolean }[]>> {
    const mounts = new Map<string, { volume: string; mount: string; readOnly: boolean }[]>();
    for (const holder of await liveAttachments(this.store)) {
      const list = mounts.get(holder.sandbox_id) ?? [];
      list.push({ volume: holder.volume, mount: holder.mount, readOnly: holder.read_only === 1 });
      mounts.set(holder.sandbox_id, list);
    }
    return mounts;
  }

  /** Deletes a volume and its data; refused while a live sandbox holds it. */
  async remove(name: string): Promise<void> {
    await this.exclusively(async () => {
      await this.record(name);
      const [holder] = await liveAttachments(this.store, [name]);
      if (holder) throw inUse(name, holder, `remove volume "${name}"`);
      await deleteVolume(this.store, name);
      fs.rmSync(this.file(name), { force: true });
      fs.rmSync(this.snapshotDir(name), { recursive: true, force: true });
      this.log.info({ volume: name }, 'volume removed');
    });
  }

  /** Grows a volume no sandbox holds, and its filesystem with it (offline: e2fsck, then resize2fs). */
  async resize(name: string, size: string): Promise<Volume> {
    const sizeMiB = volumeSizeMiB(size);
    return await this.exclusively(async () => {
      const record = await this.record(name);
      const [holder] = await liveAttachments(this.store, [name]);
      if (holder) throw inUse(name, holder, `resize volume "${name}" (volumes are resized while no sandbox holds them)`);
      if (sizeMiB * MIB <= record.size_bytes)
        throw new CapsuleError('invalid_argument', `volume "${name}" is ${record.size_bytes / MIB} MiB already; volumes only grow`, {
          hint: 'give a larger size',
        });
      assertDiskRoom(this.config, 'resize a volume', [this.dir]);
      const file = this.file(name);
      // A volume is resized only when clean: a sandbox killed mid-write leaves its journal to replay first.
      await checkFilesystem(file, this.config.jail, true);
      fs.truncateSync(file, sizeMiB * MIB);
      await onVolumeFile(file, ['resize2fs'], this.config.jail);
      await setVolumeSize(this.store, name, sizeMiB * MIB);
      this.log.info({ volume: name, sizeMiB }, 'volume grown');
      return await this.describeRecord({ ...record, size_bytes: sizeMiB * MIB });
    });
  }

  /**
   * Copies a volume as it is now (a sparse copy, or a reflink where the file
   * system has them) into a snapshot; refused while a sandbox writes it: a copy
   * taken under a running writer would be torn. Readers may hold it.
   */
  async snapshot(name: string, snapshotName: string | undefined): Promise<VolumeSnapshot> {
    const snapshot = snapshotName ?? new Date().toISOString().slice(0, 19).replace(/[-:]/g, '').replace('T', '-');
    assertVolumeName(snapshot);
    return await this.exclusively(async () => {
      const record = await this.record(name);
      const writer = conflictingHolder(true, await liveAttachments(this.store, [name]));
      if (writer) throw inUse(name, writer, `snapshot volume "${name}" (a snapshot is taken while no sandbox writes it)`);
      if (await getVolumeSnapshot(this.store, name, snapshot))
        throw new CapsuleError('name_taken', `volume "${name}" has a snapshot named "${snapshot}" already`, { hint: 'pick another name' });
      assertDiskRoom(this.config, 'snapshot a volume', [this.dir]);
      fs.mkdirSync(this.snapshotDir(name), { recursive: true, mode: 0o700 });
      await copySparse(this.file(name), path.join(this.snapshotDir(name), `${snapshot}.ext4`));
      const row = { volume: name, name: snapshot, size_bytes: record.size_bytes, created_at: new Date().toISOString() };
      await insertVolumeSnapshot(this.store, row);
      this.log.info({ volume: name, snapshot }, 'volume snapshot taken');
      return this.snapshotToApi(row);
    });
  }

  async snapshots(name: string): Promise<VolumeSnapshot[]> {
    await this.record(name);
    return (await listVolumeSnapshots(this.store, name)).map((row) => this.snapshotToApi(row));
  }

  async removeSnapshot(name: string, snapshot: string): Promise<void> {
    await this.exclusively(async () => {
      await this.snapshotRecord(name, snapshot);
      await deleteVolumeSnapshot(this.store, name, snapshot);
      fs.rmSync(path.join(this.snapshotDir(name), `${snapshot}.ext4`), { force: true });
    });
  }

  /** Makes the new volume `target` from a snapshot of `name`; `name` itself is left as it is. */
  async restore(name: string, snapshot: string, target: string): Promise<Volume> {
    assertVolumeName(target);
    return await this.exclusively(async () => {
      const row = await this.snapshotRecord(name, snapshot);
      if (await getVolume(this.store, target))
        throw new CapsuleError('name_taken', `a volume named "${target}" already exists`, { hint: 'restore into a new name' });
      assertDiskRoom(this.config, 'restore a volume snapshot', [this.dir]);
      await copySparse(path.join(this.snapshotDir(name), `${snapshot}.ext4`), this.file(target));
      const record = { name: target, size_bytes: row.size_bytes, created_at: new Date().toISOString() };
      await insertVolume(this.store, record);
      this.log.info({ volume: target, from: `${name}@${snapshot}` }, 'volume restored from a snapshot');
      return await this.describeRecord(record);
    });
  }

  /**
   * A compressed qcow2 image of the volume as it is now (volume-image.ts),
   * refused while a sandbox writes it. The image is made in a temp file that
   * is unlinked once open: the stream reads it, and nothing is left behind.
   */
  async export(name: string): Promise<{ bytes: number; image: Readable }> {
    return await this.exclusively(async () => {
      await this.record(name);
      const writer = conflictingHolder(true, await liveAttachments(this.store, [name]));
      if (writer) throw inUse(name, writer, `export volume "${name}" (a volume is exported while no sandbox writes it)`);
      assertDiskRoom(this.config, 'export a volume', [this.dir]);
      const temp = this.tempFile(name, 'export');
      try {
        fs.closeSync(fs.openSync(temp, 'wx', 0o600));
        await writeVolumeImage(this.file(name), temp);
        const fd = fs.openSync(temp, 'r');
        const bytes = fs.fstatSync(fd).size;
        this.log.info({ volume: name, bytes }, 'volume exported');
        return { bytes, image: fs.createReadStream('', { fd }) };
      } finally {
        fs.rmSync(temp, { force: true });
      }
    });
  }

  /**
   * Makes the volume `name` from an upload of what `export` wrote, checked as
   * hostile input (volume-image.ts), then its filesystem (e2fsck, confined).
   * On any failure the upload and the half-made file are removed, and no
   * volume is made.
   */
  async import(name: string, upload: AsyncIterable<Buffer>): Promise<Volume> {
    assertVolumeName(name);
    if (await getVolume(this.store, name))
      throw new CapsuleError('name_taken', `a volume named "${name}" already exists`, { hint: 'import into a new name' });
    assertDiskRoom(this.config, 'import a volume', [this.config.stateDir]);
    fs.mkdirSync(this.dir, { recursive: true, mode: 0o700 });
    const image = this.tempFile(name, 'import');
    const disk = this.tempFile(name, 'disk');
    try {
      await receiveVolumeImage(upload, image, this.config.diskReserveMiB);
      const bytes = await checkVolumeImage(image, this.config.jail);
      fs.closeSync(fs.openSync(disk, 'wx', 0o600));
      await unpackVolumeImage(image, disk, this.config.jail, this.config.diskReserveMiB);
      fs.rmSync(image, { force: true });
      await checkImportedFilesystem(disk, this.config.jail);
      return await this.exclusively(async () => {
        if (await getVolume(this.store, name))
          throw new CapsuleError('name_taken', `a volume named "${name}" already exists`, { hint: 'import into a new name' });
        fs.renameSync(disk, this.file(name));
        const record = { name, size_bytes: bytes, created_at: new Date().toISOString() };
        await insertVolume(this.store, record);
        this.log.info({ volume: name, sizeMiB: bytes / MIB }, 'volume imported');
        return await this.describeRecord(record);
      });
    } finally {
      fs.rmSync(image, { force: true });
      fs.rmSync(disk, { force: true });
    }
  }

  /**
   * Runs `work` on the files inside a volume no sandbox holds (e2b's volume
   * file API, volume-files.ts), under the lock, so no create attaches it
   * meanwhile; a journal a killed sandbox left is replayed first.
   */
  async onIdleVolumeFiles<T>(name: string, doing: string, work: (files: VolumeFiles) => Promise<T>): Promise<T> {
    return await this.exclusively(async () => {
      await this.record(name);
      const [holder] = await liveAttachments(this.store, [name]);
      if (holder)
        throw inUse(name, holder, `${doing}: the volume file API reaches volumes no sandbox holds; use sandbox.files in that sandbox`);
      if (await checkFilesystem(this.file(name), this.config.jail))
        this.log.warn({ volume: name }, 'volume was not cleanly unmounted: repaired');
      return await work(new VolumeFiles(this.file(name), this.config.jail));
    });
  }

  /**
   * The file `path` of a volume no sandbox holds, copied out to a temp file
   * that is unlinked once open (as `export` does): the stream reads it, and
   * nothing is left behind.
   */
  async readFile(name: string, path: string): Promise<{ entry: VolumeEntry; content: Readable }> {
    return await this.onIdleVolumeFiles(name, `read ${path} from volume "${name}"`, async (files) => {
      assertDiskRoom(this.config, 'read a volume file', [this.dir]);
      const temp = this.tempFile(name, 'read');
      try {
        fs.closeSync(fs.openSync(temp, 'wx', 0o600));
        const entry = await files.read(path, temp);
        return { entry, content: fs.createReadStream('', { fd: fs.openSync(temp, 'r') }) };
      } finally {
        fs.rmSync(temp, { force: true });
      }
    });
  }

  /**
   * Writes an upload as the file `path` of a volume no sandbox holds. The
   * upload is received first, outside the lock, into a temp file no larger
   * than the volume (a larger one could not fit), and leaves nothing behind.
   */
  async writeFile(name: string, path: string, upload: AsyncIterable<Buffer>, options: NewEntryOptions): Promise<VolumeEntry> {
    const record = await this.record(name);
    assertDiskRoom(this.config, 'write a volume file', [this.dir]);
    const temp = this.tempFile(name, 'upload');
    const fd = fs.openSync(temp, 'wx', 0o600);
    try {
      let received = 0;
      try {
        for await (const chunk of upload) {
          received += chunk.length;
          if (received > record.size_bytes)
            throw new CapsuleError('invalid_argument', `the file is larger than volume "${name}" (${record.size_bytes / MIB} MiB)`, {
              hint: 'grow the volume first (`capsule volume resize`)',
            });
          fs.writeSync(fd, chunk);
        }
      } finally {
        fs.closeSync(fd);
      }
      return await this.onIdleVolumeFiles(name, `write ${path} to volume "${name}"`, (files) => files.write(path, temp, options));
    } finally {
      fs.rmSync(temp, { force: true });
    }
  }

  /** A work file of volume `name`: createUnlocked's sweep takes it if a crash leaves it behind. */
  private tempFile(name: string, use: string): string {
    return `${this.file(name)}.tmp-${process.pid}-${use}-${randomBytes(4).toString('hex')}`;
  }

  /**
   * Checks a create's volume requests and makes the volumes that do not exist
   * yet (default size), before the create takes anything else. Who holds them
   * is checked here for an early answer and again by `attach`.
   */
  async plan(requests: VolumeMountRequest[]): Promise<PlannedAttachment[]> {
    const mounts = checkVolumeMounts(requests);
    if (mounts.length === 0) return [];
    return await this.exclusively(async () => {
      for (const mount of mounts)
        if (!(await getVolume(this.store, mount.name))) await this.createUnlocked(mount.name, volumeSizeMiB(undefined));
      await this.assertFree(mounts, 'attach it');
      return mounts.map((mount, position) => ({
        volume: mount.name,
        file: this.file(mount.name),
        serial: `capsule-vol-${position}`,
        mount: mount.mount,
        readOnly: mount.readOnly,
      }));
    });
  }

  /**
   * Records that sandbox `id` (in the store, starting) holds its planned
   * volumes; refused if another took one meanwhile. A volume nobody held is
   * checked first: one whose last VM died mid-write has its journal replayed
   * here, on the host, so even a read-only attachment sees it clean.
   */
  async attach(id: string, planned: PlannedAttachment[]): Promise<void> {
    if (planned.length === 0) return;
    await this.exclusively(async () => {
      const holders = await this.assertFree(
        planned.map((p) => ({ name: p.volume, readOnly: p.readOnly })),
        'attach it',
      );
      for (const p of planned) {
        if (holders.some((holder) => holder.volume === p.volume)) continue;
        if (await checkFilesystem(p.file, this.config.jail))
          this.log.warn({ volume: p.volume, sandbox: id }, 'volume was not cleanly unmounted: repaired');
      }
      await insertSandboxVolumes(
        this.store,
        planned.map((p, position) => ({ sandbox_id: id, volume: p.volume, position, mount: p.mount, read_only: p.readOnly ? 1 : 0 })),
      );
    });
  }

  /** Refuses when a live holder keeps any of `mounts` from being given; returns the live holders. */
  private async assertFree(mounts: { name: string; readOnly: boolean }[], doing: string): Promise<LiveAttachment[]> {
    const holders = await liveAttachments(
      this.store,
      mounts.map((m) => m.name),
    );
    for (const mount of mounts) {
      const holder = conflictingHolder(
        mount.readOnly,
        holders.filter((h) => h.volume === mount.name),
      );
      if (holder) throw inUse(mount.name, holder, doing);
    }
    return holders;
  }

  private async createUnlocked(name: string, sizeMiB: number): Promise<VolumeRecord> {
    if (await getVolume(this.store, name))
      throw new CapsuleError('name_taken', `a volume named "${name}" already exists`, { hint: 'pick another name, or use that volume' });
    assertDiskRoom(this.config, 'create a volume', [this.config.stateDir]);
    fs.mkdirSync(this.dir, { recursive: true, mode: 0o700 });
    const file = this.file(name);
    const temp = `${file}.tmp-${process.pid}`;
    // Under the lock, and one daemon per state folder: any other temp file of this name is a create a crash cut short.
    for (const entry of fs.readdirSync(this.dir))
      if (entry.startsWith(`${path.basename(file)}.tmp-`)) fs.rmSync(path.join(this.dir, entry), { force: true });
    try {
      fs.closeSync(fs.openSync(temp, 'wx', 0o600));
      fs.truncateSync(temp, sizeMiB * MIB);
      // The journal is left unzeroed: a new sparse file reads as zeros already, and so stays a few MiB on disk.
      await runCommand('mkfs.ext4', ['-q', '-F', '-L', name.slice(0, 16), '-E', 'lazy_itable_init=0,lazy_journal_init=1', temp]);
      fs.renameSync(temp, file);
    } catch (err) {
      fs.rmSync(temp, { force: true });
      throw err;
    }
    const record = { name, size_bytes: sizeMiB * MIB, created_at: new Date().toISOString() };
    await insertVolume(this.store, record);
    this.log.info({ volume: name, sizeMiB }, 'volume created');
    return record;
  }

  private async snapshotRecord(name: string, snapshot: string): Promise<VolumeSnapshotRecord> {
    await this.record(name);
    assertVolumeName(snapshot);
    const row = await getVolumeSnapshot(this.store, name, snapshot);
    if (!row)
      throw new CapsuleError('not_found', `volume "${name}" has no snapshot named "${snapshot}"`, {
        hint: `see \`capsule volume snapshots ${name}\``,
      });
    return row;
  }

  private snapshotToApi(row: VolumeSnapshotRecord): VolumeSnapshot {
    const stat = fs.statSync(path.join(this.snapshotDir(row.volume), `${row.name}.ext4`), { throwIfNoEntry: false });
    return {
      volume: row.volume,
      name: row.name,
      sizeBytes: row.size_bytes,
      diskBytes: stat ? stat.blocks * 512 : 0,
      createdAt: row.created_at,
    };
  }

  private async record(name: string): Promise<VolumeRecord> {
    assertVolumeName(name);
    const record = await getVolume(this.store, name);
    if (!record) throw new CapsuleError('volume_not_found', `no volume named "${name}"`, { hint: 'see `capsule volume ls`' });
    return record;
  }

  private async describeRecord(record: VolumeRecord): Promise<Volume> {
    return this.toApi(record, await liveAttachments(this.store, [record.name]));
  }

  private toApi(record: VolumeRecord, holders: LiveAttachment[]): Volume {
    const stat = fs.statSync(this.file(record.name), { throwIfNoEntry: false });
    return {
      name: record.name,
      sizeBytes: record.size_bytes,
      diskBytes: stat ? stat.blocks * 512 : 0,
      createdAt: record.created_at,
      attachments: holders.map((h) => ({
        sandboxId: h.sandbox_id,
        sandboxName: h.sandbox_name,
        mount: h.mount,
        readOnly: h.read_only === 1,
      })),
    };
  }
}

/** Copies `from` to `to` keeping holes (or sharing blocks where the file system can), through a temp file so `to` is whole or absent. */
async function copySparse(from: string, to: string): Promise<void> {
  const temp = `${to}.tmp-${process.pid}`;
  try {
    await runCommand('cp', ['--sparse=always', '--reflink=auto', from, temp]);
    fs.chmodSync(temp, 0o600);
    fs.renameSync(temp, to);
  } catch (err) {
    fs.rmSync(temp, { force: true });
    throw err;
  }
}

/** An imported filesystem must be ext4 and clean, or mendable by `e2fsck -p`; anything else is the upload's fault. */
async function checkImportedFilesystem(file: string, confine: boolean): Promise<void> {
  try {
    await checkFilesystem(file, confine, true);
  } catch (err) {
    throw new CapsuleError('invalid_argument', 'not a volume image: its disk holds no ext4 filesystem that e2fsck can pass', {
      hint: 'import what `capsule volume export` wrote',
      cause: err,
    });
  }
}

/**
 * `e2fsck -p` (`-f` too when `full`), confined unless `confine` is off:
 * resolves whether it repaired something (exit 1: a journal replayed, counts
 * fixed), which is fine; more is not.
 */
async function checkFilesystem(file: string, confine: boolean, full = false): Promise<boolean> {
  try {
    await onVolumeFile(file, ['e2fsck', ...(full ? ['-f'] : []), '-p'], confine);
    return false;
  } catch (err) {
    if (err instanceof LaunchError && err.exitCode === 1) return true;
    throw new CapsuleError('internal', `the volume's filesystem needs repair by hand: ${(err as Error).message.split('\n')[0]}`, {
      hint: `run \`e2fsck -f ${file}\` on the host`,
      cause: err,
    });
  }
}
