// Template rows beyond the `templates` table's basics (store.ts): what a
// template built from an image or a Capsulefile inherits and runs
// (template_images), and the folders of templates made by `capsule snapshot`
// (template_snapshots). Rows only: their meaning is templates/'s business.
import type { Selectable } from 'kysely';
import type { TemplateImageRow } from './schema.js';
import type { Store, TemplateRecord } from './store.js';

export type TemplateImageRecord = Selectable<TemplateImageRow>;

/** Inserts a template with no other rows (a build's temporary template). */
export async function insertTemplate(store: Store, record: TemplateRecord): Promise<void> {
  await store.db.insertInto('templates').values(record).execute();
}

/** Inserts a template built from an image or a Capsulefile, with what it inherits, in one transaction. */
export async function insertImageTemplate(store: Store, record: TemplateRecord, image: TemplateImageRecord): Promise<void> {
  await store.db.transaction().execute(async (tx) => {
    await tx.insertInto('templates').values(record).execute();
    await tx.insertInto('template_images').values(image).execute();
  });
}

/** Inserts a template made by `capsule snapshot`, with the sandbox it came from and its folder, in one transaction. */
export async function insertSnapshotTemplate(store: Store, record: TemplateRecord, sourceSandbox: string, dir: string): Promise<void> {
  await store.db.transaction().execute(async (tx) => {
    await tx.insertInto('templates').values(record).execute();
    await tx.insertInto('template_snapshots').values({ template: record.name, source_sandbox: sourceSandbox, dir }).execute();
  });
}

/** Removes a template's row (its template_images and template_snapshots rows go with it). */
export async function deleteTemplate(store: Store, name: string): Promise<void> {
  await store.db.deleteFrom('templates').where('name', '=', name).execute();
}

/** Removes every template whose name starts with `prefix`. */
export async function deleteTemplatesWithPrefix(store: Store, prefix: string): Promise<void> {
  await store.db.deleteFrom('templates').where('name', 'like', `${prefix}%`).execute();
}

/** Points a template at another kernel, initramfs and kit disk. */
export async function setTemplateGuestKit(
  store: Store,
  name: string,
  kit: Pick<TemplateRecord, 'kernel' | 'initramfs' | 'kit'>,
): Promise<void> {
  await store.db.updateTable('templates').set(kit).where('name', '=', name).execute();
}

export async function getTemplateImage(store: Store, template: string): Promise<TemplateImageRecord | undefined> {
  return await store.db.selectFrom('template_images').selectAll().where('template', '=', template).executeTakeFirst();
}

/** Every template built from an image or a Capsulefile, by name. */
export async function listTemplateImages(store: Store): Promise<TemplateImageRecord[]> {
  return await store.db.selectFrom('template_images').selectAll().orderBy('template').execute();
}

/** The folder of template `name` if it was made by `capsule snapshot`. */
export async function getSnapshotTemplateDir(store: Store, name: string): Promise<string | undefined> {
  return (await store.db.selectFrom('template_snapshots').select('dir').where('template', '=', name).executeTakeFirst())?.dir;
}

/** The folders of every template made by `capsule snapshot`. */
export async function listSnapshotTemplateDirs(store: Store): Promise<string[]> {
  return (await store.db.selectFrom('template_snapshots').select('dir').execute()).map((row) => row.dir);
}

/** Every template made by `capsule snapshot` with the sandbox it came from, oldest first. */
export async function listSnapshotTemplateSources(store: Store): Promise<{ template: string; source_sandbox: string }[]> {
  return await store.db
    .selectFrom('template_snapshots')
    .innerJoin('templates', 'templates.name', 'template_snapshots.template')
    .select(['template_snapshots.template', 'template_snapshots.source_sandbox'])
    .orderBy('templates.created_at')
    .orderBy('templates.name')
    .execute();
}
