// Importing images from files: `docker save` tarballs, OCI archives (a tar of
// an OCI layout) and OCI layout folders. Each becomes an ImageSource, so an
// import goes through the same verification as a pull: digests checked,
// linux/amd64 chosen from an index, layers counted against the config.
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { CapsuleError } from '../errors.js';
import type { BlobSource, BlobStore } from './blob-store.js';
import { fetchImage, type FetchEvent, type FetchedImage, type ImageSource, type LayerConsumer } from './fetch-image.js';
import { entryComponents } from './layer-apply.js';
import { LIMITS } from './image-limits.js';
import { invalidImage, MEDIA, parseJson, sniffCompression } from './manifest.js';
import { formatReference, isDigest, parseReference } from './reference.js';
import { readTar } from './tar-reader.js';

const INDEX_REFERENCE = 'index.json';

function badArchive(file: string, why: string): CapsuleError {
  return new CapsuleError('image_invalid', `${file} is not an image archive: ${why}`, {
    hint: 'expected a `docker save` tarball, an OCI archive or an OCI layout folder',
  });
}

/** A JSON file of the archive (index.json, manifest.json, a manifest blob), read only when it is within the bound. */
function readSmallFile(file: string, what: string): Buffer {
  const size = fs.statSync(file).size;
  if (size > LIMITS.manifestBytes)
    throw invalidImage(`${what} is ${size} bytes, more than the ${LIMITS.manifestBytes} Capsule reads`, 'the archive is hostile or broken');
  return fs.readFileSync(file);
}

function fileSource(file: string): BlobSource {
  return {
    open: async (offset) => ({ body: fs.createReadStream(file, { start: offset }), start: offset }),
  };
}

/** Unpacks a tarball's regular files into `dir`; nothing else is created and no name leaves `dir`. */
async function unpackArchive(file: string, dir: string): Promise<void> {
  for await (const { entry, body } of readTar(fs.createReadStream(file))) {
    if (entry.type !== 'file' && entry.type !== 'directory') continue;
    const target = path.join(dir, ...entryComponents(entry.path));
    if (entry.type === 'directory') {
      fs.mkdirSync(target, { recursive: true });
      continue;
    }
    fs.mkdirSync(path.dirname(target), { recursive: true });
    const out = fs.createWriteStream(target, { flags: 'wx' });
    for await (const chunk of body) if (!out.write(chunk)) await new Promise<void>((r) => out.once('drain', () => r()));
    await new Promise<void>((resolve, reject) => out.end((err?: Error | null) => (err ? reject(err) : resolve())));
  }
}

function blobFile(layout: string, digest: string): string {
  if (!isDigest(digest)) throw badArchive(layout, `bad digest ${digest}`);
  return path.join(layout, 'blobs', 'sha256', digest.slice('sha256:'.length));
}

/** An OCI layout folder as an image source; its index.json is served as the top manifest. */
function layoutSource(layout: string): ImageSource {
  return {
    getManifest: async (reference) => {
      const file = reference === INDEX_REFERENCE ? path.join(layout, 'index.json') : blobFile(layout, reference);
      try {
        return { bytes: readSmallFile(file, reference), contentType: undefined };
      } catch (err) {
        if (err instanceof CapsuleError) throw err;
        throw badArchive(layout, `it has no ${reference === INDEX_REFERENCE ? 'index.json' : `blob ${reference}`}`);
      }
    },
    blobSource: (digest) => fileSource(blobFile(layout, digest)),
  };
}

/** The reference an OCI index names its image by, if it is a full one. */
function layoutRef(layout: string): string | undefined {
  const index = parseJson(readSmallFile(path.join(layout, 'index.json'), 'index.json'), 'index.json');
  const manifests = Array.isArray(index.manifests) ? (index.manifests as { annotations?: Record<string, unknown> }[]) : [];
  for (const m of manifests) {
    const name = m.annotations?.['io.containerd.image.name'] ?? m.annotations?.['org.opencontainers.image.ref.name'];
    if (typeof name !== 'string') continue;
    try {
      return formatReference(parseReference(name));
    } catch {
      // A bare tag such as "latest" is not a reference by itself.
    }
  }
  return undefined;
}

async function sha256File(file: string): Promise<{ digest: string; size: number }> {
  const hash = createHash('sha256');
  let size = 0;
  for await (const chunk of fs.createReadStream(file)) {
    hash.update(chunk as Buffer);
    size += (chunk as Buffer).length;
  }
  return { digest: `sha256:${hash.digest('hex')}`, size };
}

