// A client of the OCI distribution API on `fetch`: manifests and blobs, with
// anonymous access, bearer tokens (the WWW-Authenticate challenge flow) and
// basic auth; mirrors tried before the registry itself; plain HTTP for
// registries on this host or when configured. Everything a registry answers
// is bounded here and verified by digest by the callers.
import fs from 'node:fs';
import { CapsuleError, errorMessage } from '../errors.js';
import type { Logger } from '../log.js';
import type { BlobSource } from './blob-store.js';
import { LIMITS } from './image-limits.js';
import { MANIFEST_ACCEPT } from './manifest.js';
import { isLoopbackRegistry, type ImageReference } from './reference.js';

export interface RegistryCredentials {
  username: string;
  password: string;
}

export interface RegistrySettings {
  /** Speak HTTP instead of HTTPS (default: only for registries on this host). */
  plainHttp?: boolean;
  /** Base URLs (`https://mirror.example:5000`) tried before the registry, in order. */
  mirrors?: string[];
  username?: string;
  password?: string;
}

/** The per-registry settings file: `{"registries": {"host:port": RegistrySettings}}`. */
export function loadRegistrySettings(file: string): Record<string, RegistrySettings> {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch {
    return {};
  }
  try {
    const parsed = JSON.parse(text) as { registries?: Record<string, RegistrySettings> };
    const registries = parsed.registries ?? {};
    for (const [host, s] of Object.entries(registries)) {
      if (typeof s !== 'object' || s === null) throw new Error(`settings of ${host} are not an object`);
      if (
        s.mirrors !== undefined &&
        !(Array.isArray(s.mirrors) && s.mirrors.every((m) => typeof m === 'string' && /^https?:\/\//.test(m)))
      ) {
        throw new Error(`mirrors of ${host} must be a list of http(s) URLs`);
      }
    }
    return registries;
  } catch (err) {
    throw new CapsuleError('invalid_argument', `the registry settings in ${file} are invalid: ${errorMessage(err)}`, {
      hint: 'expected {"registries": {"host:port": {"plainHttp"?, "mirrors"?, "username"?, "password"?}}}',
    });
  }
}

const HEADERS_TIMEOUT_MS = 30_000;

interface Challenge {
  scheme: string;
  params: Record<string, string>;
}

/** Parses `Bearer realm="…",service="…",scope="…"` (one challenge is enough here). */
export function parseChallenge(header: string): Challenge | undefined {
  const match = /^\s*(\w+)\s*(.*)$/s.exec(header);
  if (!match) return undefined;
  const params: Record<string, string> = {};
  for (const p of match[2]!.matchAll(/(\w+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^,\s]*))/g)) {
    params[p[1]!.toLowerCase()] = (p[2] ?? p[3] ?? '').replace(/\\(.)/g, '$1');
  }
  return { scheme: match[1]!.toLowerCase(), params };
}

export class RegistryClient {
  private readonly tokens = new Map<string, string>();
  private readonly endpoints: string[];
  private readonly credentials: RegistryCredentials | undefined;

  constructor(
    readonly ref: ImageReference,
    settings: RegistrySettings,
    credentials: RegistryCredentials | undefined,
    private readonly log: Logger,
    private readonly signal?: AbortSignal,
  ) {
    const plainHttp = settings.plainHttp ?? isLoopbackRegistry(ref.registry);
    this.endpoints = [...(settings.mirrors ?? []).map((m) => m.replace(/\/+$/, '')), `${plainHttp ? 'http' : 'https'}://${ref.registry}`];
    this.credentials =
      credentials ?? (settings.username !== undefined ? { username: settings.username, password: settings.password ?? '' } : undefined);
  }

  /** A manifest or index by tag or digest, with its bytes (bounded) as served. */
  async getManifest(reference: string): Promise<{ bytes: Buffer; contentType: string | undefined }> {
    const res = await this.request(`manifests/${reference}`, { accept: MANIFEST_ACCEPT }, 'manifest');
    const bytes = await readBounded(res, LIMITS.manifestBytes, 'the manifest');
    return { bytes, contentType: res.headers.get('content-type') ?? undefined };
  }

  /** A blob as a BlobSource, resuming with a Range request. */
  blobSource(digest: string): BlobSource {
    return {
      open: async (offset: number) => {
        const res = await this.request(`blobs/${digest}`, offset > 0 ? { range: `bytes=${offset}-` } : {}, 'blob');
        const start = res.status === 206 ? offset : 0;
        if (!res.body) throw new CapsuleError('registry_unreachable', `the registry sent no body for ${digest}`);
        return { body: res.body as AsyncIterable<Uint8Array>, start };
      },
    };
  }

  /** Tries each mirror, then the registry; the last failure is the one reported. */
  private async request(path: string, headers: Record<string, string>, what: 'manifest' | 'blob'): Promise<Response> {
    let lastError: unknown;
    for (const [i, endpoint] of this.endpoints.entries()) {
      try {
        return await this.requestFrom(endpoint, path, headers, what);
      } catch (err) {
        lastError = err;
        if (i < this.endpoints.length - 1) this.log.info({ endpoint, err: errorMessage(err) }, 'mirror failed; trying the next source');
      }
    }
    throw lastError;
  }

