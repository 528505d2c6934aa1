// Fetching one image from a source (a registry or a local OCI layout) into the
// blob cache: the manifest (through an index to linux/amd64 if need be), the
// config and every layer, fetched concurrently and verified by digest. What
// is returned is complete in the cache; nothing half-fetched is ever returned.
import { createHash } from 'node:crypto';
import { CapsuleError } from '../errors.js';
import type { BlobProgress, BlobSource, BlobStore } from './blob-store.js';
import { LIMITS } from './image-limits.js';
import {
  checkDescriptorSize,
  choosePlatform,
  parseImageConfig,
  parseManifest,
  PLATFORM,
  type ImageConfig,
  type ImageManifest,
} from './manifest.js';

export interface ImageSource {
  /** A manifest or index by tag or digest. */
  getManifest(reference: string): Promise<{ bytes: Buffer; contentType: string | undefined }>;
  blobSource(digest: string): BlobSource;
}

export interface FetchedImage {
  /** The digest of the platform manifest: the image's identity in the store. */
  digest: string;
  manifest: ImageManifest;
  config: ImageConfig;
  /** Compressed bytes of all layers. */
  sizeBytes: number;
}

export type FetchEvent =
  | { type: 'resolved'; digest: string; layers: { digest: string; sizeBytes: number }[] }
  | { type: 'progress'; digest: string; doneBytes: number; totalBytes: number }
  | { type: 'unpacked'; index: number; layers: number };

/**
 * Work that runs while the layers download (unpacking them in order): it gets
 * the image and a promise per layer that settles when that layer is cached.
 */
export type LayerConsumer = (image: FetchedImage, layerReady: (index: number) => Promise<void>) => Promise<void>;

const LAYER_CONCURRENCY = 3;

function sha256(bytes: Buffer): string {
  return `sha256:${createHash('sha256').update(bytes).digest('hex')}`;
}

async function verifiedManifest(source: ImageSource, reference: string, name: string) {
  const { bytes, contentType } = await source.getManifest(reference);
  const digest = sha256(bytes);
  if (reference.startsWith('sha256:') && digest !== reference) {
    throw new CapsuleError('image_digest_mismatch', `the manifest of ${name} served for ${reference} has the digest ${digest}`, {
      hint: 'the source served corrupt data; nothing of it was kept',
    });
  }
  return { bytes, contentType, digest };
}

export async function fetchImage(
  source: ImageSource,
  blobs: BlobStore,
  reference: string,
  name: string,
  onEvent: (event: FetchEvent) => void = () => {},
  consume?: LayerConsumer,
): Promise<FetchedImage> {
  let top = await verifiedManifest(source, reference, name);
  let parsed = parseManifest(top.bytes, top.contentType);
  if (parsed.kind === 'index') {
    const chosen = choosePlatform(parsed.index, name);
    checkDescriptorSize(chosen, LIMITS.manifestBytes, 'the manifest');
    top = await verifiedManifest(source, chosen.digest, name);
    parsed = parseManifest(top.bytes, top.contentType);
    if (parsed.kind === 'index') throw new CapsuleError('image_invalid', `${name}: an index inside an index is not supported`);
  }
  const manifest = parsed.manifest;
  checkDescriptorSize(manifest.config, LIMITS.configBytes, 'the image config');
  await blobs.fetch(manifest.config.digest, manifest.config.size, source.blobSource(manifest.config.digest));
  const config = parseImageConfig(blobs.read(manifest.config.digest));
  if ((config.os && config.os !== PLATFORM.os) || (config.architecture && config.architecture !== PLATFORM.architecture)) {
    throw new CapsuleError('image_platform_unsupported', `${name} is built for ${config.os ?? '?'}/${config.architecture ?? '?'}`, {
      hint: `Capsule's guests run ${PLATFORM.os}/${PLATFORM.architecture} images`,
    });
  }
  if (config.diffIds.length !== manifest.layers.length) {
    throw new CapsuleError(
      'image_invalid',
      `${name} lists ${manifest.layers.length} layers but its config has ${config.diffIds.length} diff_ids`,
    );
  }
  onEvent({ type: 'resolved', digest: top.digest, layers: manifest.layers.map((l) => ({ digest: l.digest, sizeBytes: l.size })) });

  const image: FetchedImage = { digest: top.digest, manifest, config, sizeBytes: manifest.layers.reduce((sum, l) => sum + l.size, 0) };
  const ready = manifest.layers.map(() => deferred());
  const queue = manifest.layers.map((layer, index) => ({ layer, index }));
  const progress = (p: BlobProgress) => onEvent({ type: 'progress', ...p });
  const stop = (err: unknown) => {
    queue.length = 0; // the other workers finish what they started and stop
    for (const d of ready) d.reject(err);
  };
  const worker = async () => {
    for (let next = queue.shift(); next; next = queue.shift()) {
      try {
        await blobs.fetch(next.layer.digest, next.layer.size, source.blobSource(next.layer.digest), progress);
        ready[next.index]!.resolve();
      } catch (err) {
        stop(err);
        throw err;
      }
    }
  };
  const consuming = consume?.(image, (index) => ready[index]!.promise).catch((err: unknown) => {
    stop(err);
    throw err;
  });
  await Promise.all([...Array.from({ length: Math.min(LAYER_CONCURRENCY, manifest.layers.length) }, worker), consuming]);
  blobs.put(top.digest, top.bytes, 'manifest');
  return image;
}

function deferred(): { promise: Promise<void>; resolve: () => void; reject: (err: unknown) => void } {
  let resolve!: () => void;
  let reject!: (err: unknown) => void;
  const promise = new Promise<void>((res, rej) => {
    resolve = res;
    reject = rej;
  });
  promise.catch(() => undefined); // a layer nobody waits for must not be an unhandled rejection
  return { promise, resolve, reject };
}
