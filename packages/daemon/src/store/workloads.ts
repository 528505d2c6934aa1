// The workload rows: one per declared workload, with its spec and what the
// reconciler last made of it. Rows only: what a spec means and when a
// sandbox is replaced are workloads/'s business, never this file's.
import type { Selectable, Updateable } from 'kysely';
import type { WorkloadRow } from './schema.js';
import type { Store } from './store.js';

export type WorkloadRecord = Selectable<WorkloadRow>;

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

export async function deleteWorkload(store: Store, name: string): Promise<void> {
  await store.db.deleteFrom('workloads').where('name', '=', name).execute();
}
