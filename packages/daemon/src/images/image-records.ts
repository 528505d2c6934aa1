// The image store's rows in SQLite: images by manifest digest, the references
// naming them, and templates built from them with the defaults their
// sandboxes inherit. Only complete images are ever inserted, so a listed image
// is always usable.
import type { Image } from '@capsule/protocol';
import type { Store } from '../store/store.js';
import type { TemplateService } from '../templates/template-service.js';
import type { FetchedImage } from './fetch-image.js';
import type { Descriptor, ImageConfig } from './manifest.js';

export interface TemplateImageDefaults {
  imageDigest: string;
  env: Record<string, string>;
  user: string;
  workdir: string | undefined;
}

export interface StoredImage {
  digest: string;
  layers: Descriptor[];
  config: ImageConfig;
  configDigest: string;
}

export async function saveImage(store: Store, image: FetchedImage, ref: string | undefined, source: 'registry' | 'archive'): Promise<void> {
  const now = new Date().toISOString();
  await store.db.transaction().execute(async (tx) => {
    await tx
      .insertInto('images')
      .values({
        digest: image.digest,
        config_digest: image.manifest.config.digest,
        layers: JSON.stringify(image.manifest.layers),
        config: JSON.stringify(image.config),
        size_bytes: image.sizeBytes,
        source,
        created_at: now,
      })
      .onConflict((oc) => oc.column('digest').doNothing())
      .execute();
    if (ref !== undefined) {
      await tx
        .insertInto('image_refs')
        .values({ ref, digest: image.digest, updated_at: now })
        .onConflict((oc) => oc.column('ref').doUpdateSet({ digest: image.digest, updated_at: now }))
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

export async function loadImage(store: Store, digest: string): Promise<StoredImage | undefined> {
  const row = await store.db.selectFrom('images').selectAll().where('digest', '=', digest).executeTakeFirst();
  if (!row) return undefined;
  return { digest: row.digest, layers: JSON.parse(row.layers) as Descriptor[], config: JSON.parse(row.config) as ImageConfig, configDigest: row.config_digest };
}

export async function listImages(store: Store): Promise<Image[]> {
  const rows = await store.db.selectFrom('images').selectAll().orderBy('created_at', 'desc').execute();
  const refs = await store.db.selectFrom('image_refs').selectAll().orderBy('ref').execute();
  const templates = await store.db.selectFrom('template_images').select(['template', 'image_digest']).orderBy('template').execute();
  return rows.map((row) => {
    const config = JSON.parse(row.config) as ImageConfig;
    return {
      digest: row.digest,
      refs: refs.filter((r) => r.digest === row.digest).map((r) => r.ref),
      sizeBytes: row.size_bytes,
      layers: (JSON.parse(row.layers) as unknown[]).length,
      source: row.source === 'archive' ? 'archive' : 'registry',
      env: config.env,
      ...(config.workingDir ? { workingDir: config.workingDir } : {}),
      ...(config.user ? { user: config.user } : {}),
      ...(config.entrypoint ? { entrypoint: config.entrypoint } : {}),
      ...(config.cmd ? { cmd: config.cmd } : {}),
      templates: templates.filter((t) => t.image_digest === row.digest).map((t) => t.template),
      createdAt: row.created_at,
    };
  });
}

/** Removes a reference; the image row goes too when no reference is left. Returns whether the image row went. */
export async function removeImageRef(store: Store, ref: string, digest: string): Promise<boolean> {
  return await store.db.transaction().execute(async (tx) => {
    await tx.deleteFrom('image_refs').where('ref', '=', ref).execute();
    const left = await tx.selectFrom('image_refs').select('ref').where('digest', '=', digest).executeTakeFirst();
    if (left) return false;
    await tx.deleteFrom('images').where('digest', '=', digest).execute();
    return true;
  });
}

export async function removeImage(store: Store, digest: string): Promise<void> {
  await store.db.deleteFrom('images').where('digest', '=', digest).execute();
}

export async function templatesOfImage(store: Store, digest: string): Promise<string[]> {
  return (await store.db.selectFrom('template_images').select('template').where('image_digest', '=', digest).execute()).map((r) => r.template);
}

/** What a template built from an image gives its sandboxes; undefined for other templates. */
export async function templateImageDefaults(store: Store, template: string): Promise<TemplateImageDefaults | undefined> {
  const row = await store.db.selectFrom('template_images').selectAll().where('template', '=', template).executeTakeFirst();
  if (!row) return undefined;
  return { imageDigest: row.image_digest ?? '', env: JSON.parse(row.env) as Record<string, string>, user: row.user, workdir: row.workdir ?? undefined };
}

/** The START and READY a template's VM runs before its warm snapshot, with the template's defaults; undefined without START. */
export async function templateService(store: Store, template: string): Promise<TemplateService | undefined> {
  const row = await store.db.selectFrom('template_images').selectAll().where('template', '=', template).executeTakeFirst();
  if (!row?.start_cmd) return undefined;
  return {
    start: JSON.parse(row.start_cmd) as string[],
    ready: row.ready_cmd ? { cmd: JSON.parse(row.ready_cmd) as string[], timeoutMs: row.ready_timeout_ms ?? 60_000 } : undefined,
    user: row.user,
    cwd: row.workdir ?? undefined,
    env: JSON.parse(row.env) as Record<string, string>,
  };
}

export async function imageTemplateNames(store: Store): Promise<string[]> {
  return (await store.db.selectFrom('template_images').select('template').execute()).map((r) => r.template);
}

/** Digests of every blob the stored images still use (manifests, configs, layers). */
export async function referencedBlobs(store: Store): Promise<Set<string>> {
  const rows = await store.db.selectFrom('images').select(['digest', 'config_digest', 'layers']).execute();
  const used = new Set<string>();
  for (const row of rows) {
    used.add(row.digest);
    used.add(row.config_digest);
    for (const layer of JSON.parse(row.layers) as Descriptor[]) used.add(layer.digest);
  }
  return used;
}
