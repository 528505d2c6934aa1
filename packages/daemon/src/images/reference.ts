// Image references as users write them (`debian:12`, `localhost:5000/app@sha256:…`)
// parsed into registry, repository and tag or digest, with Docker's rules for
// the default registry. Pure: no network, no files.
import { CapsuleError } from '../errors.js';

export const DOCKER_HUB = 'registry-1.docker.io';

export interface ImageReference {
  /** Host and optional port, as used in URLs (`registry-1.docker.io`, `localhost:5000`). */
  registry: string;
  repository: string;
  tag: string | undefined;
  digest: string | undefined;
}

const DIGEST = /^sha256:[a-f0-9]{64}$/;
const TAG = /^[\w][\w.-]{0,127}$/;
const REPOSITORY = /^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:\/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*$/;

export function isDigest(value: string): boolean {
  return DIGEST.test(value);
}

function invalid(ref: string, why: string): CapsuleError {
  return new CapsuleError('invalid_argument', `"${ref}" is not an image reference: ${why}`, {
    hint: 'write it as [registry/]repository[:tag][@sha256:digest], e.g. localhost:5000/app:1.0',
  });
}

export function parseReference(ref: string): ImageReference {
  if (ref.length === 0 || ref.length > 512) throw invalid(ref, 'empty or too long');
  let rest = ref;
  let digest: string | undefined;
  const at = rest.indexOf('@');
  if (at !== -1) {
    digest = rest.slice(at + 1);
    rest = rest.slice(0, at);
    if (!isDigest(digest)) throw invalid(ref, 'the digest must be sha256: and 64 hex digits');
  }
  let tag: string | undefined;
  const colon = rest.lastIndexOf(':');
  if (colon > rest.lastIndexOf('/')) {
    tag = rest.slice(colon + 1);
    rest = rest.slice(0, colon);
    if (!TAG.test(tag)) throw invalid(ref, `bad tag "${tag}"`);
  }
  const slash = rest.indexOf('/');
  const first = slash === -1 ? '' : rest.slice(0, slash);
  let registry = DOCKER_HUB;
  let repository = rest;
  // Docker's rule: the first part names a registry when it looks like a host.
  if (slash !== -1 && (first.includes('.') || first.includes(':') || first === 'localhost')) {
    registry = first;
    repository = rest.slice(slash + 1);
  }
  if (registry === 'docker.io' || registry === 'index.docker.io') registry = DOCKER_HUB;
  if (registry === DOCKER_HUB && !repository.includes('/')) repository = `library/${repository}`;
  if (!REPOSITORY.test(repository)) throw invalid(ref, `bad repository name "${repository}"`);
  if (tag === undefined && digest === undefined) tag = 'latest';
  return { registry, repository, tag, digest };
}

/** The canonical text of a reference: what `capsule image ls` shows and what is stored. */
export function formatReference(ref: ImageReference): string {
  const registry = ref.registry === DOCKER_HUB ? 'docker.io' : ref.registry;
  return `${registry}/${ref.repository}${ref.tag ? `:${ref.tag}` : ''}${ref.digest ? `@${ref.digest}` : ''}`;
}

/** True for registries on this host, which are spoken to over plain HTTP unless configured otherwise. */
export function isLoopbackRegistry(registry: string): boolean {
  const host = registry.startsWith('[') ? registry.slice(1, registry.indexOf(']')) : registry.split(':')[0]!;
  return host === 'localhost' || host === '::1' || /^127\.\d+\.\d+\.\d+$/.test(host);
}
