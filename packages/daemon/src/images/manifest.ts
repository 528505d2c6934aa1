// OCI and Docker manifests, image indexes and image configs: their media
// types, validation of what a registry or an archive hands us (never trusted:
// every field is checked before use), and choosing linux/amd64 from an index.
import { CapsuleError } from '../errors.js';
import { LIMITS } from './image-limits.js';
import { isDigest } from './reference.js';

export const MEDIA = {
  ociIndex: 'application/vnd.oci.image.index.v1+json',
  ociManifest: 'application/vnd.oci.image.manifest.v1+json',
  dockerList: 'application/vnd.docker.distribution.manifest.list.v2+json',
  dockerManifest: 'application/vnd.docker.distribution.manifest.v2+json',
  ociConfig: 'application/vnd.oci.image.config.v1+json',
  ociLayer: 'application/vnd.oci.image.layer.v1.tar',
  ociLayerGzip: 'application/vnd.oci.image.layer.v1.tar+gzip',
  ociLayerZstd: 'application/vnd.oci.image.layer.v1.tar+zstd',
} as const;

export const MANIFEST_ACCEPT = [MEDIA.ociIndex, MEDIA.dockerList, MEDIA.ociManifest, MEDIA.dockerManifest].join(', ');

export const PLATFORM = { os: 'linux', architecture: 'amd64' } as const;

export interface Descriptor {
  mediaType: string;
  digest: string;
  size: number;
  platform?: { os?: string; architecture?: string; variant?: string };
  annotations?: Record<string, string>;
}

export interface ImageManifest {
  mediaType: string;
  config: Descriptor;
  layers: Descriptor[];
}

export interface ImageIndex {
  mediaType: string;
  manifests: Descriptor[];
}

/** The parts of an image config that Capsule uses. */
export interface ImageConfig {
  architecture: string | undefined;
  os: string | undefined;
  env: string[];
  workingDir: string | undefined;
  user: string | undefined;
  entrypoint: string[] | undefined;
  cmd: string[] | undefined;
  diffIds: string[];
}

export function invalidImage(message: string, hint = 'the image is malformed'): CapsuleError {
  return new CapsuleError('image_invalid', message, { hint });
}

function record(value: unknown, what: string): Record<string, unknown> {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) throw invalidImage(`${what} is not a JSON object`);
  return value as Record<string, unknown>;
}

export function parseJson(bytes: Buffer, what: string, maxBytes: number = LIMITS.manifestBytes): Record<string, unknown> {
  if (bytes.length > maxBytes) throw invalidImage(`${what} is larger than ${maxBytes} bytes`);
  try {
    return record(JSON.parse(bytes.toString('utf8')), what);
  } catch (err) {
    if (err instanceof CapsuleError) throw err;
    throw invalidImage(`${what} is not valid JSON`);
  }
}

function descriptor(value: unknown, what: string): Descriptor {
  const d = record(value, what);
  if (typeof d.digest !== 'string' || !isDigest(d.digest)) throw invalidImage(`${what} has no sha256 digest`);
  if (typeof d.size !== 'number' || !Number.isSafeInteger(d.size) || d.size < 0) throw invalidImage(`${what} has no valid size`);
  const out: Descriptor = { mediaType: typeof d.mediaType === 'string' ? d.mediaType : '', digest: d.digest, size: d.size };
  if (d.platform !== undefined) {
    const p = record(d.platform, `${what}'s platform`);
    out.platform = {
      ...(typeof p.os === 'string' ? { os: p.os } : {}),
      ...(typeof p.architecture === 'string' ? { architecture: p.architecture } : {}),
      ...(typeof p.variant === 'string' ? { variant: p.variant } : {}),
    };
  }
  if (d.annotations !== undefined) {
    const a = record(d.annotations, `${what}'s annotations`);
    out.annotations = Object.fromEntries(Object.entries(a).filter((e): e is [string, string] => typeof e[1] === 'string'));
  }
  return out;
}

export type ParsedManifest = { kind: 'index'; index: ImageIndex } | { kind: 'manifest'; manifest: ImageManifest };