/** A `docker save` folder (manifest.json with Config, RepoTags, Layers) as an image source with a manifest made here. */
async function dockerSaveSource(dir: string): Promise<{ source: ImageSource; ref: string | undefined }> {
  const list = JSON.parse(readSmallFile(path.join(dir, 'manifest.json'), 'manifest.json').toString('utf8')) as unknown;
  const first = Array.isArray(list) ? (list[0] as { Config?: unknown; RepoTags?: unknown; Layers?: unknown } | undefined) : undefined;
  if (!first || typeof first.Config !== 'string' || !Array.isArray(first.Layers) || !first.Layers.every((l) => typeof l === 'string')) {
    throw badArchive(dir, 'manifest.json does not name a config and layers');
  }
  const inDir = (name: string) => path.join(dir, ...entryComponents(name));
  const files = new Map<string, string>();
  const describe = async (name: string) => {
    const file = inDir(name);
    if (!fs.existsSync(file)) throw badArchive(dir, `it lacks ${name}, which manifest.json lists`);
    const { digest, size } = await sha256File(file);
    files.set(digest, file);
    return { digest, size, file };
  };
  const config = await describe(first.Config);
  const layers = [];
  for (const name of first.Layers as string[]) {
    const layer = await describe(name);
    const head = Buffer.alloc(4);
    const fd = fs.openSync(layer.file, 'r');
    fs.readSync(fd, head, 0, 4, 0);
    fs.closeSync(fd);
    const compression = sniffCompression(head);
    const mediaType = compression === 'gzip' ? MEDIA.ociLayerGzip : compression === 'zstd' ? MEDIA.ociLayerZstd : MEDIA.ociLayer;
    layers.push({ mediaType, digest: layer.digest, size: layer.size });
  }
  const manifest = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: MEDIA.ociManifest,
      config: { mediaType: MEDIA.ociConfig, digest: config.digest, size: config.size },
      layers,
    }),
  );
  const tags = Array.isArray(first.RepoTags) ? first.RepoTags.filter((t): t is string => typeof t === 'string') : [];
  let ref: string | undefined;
  if (tags[0]) ref = formatReference(parseReference(tags[0]));
  const source: ImageSource = {
    getManifest: async () => ({ bytes: manifest, contentType: MEDIA.ociManifest }),
    blobSource: (digest) => {
      const file = files.get(digest);
      if (!file) throw badArchive(dir, `it has no blob ${digest}`);
      return fileSource(file);
    },
  };
  return { source, ref };
}

/** Imports the image in `file` into the blob cache; the caller records it. */
export async function importArchive(
  file: string,
  blobs: BlobStore,
  tmpDir: string,
  tag: string | undefined,
  onEvent: (event: FetchEvent) => void,
  consume?: LayerConsumer,
): Promise<{ image: FetchedImage; ref: string | undefined }> {
  let stat: fs.Stats;
  try {
    stat = fs.statSync(file);
  } catch {
    throw new CapsuleError('invalid_argument', `cannot read ${file}`, { hint: 'give the path of the archive on the daemon’s host' });
  }
  fs.mkdirSync(tmpDir, { recursive: true });
  const unpacked = stat.isDirectory() ? undefined : fs.mkdtempSync(path.join(tmpDir, `import-${process.pid}-`));
  try {
    const dir = unpacked ?? file;
    if (unpacked) await unpackArchive(file, unpacked);
    if (fs.existsSync(path.join(dir, 'index.json'))) {
      const image = await fetchImage(layoutSource(dir), blobs, INDEX_REFERENCE, path.basename(file), onEvent, consume);
      return { image, ref: tag ?? layoutRef(dir) };
    }
    if (fs.existsSync(path.join(dir, 'manifest.json'))) {
      const { source, ref } = await dockerSaveSource(dir);
      const image = await fetchImage(source, blobs, 'manifest', path.basename(file), onEvent, consume);
      return { image, ref: tag ?? ref };
    }
    throw badArchive(file, 'it has neither index.json (OCI) nor manifest.json (docker save)');
  } catch (err) {
    if (err instanceof SyntaxError) throw badArchive(file, err.message);
    throw err;
  } finally {
    if (unpacked) fs.rmSync(unpacked, { recursive: true, force: true });
  }
}
