import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { Store } from '../store/store.js';
import { ApiKeys, generateApiKey, hashApiKey, loadDaemonSecret, maskApiKey, SandboxTokens } from './credentials.js';

describe('API keys (real SQLite in memory)', () => {
  let store: Store;
  let keys: ApiKeys;
  beforeEach(async () => {
    store = await Store.open(':memory:');
    keys = new ApiKeys(store);
  });
  afterEach(async () => await store.close());

  it('generates e2b-form keys, stores only their hash, and verifies them', async () => {
    const created = await keys.create('ci');
    expect(created.key).toMatch(/^e2b_[0-9a-f]{40}$/);
    const rows = await store.listApiKeys();
    expect(rows).toHaveLength(1);
    expect(JSON.stringify(rows)).not.toContain(created.key);
    expect(rows[0]?.key_hash).toBe(hashApiKey(created.key));
    expect(await keys.verify(created.key)).toBe(true);
    expect(await keys.verify(generateApiKey())).toBe(false);
    expect(await keys.verify(undefined)).toBe(false);
    expect(await keys.verify('not-a-key')).toBe(false);
    expect((await keys.list())[0]?.lastUsedAt).toBeDefined();
  });

  it('registers an existing e2b key once and refuses malformed ones', async () => {
    const existing = `e2b_${'ab'.repeat(20)}`;
    await keys.create('imported', existing);
    expect(await keys.verify(existing)).toBe(true);
    await expect(keys.create('again', existing)).rejects.toMatchObject({ code: 'name_taken' });
    await expect(keys.create('bad', 'e2b_XYZ')).rejects.toMatchObject({ code: 'invalid_argument' });
  });

  it('removes keys, which then stop working', async () => {
    const created = await keys.create('temp');
    await keys.remove(created.id);
    expect(await keys.verify(created.key)).toBe(false);
    await expect(keys.remove(created.id)).rejects.toMatchObject({ code: 'not_found' });
  });

  it('masks keys to their start and end', () => {
    expect(maskApiKey(`e2b_${'0'.repeat(36)}abcd`)).toBe('e2b_0000…abcd');
  });
});

describe('sandbox access tokens', () => {
  it('differ per sandbox and per daemon secret, and verify only the right one', () => {
    const tokens = new SandboxTokens(Buffer.alloc(32, 1));
    const other = new SandboxTokens(Buffer.alloc(32, 2));
    expect(tokens.tokenFor('sb_a')).not.toBe(tokens.tokenFor('sb_b'));
    expect(tokens.verify('sb_a', tokens.tokenFor('sb_a'))).toBe(true);
    expect(tokens.verify('sb_b', tokens.tokenFor('sb_a'))).toBe(false);
    expect(tokens.verify('sb_a', other.tokenFor('sb_a'))).toBe(false);
    expect(tokens.verify('sb_a', undefined)).toBe(false);
    expect(tokens.verify('sb_a', '')).toBe(false);
  });

  it('keeps the daemon secret across restarts, owner-readable only', () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'capsule-secret-'));
    try {
      const first = loadDaemonSecret(dir);
      expect(loadDaemonSecret(dir).equals(first)).toBe(true);
      expect(fs.statSync(path.join(dir, 'daemon.secret')).mode & 0o777).toBe(0o600);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  it('attack: a truncated daemon.secret is not silently regenerated (which would change every sandbox token); start-up fails with a hint and the file is left as it was', () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'capsule-secret-'));
    try {
      const file = path.join(dir, 'daemon.secret');
      fs.writeFileSync(file, Buffer.alloc(7, 1), { mode: 0o600 });
      expect(() => loadDaemonSecret(dir)).toThrow(/daemon\.secret.*7 bytes.*restore it from a backup/s);
      expect(fs.readFileSync(file).equals(Buffer.alloc(7, 1))).toBe(true);
      expect(fs.readdirSync(dir)).toEqual(['daemon.secret']);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});