/** Classifies and validates a manifest or index; `contentType` is the registry's header, if any. */
export function parseManifest(bytes: Buffer, contentType?: string): ParsedManifest {
  const json = parseJson(bytes, 'the manifest');
  const mediaType = typeof json.mediaType === 'string' ? json.mediaType : (contentType?.split(';')[0]?.trim() ?? '');
  if (Array.isArray(json.manifests) || mediaType === MEDIA.ociIndex || mediaType === MEDIA.dockerList) {
    if (!Array.isArray(json.manifests)) throw invalidImage('the image index lists no manifests');
    return { kind: 'index', index: { mediaType, manifests: json.manifests.map((m, i) => descriptor(m, `manifest ${i} of the index`)) } };
  }
  if (json.schemaVersion === 1) {
    throw invalidImage(
      'the image uses the Docker schema 1 manifest format, which is not supported',
      'push the image again with a current Docker or skopeo',
    );
  }
  if (!Array.isArray(json.layers)) throw invalidImage('the manifest lists no layers');
  if (json.layers.length > LIMITS.layers) throw invalidImage(`the image has more than ${LIMITS.layers} layers`);
  return {
    kind: 'manifest',
    manifest: {
      mediaType: mediaType || MEDIA.ociManifest,
      config: descriptor(json.config, 'the config descriptor'),
      layers: json.layers.map((l, i) => descriptor(l, `layer ${i}`)),
    },
  };
}

/** Refuses, before anything is fetched, a blob whose descriptor says it is bigger than we would read into memory. */
export function checkDescriptorSize(d: Descriptor, maxBytes: number, what: string): void {
  if (d.size > maxBytes)
    throw invalidImage(
      `${what} ${d.digest} is ${d.size} bytes, more than the ${maxBytes} Capsule reads`,
      'the image is hostile or broken; it was not downloaded',
    );
}

/** The linux/amd64 entry of an index, or an error naming the platforms it has. */
export function choosePlatform(index: ImageIndex, reference: string): Descriptor {
  const found = index.manifests.find((m) => m.platform?.os === PLATFORM.os && m.platform.architecture === PLATFORM.architecture);
  if (found) return found;
  // An index without platforms (OCI layouts often) with a single image: take it.
  const unlabelled = index.manifests.filter(
    (m) => m.platform === undefined && m.annotations?.['vnd.docker.reference.type'] !== 'attestation-manifest',
  );
  if (unlabelled.length === 1 && index.manifests.every((m) => m.platform === undefined)) return unlabelled[0]!;
  const platforms = index.manifests
    .map(
      (m) => m.platform && `${m.platform.os ?? '?'}/${m.platform.architecture ?? '?'}${m.platform.variant ? `/${m.platform.variant}` : ''}`,
    )
    .filter((p): p is string => p !== undefined && p !== 'unknown/unknown');
  throw new CapsuleError('image_platform_unsupported', `${reference} has no image for ${PLATFORM.os}/${PLATFORM.architecture}`, {
    hint:
      platforms.length > 0
        ? `it is built for ${[...new Set(platforms)].join(', ')}; Capsule's guests are linux/amd64`
        : 'Capsule runs linux/amd64 images',
  });
}

function stringList(value: unknown, what: string): string[] | undefined {
  if (value === undefined || value === null) return undefined;
  if (!Array.isArray(value) || !value.every((v) => typeof v === 'string'))
    throw invalidImage(`the image config's ${what} is not a list of strings`);
  return value as string[];
}

export function parseImageConfig(bytes: Buffer): ImageConfig {
  const json = parseJson(bytes, 'the image config', LIMITS.configBytes);
  const config = json.config === undefined || json.config === null ? {} : record(json.config, 'the image config');
  const rootfs = record(json.rootfs ?? {}, "the image config's rootfs");
  const diffIds = stringList(rootfs.diff_ids, 'diff_ids') ?? [];
  if (!diffIds.every(isDigest)) throw invalidImage("the image config's diff_ids are not sha256 digests");
  const optionalString = (v: unknown) => (typeof v === 'string' && v !== '' ? v : undefined);
  return {
    architecture: optionalString(json.architecture),
    os: optionalString(json.os),
    env: stringList(config.Env, 'Env') ?? [],
    workingDir: optionalString(config.WorkingDir),
    user: optionalString(config.User),
    entrypoint: stringList(config.Entrypoint, 'Entrypoint'),
    cmd: stringList(config.Cmd, 'Cmd'),
    diffIds,
  };
}

/** How a layer's bytes are compressed, from its first bytes (media types are often wrong). */
export function sniffCompression(head: Buffer): 'gzip' | 'zstd' | 'none' {
  if (head.length >= 2 && head[0] === 0x1f && head[1] === 0x8b) return 'gzip';
  if (head.length >= 4 && head.readUInt32LE(0) === 0xfd2fb528) return 'zstd';
  return 'none';
}
