// The image store's rows: images by manifest digest and the references naming
// them. Rows only: what the JSON columns mean is images/image-records.ts's
// business, never this file's.
import type { Selectable } from 'kysely';
import type { ImageRefRow, ImageRow } from './schema.js';
import type { Store } from './store.js';

export type ImageRecord = Selectable<ImageRow>;
export type ImageRefRecord = Selectable<ImageRefRow>;

/** Records an image (kept as it is if already there) and points `ref`, if given, at it, in one transaction. */
export async function insertImage(store: Store, image: ImageRecord, ref: string | undefined): Promise<void> {
  await store.db.transaction().execute(async (tx) => {
    await tx
      .insertInto('images')
      .values(image)
      .onConflict((oc) => oc.column('digest').doNothing())
      .execute();
    if (ref !== undefined) {
      await tx
        .insertInto('image_refs')
        .values({ ref, digest: image.digest, updated_at: image.created_at })
        .onConflict((oc) => oc.column('ref').doUpdateSet({ digest: image.digest, updated_at: image.created_at }))
        .execute();
    }
  });
}

/** The digest an image reference or digest names in the store. */
export async function findImageDigest(store: Store, refOrDigest: string): Promise<string | undefined> {
  const byDigest = await store.db.selectFrom('images').select('digest').where('digest', '=', refOrDigest).executeTakeFirst();
  if (byDigest) return byDigest.digest;
  return (await store.db.selectFrom('image_refs').select('digest').where('ref', '=', refOrDigest).executeTakeFirst())?.digest;
}

export async function getImage(store: Store, digest: string): Promise<ImageRecord | undefined> {
  return await store.db.selectFrom('images').selectAll().where('digest', '=', digest).executeTakeFirst();
}

/** Every image, newest first. */
export async function listImageRecords(store: Store): Promise<ImageRecord[]> {
  return await store.db.selectFrom('images').selectAll().orderBy('created_at', 'desc').execute();
}

export async function listImageRefs(store: Store): Promise<ImageRefRecord[]> {
  return await store.db.selectFrom('image_refs').selectAll().orderBy('ref').execute();
}

/** Removes a reference; the image row goes too when no reference is left. Returns whether the image row went. */
export async function deleteImageRef(store: Store, ref: string, digest: string): Promise<boolean> {
  return await store.db.transaction().execute(async (tx) => {
    await tx.deleteFrom('image_refs').where('ref', '=', ref).execute();
    const left = await tx.selectFrom('image_refs').select('ref').where('digest', '=', digest).executeTakeFirst();
    if (left) return false;
    await tx.deleteFrom('images').where('digest', '=', digest).execute();
    return true;
  });
}

export async function deleteImage(store: Store, digest: string): Promise<void> {
  await store.db.deleteFrom('images').where('digest', '=', digest).execute();
}
