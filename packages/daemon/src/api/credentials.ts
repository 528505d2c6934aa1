// Who may use the API over TCP. The unix socket is the local user's and needs
// nothing; TCP clients present an API key (stored only as a hash), and the
// e2b SDK's calls to a sandbox's agent present that sandbox's access token,
// which is derived from a secret only this daemon knows, so it is never stored.
import { createHash, createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import fs from 'node:fs';
import type { IncomingHttpHeaders } from 'node:http';
import path from 'node:path';
import { nanoid } from 'nanoid';
import { CapsuleError } from '../errors.js';
import { writeFileAtomic } from '../guest/files.js';
import { fsyncFile } from '../vmm/freeze.js';
import type { ApiKeyRecord, Store } from '../store/store.js';

/** The key form the e2b SDK and its users know: `e2b_` and hex. */
const API_KEY_PATTERN = /^e2b_[0-9a-f]{32,128}$/;
/** last_used_at is written at most this often per key, not on every request. */
const TOUCH_INTERVAL_MS = 60_000;

export function generateApiKey(): string {
  return `e2b_${randomBytes(20).toString('hex')}`;
}

export function hashApiKey(key: string): string {
  return createHash('sha256').update(key).digest('hex');
}

/** Enough of a key for a person to tell keys apart, never enough to use it. */
export function maskApiKey(key: string): string {
  return `${key.slice(0, 8)}…${key.slice(-4)}`;
}

/** The API key a TCP client presented: `X-API-Key` (what the e2b SDK sends) or a bearer token. */
export function presentedApiKey(headers: IncomingHttpHeaders): string | undefined {
  const header = headers['x-api-key'];
  if (typeof header === 'string') return header;
  const bearer = /^Bearer (\S+)$/.exec(headers.authorization ?? '');
  return bearer?.[1];
}

export interface ApiKeyInfo {
  id: string;
  name: string;
  mask: string;
  createdAt: string;
  lastUsedAt?: string;
}

function toInfo(row: ApiKeyRecord): ApiKeyInfo {
  return {
    id: row.id,
    name: row.name,
    mask: row.mask,
    createdAt: row.created_at,
    ...(row.last_used_at ? { lastUsedAt: row.last_used_at } : {}),
  };
}

export class ApiKeys {
  private readonly touched = new Map<string, number>();

  constructor(private readonly store: Store) {}

  /** Stores a new key (or `key`, an existing e2b-form key being brought over) and returns it: the only time it is shown. */
  async create(name: string, key = generateApiKey()): Promise<ApiKeyInfo & { key: string }> {
    if (!API_KEY_PATTERN.test(key)) {
      throw new CapsuleError('invalid_argument', 'an API key is "e2b_" followed by 32 to 128 lowercase hex digits', {
        hint: 'leave the key out to have one generated',
      });
    }
    const keyHash = hashApiKey(key);
    if (await this.store.apiKeyByHash(keyHash)) throw new CapsuleError('name_taken', 'that API key is already registered');
    const row: ApiKeyRecord = {
      id: `key_${nanoid(12)}`,
      name,
      key_hash: keyHash,
      mask: maskApiKey(key),
      created_at: new Date().toISOString(),
      last_used_at: null,
    };
    await this.store.insertApiKey(row);
    return { ...toInfo(row), key };
  }

  async list(): Promise<ApiKeyInfo[]> {
    return (await this.store.listApiKeys()).map(toInfo);
  }

  async remove(id: string): Promise<void> {
    if (!(await this.store.deleteApiKey(id)))
      throw new CapsuleError('not_found', `no API key with id ${id}`, { hint: 'list keys with `capsule apikey ls`' });
  }

  /** True when `key` is a registered key; records its use. */
  async verify(key: string | undefined): Promise<boolean> {
    if (key === undefined || !API_KEY_PATTERN.test(key)) return false;
    const row = await this.store.apiKeyByHash(hashApiKey(key));
    if (!row) return false;
    const now = Date.now();
    if (now - (this.touched.get(row.id) ?? 0) > TOUCH_INTERVAL_MS) {
      this.touched.set(row.id, now);
      await this.store.touchApiKey(row.id, new Date(now).toISOString());
    }
    return true;
  }
}

/** Per-sandbox access tokens: an HMAC of the sandbox id under the daemon's secret. */
export class SandboxTokens {
  constructor(private readonly secret: Buffer) {}

  tokenFor(sandboxId: string): string {
    return createHmac('sha256', this.secret).update(`sandbox-access:${sandboxId}`).digest('base64url');
  }

  verify(sandboxId: string, token: string | undefined): boolean {
    return token !== undefined && sameSecret(token, this.tokenFor(sandboxId));
  }

  /** The token that opens a sandbox's ports (not its agent): e2b's traffic access token. */
  trafficTokenFor(sandboxId: string): string {
    return createHmac('sha256', this.secret).update(`sandbox-traffic:${sandboxId}`).digest('base64url');
  }

  verifyTraffic(sandboxId: string, token: string | undefined): boolean {
    return token !== undefined && sameSecret(token, this.trafficTokenFor(sandboxId));
  }
}

/**
 * Tokens of e2b's volume file API, one per volume: an HMAC of its name and
 * creation time under the daemon's secret, so a volume made again under the
 * same name gets another token.
 */
export class VolumeTokens {
  constructor(private readonly secret: Buffer) {}

  tokenFor(volume: string, createdAt: string): string {
    return createHmac('sha256', this.secret).update(`volume-content:${volume}:${createdAt}`).digest('base64url');
  }

  verify(volume: string, createdAt: string, token: string | undefined): boolean {
    return token !== undefined && sameSecret(token, this.tokenFor(volume, createdAt));
  }
}

function sameSecret(got: string, want: string): boolean {
  const a = Buffer.from(got);
  const b = Buffer.from(want);
  return a.length === b.length && timingSafeEqual(a, b);
}

const DAEMON_SECRET_BYTES = 32;

/**
 * The daemon's secret, created on first use: 32 random bytes, owner-only,
 * written to a temporary name, fsynced, renamed and the folder fsynced, so a
 * crash leaves either no secret or a whole one. One of any other size is an
 * error, never replaced: every sandbox's access token derives from it, and a
 * new one would silently lock out every client holding a token.
 */
export function loadDaemonSecret(stateDir: string): Buffer {
  const file = path.join(stateDir, 'daemon.secret');
  try {
    const secret = fs.readFileSync(file);
    if (secret.length === DAEMON_SECRET_BYTES) return secret;
    throw new Error(
      `${file} is ${secret.length} bytes, not ${DAEMON_SECRET_BYTES}: it is damaged: restore it from a backup, ` +
        'or, to issue new sandbox access tokens (every client holding one must get a new one), remove it and start capsuled again',
    );
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
  }
  const secret = randomBytes(DAEMON_SECRET_BYTES);
  writeFileAtomic(file, secret, 0o600);
  // The rename is durable only once the folder is.
  fsyncFile(stateDir);
  return secret;
}
