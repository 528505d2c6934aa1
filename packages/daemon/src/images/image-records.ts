// The image store's records: images by manifest digest and the references
// naming them, as the API and the rootfs builder see them (the rows are
// store/images.ts's). Only complete images are ever inserted, so a listed
// image is always usable.
import type { Image } from '@capsule/protocol';
import { getImage, insertImage, listImageRecords, listImageRefs } from '../store/images.js';
import type { Store } from '../store/store.js';
import { listTemplateImages } from '../store/templates.js';
import type { FetchedImage } from './fetch-image.js';
import type { Descriptor, ImageConfig } from './manifest.js';

export interface StoredImage {
  digest: string;
  layers: Descriptor[];
  config: ImageConfig;
  configDigest: string;
}

export async function saveImage(store: Store, image: FetchedImage, ref: string | undefined, source: 'registry' | 'archive'): Promise<void> {
  const row = {
    digest: image.digest,
    config_digest: image.manifest.config.digest,
    layers: JSON.stringify(image.manifest.layers),
    config: JSON.stringify(image.config),
    size_bytes: image.sizeBytes,
    source,
    created_at: new Date().toISOString(),
  };
  await insertImage(store, row, ref);
}

export async function loadImage(store: Store, digest: string): Promise<StoredImage | undefined> {
  const row = await getImage(store, digest);
  if (!row) return undefined;
  return {
    digest: row.digest,
    layers: JSON.parse(row.layers) as Descriptor[],
    config: JSON.parse(row.config) as ImageConfig,
    configDigest: row.config_digest,
  };
}

export async function listImages(store: Store): Promise<Image[]> {
  const rows = await listImageRecords(store);
  const refs = await listImageRefs(store);
  const templates = await listTemplateImages(store);
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

export async function templatesOfImage(store: Store, digest: string): Promise<string[]> {
  return (await listTemplateImages(store)).filter((t) => t.image_digest === digest).map((t) => t.template);
}

/** Digests of every blob the stored images still use (manifests, configs, layers). */
export async function referencedBlobs(store: Store): Promise<Set<string>> {
  const rows = await listImageRecords(store);
  const used = new Set<string>();
  for (const row of rows) {
    used.add(row.digest);
    used.add(row.config_digest);
    for (const layer of JSON.parse(row.layers) as Descriptor[]) used.add(layer.digest);
  }
  return used;
}
