import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import SQLite from 'better-sqlite3';
import { Kysely, Migrator, SqliteDialect, sql } from 'kysely';
import { afterEach, describe, expect, it } from 'vitest';
import { migrations } from './migrations.js';
import { Store } from './store.js';
import { getWorkload, listReplicas } from './workloads.js';

describe('migration 0014: a workload row becomes a workload and its one replica (real SQLite)', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'capsule-migration-'));
  afterEach(() => fs.rmSync(dir, { recursive: true, force: true }));

  it("keeps each workload's sandbox, restarts, failures, last exit, and a crash loop or readiness as its replica's phase", async () => {
    const file = path.join(dir, 'capsule.db');
    const before = Object.fromEntries(Object.entries(migrations).filter(([name]) => name < '0014'));
    const db = new Kysely<unknown>({ dialect: new SqliteDialect({ database: new SQLite(file) }) });
    expect((await new Migrator({ db, provider: { getMigrations: async () => before } }).migrateToLatest()).error).toBeUndefined();
    const at = '2026-12-01T00:00:00.000Z';
    const row = (name: string, state: string, conditions: unknown[], sandbox: string | null, failures: number) =>
      sql`INSERT INTO workloads (name, source, spec, spec_hash, state, sandbox_id, sandbox_hash, restarts, failures, conditions, last_exit, created_at, updated_at)
        VALUES (${name}, NULL, '{}', 'h2', ${state}, ${sandbox}, 'h1', 3, ${failures}, ${JSON.stringify(conditions)}, '{"reason":"exited"}', ${at}, ${at})`.execute(
        db,
      );
    await row('ready', 'running', [{ type: 'Ready', status: true, reason: 'running', since: at }], 'sb_ready', 0);
    await row(
      'looping',
      'running',
      [
        { type: 'Ready', status: false, reason: 'exited', since: at },
        { type: 'Degraded', status: true, reason: 'crash_loop', since: at },
      ],
      'sb_loop',
      6,
    );
    await row('idle', 'stopped', [{ type: 'Ready', status: false, reason: 'stopped', since: at }], null, 0);
    await db.destroy();

    const store = await Store.open(file);
    try {
      expect(await listReplicas(store, 'ready')).toEqual([
        expect.objectContaining({ slot: 0, sandbox_id: 'sb_ready', spec_hash: 'h1', phase: 'ready', restarts: 3, failures: 0 }),
      ]);
      expect(await listReplicas(store, 'looping')).toEqual([
        expect.objectContaining({ sandbox_id: 'sb_loop', phase: 'crash_loop', failures: 6, last_exit: '{"reason":"exited"}' }),
      ]);
      expect(await listReplicas(store, 'idle')).toEqual([expect.objectContaining({ sandbox_id: null, phase: 'stopped' })]);
      expect(Object.keys((await getWorkload(store, 'ready'))!).sort()).toEqual(
        ['conditions', 'created_at', 'name', 'source', 'spec', 'spec_hash', 'state', 'updated_at'].sort(),
      );
    } finally {
      await store.close();
    }
  });
});