  private async requestFrom(endpoint: string, path: string, headers: Record<string, string>, what: 'manifest' | 'blob'): Promise<Response> {
    const url = `${endpoint}/v2/${this.ref.repository}/${path}`;
    const scope = `repository:${this.ref.repository}:pull`;
    const tokenKey = `${endpoint} ${scope}`;
    let authorization = this.tokens.get(tokenKey);
    for (let attempt = 0; attempt < 2; attempt++) {
      const res = await this.fetch(url, { ...headers, ...(authorization ? { authorization } : {}) });
      if (res.status === 401 && attempt === 0) {
        await res.body?.cancel();
        const challenge = parseChallenge(res.headers.get('www-authenticate') ?? '');
        authorization = await this.authorize(challenge, scope, endpoint);
        this.tokens.set(tokenKey, authorization);
        continue;
      }
      if (res.ok) return res;
      await res.body?.cancel();
      const name = `${this.ref.registry}/${this.ref.repository}`;
      if (res.status === 401 || res.status === 403) {
        throw new CapsuleError('registry_auth_failed', `${endpoint} refused access to ${name} (HTTP ${res.status})`, {
          hint: this.credentials
            ? 'check the user name and password'
            : 'the repository may be private: pass --username and --password-stdin',
        });
      }
      if (res.status === 404) {
        throw what === 'manifest'
          ? new CapsuleError('image_not_found', `${name}:${path.slice('manifests/'.length)} was not found on ${endpoint}`, {
              hint: 'check the repository name and tag',
            })
          : new CapsuleError('image_invalid', `${endpoint} does not have ${path.slice('blobs/'.length)}, which ${name}'s manifest lists`, {
              hint: 'the image in the registry is incomplete',
            });
      }
      throw new CapsuleError('registry_unreachable', `${endpoint} answered HTTP ${res.status} for ${url}`, {
        hint: 'the registry is failing; try again later',
      });
    }
    throw new CapsuleError('registry_auth_failed', `${endpoint} kept asking for credentials`);
  }

  /** Answers a 401 challenge: a bearer token from the realm, or basic credentials. */
  private async authorize(challenge: Challenge | undefined, scope: string, endpoint: string): Promise<string> {
    const basic = this.credentials
      ? `Basic ${Buffer.from(`${this.credentials.username}:${this.credentials.password}`).toString('base64')}`
      : undefined;
    if (challenge?.scheme === 'basic') {
      if (!basic)
        throw new CapsuleError('registry_auth_failed', `${endpoint} needs a user name and password`, {
          hint: 'pass --username and --password-stdin',
        });
      return basic;
    }
    if (challenge?.scheme !== 'bearer' || !challenge.params.realm) {
      throw new CapsuleError('registry_auth_failed', `${endpoint} asked for authentication in a way Capsule does not speak`);
    }
    const realm = new URL(challenge.params.realm);
    if (challenge.params.service) realm.searchParams.set('service', challenge.params.service);
    realm.searchParams.set('scope', challenge.params.scope ?? scope);
    const res = await this.fetch(realm.toString(), basic ? { authorization: basic } : {});
    if (res.status === 401 || res.status === 403) {
      await res.body?.cancel();
      throw new CapsuleError(
        'registry_auth_failed',
        `the token server ${realm.origin} refused ${this.credentials ? `user ${this.credentials.username}` : 'anonymous access'}`,
        {
          hint: this.credentials ? 'check the user name and password' : 'pass --username and --password-stdin',
        },
      );
    }
    if (!res.ok) {
      await res.body?.cancel();
      throw new CapsuleError('registry_unreachable', `the token server ${realm.origin} answered HTTP ${res.status}`);
    }
    let token: unknown;
    try {
      const json = JSON.parse((await readBounded(res, 64 * 1024, 'the token answer')).toString('utf8')) as {
        token?: unknown;
        access_token?: unknown;
      };
      token = json.token ?? json.access_token;
    } catch (err) {
      if (err instanceof CapsuleError) throw err;
    }
    if (typeof token !== 'string' || token === '')
      throw new CapsuleError('registry_auth_failed', `the token server ${realm.origin} sent no token`);
    return `Bearer ${token}`;
  }

  /** fetch with a bound on the wait for headers (not on the body, which may be large). */
  private async fetch(url: string, headers: Record<string, string>): Promise<Response> {
    const controller = new AbortController();
    const timer = setTimeout(() => controller.abort(new Error(`no answer within ${HEADERS_TIMEOUT_MS / 1000} s`)), HEADERS_TIMEOUT_MS);
    const onAbort = () => controller.abort(this.signal?.reason);
    this.signal?.addEventListener('abort', onAbort, { once: true });
    try {
      return await fetch(url, { headers: { 'user-agent': 'capsule', ...headers }, signal: controller.signal, redirect: 'follow' });
    } catch (err) {
      const cause = (err as { cause?: { code?: string; message?: string } }).cause;
      throw new CapsuleError(
        'registry_unreachable',
        `cannot reach ${new URL(url).origin}: ${cause?.code ?? cause?.message ?? errorMessage(err)}`,
        {
          hint: 'check the registry address and that it is up (for HTTP-only registries set plainHttp in the registry settings)',
          cause: err,
        },
      );
    } finally {
      clearTimeout(timer);
      this.signal?.removeEventListener('abort', onAbort);
    }
  }
}

async function readBounded(res: Response, max: number, what: string): Promise<Buffer> {
  const declared = Number(res.headers.get('content-length') ?? '0');
  if (declared > max) {
    await res.body?.cancel();
    throw new CapsuleError('image_invalid', `${what} is larger than ${max} bytes`);
  }
  const chunks: Buffer[] = [];
  let total = 0;
  if (res.body) {
    for await (const chunk of res.body as AsyncIterable<Uint8Array>) {
      total += chunk.byteLength;
      if (total > max) throw new CapsuleError('image_invalid', `${what} is larger than ${max} bytes`);
      chunks.push(Buffer.from(chunk));
    }
  }
  return Buffer.concat(chunks);
}
