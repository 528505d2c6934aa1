// The workload rows: one per declared workload, with its spec, and one per
// replica, with what the reconciler last made of it. Rows only: what a spec
// means and when a sandbox is replaced are workloads/'s business, never this file's.
import type { Selectable, Updateable } from 'kysely';
import type { WorkloadReplicaRow, WorkloadRow } from './schema.js';
import type { Store } from './store.js';

export type WorkloadRecord = Selectable<WorkloadRow>;
export type WorkloadReplicaRecord = Selectable<WorkloadReplicaRow>;

export async function insertWorkload(store: Store, row: WorkloadRecord): Promise<void> {
  await store.db.insertInto('workloads').values(row).execute();
}

export async function getWorkload(store: Store, name: string): Promise<WorkloadRecord | undefined> {
  return await store.db.selectFrom('workloads').selectAll().where('name', '=', name).executeTakeFirst();
}

export async function listWorkloads(store: Store): Promise<WorkloadRecord[]> {
  return await store.db.selectFrom('workloads').selectAll().orderBy('name').execute();
}

/** Changes some columns of a workload (its updated_at too). */
export async function updateWorkload(store: Store, name: string, change: Omit<Updateable<WorkloadRow>, 'name'>): Promise<void> {
  await store.db
    .updateTable('workloads')
    .set({ ...change, updated_at: new Date().toISOString() })
    .where('name', '=', name)
    .execute();
}

/** Removes a workload and its replicas' rows. */
export async function deleteWorkload(store: Store, name: string): Promise<void> {
  await store.db.deleteFrom('workload_replicas').where('workload', '=', name).execute();
  await store.db.deleteFrom('workloads').where('name', '=', name).execute();
}

export async function listReplicas(store: Store, workload: string): Promise<WorkloadReplicaRecord[]> {
  return await store.db.selectFrom('workload_replicas').selectAll().where('workload', '=', workload).orderBy('slot').execute();
}

export async function getReplica(store: Store, workload: string, slot: number): Promise<WorkloadReplicaRecord | undefined> {
  return await store.db
    .selectFrom('workload_replicas')
    .selectAll()
    .where('workload', '=', workload)
    .where('slot', '=', slot)
    .executeTakeFirst();
}

export async function insertReplica(store: Store, row: WorkloadReplicaRecord): Promise<void> {
  await store.db.insertInto('workload_replicas').values(row).execute();
}

/** Changes some columns of a replica (its updated_at too). */
export async function updateReplica(
  store: Store,
  workload: string,
  slot: number,
  change: Omit<Updateable<WorkloadReplicaRow>, 'workload' | 'slot'>,
): Promise<void> {
  await store.db
    .updateTable('workload_replicas')
    .set({ ...change, updated_at: new Date().toISOString() })
    .where('workload', '=', workload)
    .where('slot', '=', slot)
    .execute();
}

export async function deleteReplica(store: Store, workload: string, slot: number): Promise<void> {
  await store.db.deleteFrom('workload_replicas').where('workload', '=', workload).where('slot', '=', slot).execute();
}
