// The volume rows: volumes by name and the sandboxes they are attached to.
// Rows only: which attachments conflict, and the files behind them, are
// volumes/'s business, never this file's.
import type { Selectable } from 'kysely';
import type { SandboxVolumeRow, VolumeRow, VolumeSnapshotRow } from './schema.js';
import type { Store } from './store.js';

export type VolumeRecord = Selectable<VolumeRow>;
export type SandboxVolumeRecord = Selectable<SandboxVolumeRow>;
export type VolumeSnapshotRecord = Selectable<VolumeSnapshotRow>;

/** An attachment whose sandbox still holds the volume, with the sandbox's name and state. */
export interface LiveAttachment extends SandboxVolumeRecord {
  sandbox_name: string | null;
  sandbox_state: string;
}

/** Sandbox states in which an attachment holds its volume: the VM runs, or may run again on its disk. */
const HOLDING_STATES = ['starting', 'running', 'paused', 'stopped'];

export async function insertVolume(store: Store, row: VolumeRecord): Promise<void> {
  await store.db.insertInto('volumes').values(row).execute();
}

export async function getVolume(store: Store, name: string): Promise<VolumeRecord | undefined> {
  return await store.db.selectFrom('volumes').selectAll().where('name', '=', name).executeTakeFirst();
}

export async function listVolumes(store: Store): Promise<VolumeRecord[]> {
  return await store.db.selectFrom('volumes').selectAll().orderBy('name').execute();
}

export async function setVolumeSize(store: Store, name: string, sizeBytes: number): Promise<void> {
  await store.db.updateTable('volumes').set({ size_bytes: sizeBytes }).where('name', '=', name).execute();
}

/** Removes a volume, its snapshots and the attachment rows of the (dead) sandboxes that once had it, in one transaction. */
export async function deleteVolume(store: Store, name: string): Promise<void> {
  await store.db.transaction().execute(async (tx) => {
    await tx.deleteFrom('sandbox_volumes').where('volume', '=', name).execute();
    await tx.deleteFrom('volume_snapshots').where('volume', '=', name).execute();
    await tx.deleteFrom('volumes').where('name', '=', name).execute();
  });
}

export async function insertVolumeSnapshot(store: Store, row: VolumeSnapshotRecord): Promise<void> {
  await store.db.insertInto('volume_snapshots').values(row).execute();
}

export async function getVolumeSnapshot(store: Store, volume: string, name: string): Promise<VolumeSnapshotRecord | undefined> {
  return await store.db.selectFrom('volume_snapshots').selectAll().where('volume', '=', volume).where('name', '=', name).executeTakeFirst();
}

/** A volume's snapshots, oldest first. */
export async function listVolumeSnapshots(store: Store, volume: string): Promise<VolumeSnapshotRecord[]> {
  return await store.db
    .selectFrom('volume_snapshots')
    .selectAll()
    .where('volume', '=', volume)
    .orderBy('created_at')
    .orderBy('name')
    .execute();
}

export async function deleteVolumeSnapshot(store: Store, volume: string, name: string): Promise<void> {
  await store.db.deleteFrom('volume_snapshots').where('volume', '=', volume).where('name', '=', name).execute();
}

export async function insertSandboxVolumes(store: Store, rows: SandboxVolumeRecord[]): Promise<void> {
  if (rows.length > 0) await store.db.insertInto('sandbox_volumes').values(rows).execute();
}

/** Attachments that hold their volume now; of the volumes named, or of all when `volumes` is undefined. */
export async function liveAttachments(store: Store, volumes?: string[]): Promise<LiveAttachment[]> {
  if (volumes?.length === 0) return [];
  let query = store.db
    .selectFrom('sandbox_volumes')
    .innerJoin('sandboxes', 'sandboxes.id', 'sandbox_volumes.sandbox_id')
    .selectAll('sandbox_volumes')
    .select(['sandboxes.name as sandbox_name', 'sandboxes.state as sandbox_state'])
    .where('sandboxes.state', 'in', HOLDING_STATES)
    .orderBy('sandbox_volumes.sandbox_id')
    .orderBy('sandbox_volumes.position');
  if (volumes) query = query.where('sandbox_volumes.volume', 'in', volumes);
  return await query.execute();
}
