// SQLite through Kysely: opening, migrating, and the queries the daemon needs.
// Every state change goes through `transition`, which records the history row
// in the same transaction, so a sandbox's history can never disagree with it.
import fs from 'node:fs';
import path from 'node:path';
import SQLite from 'better-sqlite3';
import { Kysely, Migrator, SqliteDialect, type Selectable } from 'kysely';
import { EventFeed } from './event-feed.js';
import { migrations } from './migrations.js';
import type { ApiKeyRow, Database, NetworkLeaseRow, SandboxEventRow, SandboxPortRow, SandboxRow, TemplateRow } from './schema.js';

export type SandboxRecord = Selectable<SandboxRow>;
export type SandboxEvent = Selectable<SandboxEventRow>;
export type TemplateRecord = Selectable<TemplateRow>;
export type ApiKeyRecord = Selectable<ApiKeyRow>;
export type NetworkLeaseRecord = Selectable<NetworkLeaseRow>;
export type SandboxPortRecord = Selectable<SandboxPortRow>;

/** Whether `err` is SQLite refusing a row because `column` (`table.column`) would no longer be unique. */
export function isUniqueViolation(err: unknown, column: string): boolean {
  return err instanceof SQLite.SqliteError && err.code === 'SQLITE_CONSTRAINT_UNIQUE' && err.message.endsWith(`: ${column}`);
}

export class Store {
  /** Each history row (sandbox_events, resource_events) once committed, for live readers. */
  readonly feed = new EventFeed();

  private constructor(readonly db: Kysely<Database>) {}

  static async open(file: string): Promise<Store> {
    if (file !== ':memory:') {
      fs.mkdirSync(path.dirname(file), { recursive: true, mode: 0o700 });
      // SQLite creates a new database with the umask's mode (0644) and gives its -wal and -shm the database's mode:
      // created here first, owner-only, all three are.
      fs.closeSync(fs.openSync(file, 'a', 0o600));
    }
    const sqlite = new SQLite(file);
    sqlite.pragma('journal_mode = WAL');
    sqlite.pragma('foreign_keys = ON');
    sqlite.pragma('busy_timeout = 5000');
    const db = new Kysely<Database>({ dialect: new SqliteDialect({ database: sqlite }) });
    const migrator = new Migrator({ db, provider: { getMigrations: async () => migrations } });
    const { error } = await migrator.migrateToLatest();
    if (error) {
      await db.destroy();
      throw error;
    }
    return new Store(db);
  }

  async close(): Promise<void> {
    await this.db.destroy();
  }

  async insertSandbox(row: SandboxRecord): Promise<void> {
    const eventId = await this.db.transaction().execute(async (tx) => {
      await tx.insertInto('sandboxes').values(row).execute();
      const inserted = await tx
        .insertInto('sandbox_events')
        .values({ sandbox_id: row.id, state: row.state, reason: row.state_reason, message: row.state_message, at: row.created_at })
        .executeTakeFirstOrThrow();
      return Number(inserted.insertId);
    });
    this.feed.publish({
      kind: 'sandbox',
      id: eventId,
      sandboxId: row.id,
      template: row.template,
      state: row.state,
      reason: row.state_reason,
      message: row.state_message,
      at: row.created_at,
    });
  }

  async getSandbox(idOrName: string): Promise<SandboxRecord | undefined> {
    const byId = await this.db.selectFrom('sandboxes').selectAll().where('id', '=', idOrName).executeTakeFirst();
    if (byId) return byId;
    return await this.db.selectFrom('sandboxes').selectAll().where('name', '=', idOrName).where('state', '!=', 'killed').executeTakeFirst();
  }

  async listSandboxes(options: { includeKilled: boolean }): Promise<SandboxRecord[]> {
    let query = this.db.selectFrom('sandboxes').selectAll().orderBy('created_at', 'asc');
    if (!options.includeKilled) query = query.where('state', '!=', 'killed');
    return await query.execute();
  }

  async sandboxesInStates(states: string[]): Promise<SandboxRecord[]> {
    return await this.db.selectFrom('sandboxes').selectAll().where('state', 'in', states).execute();
  }

  /** Moves a sandbox to `state`, recording why; `extra` updates other columns in the same step. */
  async transition(id: string, state: string, reason: string, message?: string, extra: Partial<SandboxRecord> = {}): Promise<void> {
    const at = new Date().toISOString();
    const recorded = await this.db.transaction().execute(async (tx) => {
      const updated = await tx
        .updateTable('sandboxes')
        .set({ ...extra, state, state_reason: reason, state_message: message ?? null })
        .where('id', '=', id)
        .returning('template')
        .executeTakeFirst();
      const inserted = await tx
        .insertInto('sandbox_events')
        .values({ sandbox_id: id, state, reason, message: message ?? null, at })
        .executeTakeFirstOrThrow();
      return { eventId: Number(inserted.insertId), template: updated?.template ?? '' };
    });
    this.feed.publish({
      kind: 'sandbox',
      id: recorded.eventId,
      sandboxId: id,
      template: recorded.template,
      state,
      reason,
      message: message ?? null,
      at,
    });
  }

  /** Running sandboxes whose timeout has passed at `now`. */
  async expiredSandboxes(now: Date): Promise<SandboxRecord[]> {
    return await this.db
      .selectFrom('sandboxes')
      .selectAll()
      .where('state', '=', 'running')
      .where('expires_at', 'is not', null)
      .where('expires_at', '<=', now.toISOString())
      .execute();
  }

  async setTimeout(id: string, timeoutMs: number, expiresAt: string | null): Promise<void> {
    await this.db.updateTable('sandboxes').set({ timeout_ms: timeoutMs, expires_at: expiresAt }).where('id', '=', id).execute();
  }

  /** A stopped sandbox's resources for its next start. */
  async setResources(id: string, resources: Pick<SandboxRecord, 'vcpus' | 'memory_mib'>): Promise<void> {
    await this.db.updateTable('sandboxes').set(resources).where('id', '=', id).execute();
  }

  /** Records a sandbox's egress policy (see 0005_network). */
  async setNetworkPolicy(id: string, policy: Pick<SandboxRecord, 'internet_access' | 'egress_allow' | 'egress_deny'>): Promise<void> {
    await this.db.updateTable('sandboxes').set(policy).where('id', '=', id).execute();
  }

  /** The host keys its SSH server presents, as the guest made them for it. */
  async setSshHostKeys(id: string, hostKeys: string[]): Promise<void> {
    await this.db
      .updateTable('sandboxes')
      .set({ ssh_host_keys: JSON.stringify(hostKeys) })
      .where('id', '=', id)
      .execute();
  }

  async history(id: string): Promise<SandboxEvent[]> {
    return await this.db.selectFrom('sandbox_events').selectAll().where('sandbox_id', '=', id).orderBy('id', 'asc').execute();
  }

  /** Host ports sandboxes publish; those of failed and killed sandboxes are not coming back, so only running, paused and stopped ones'. */
  async portsOfLiveSandboxes(): Promise<SandboxPortRecord[]> {
    return await this.db
      .selectFrom('sandbox_ports')
      .innerJoin('sandboxes', 'sandboxes.id', 'sandbox_ports.sandbox_id')
      .select(['sandbox_ports.sandbox_id', 'sandbox_ports.host_ip', 'sandbox_ports.host_port', 'sandbox_ports.guest_port'])
      .where('sandboxes.state', 'in', ['running', 'paused', 'stopped'])
      .execute();
  }

  async insertSandboxPorts(rows: SandboxPortRecord[]): Promise<void> {
    await this.db.insertInto('sandbox_ports').values(rows).execute();
  }

  /** TAP mode's address leases, one per sandbox with a network namespace. */
  async listNetworkLeases(): Promise<NetworkLeaseRecord[]> {
    return await this.db.selectFrom('network_leases').selectAll().execute();
  }

  async getNetworkLease(sandboxId: string): Promise<NetworkLeaseRecord | undefined> {
    return await this.db.selectFrom('network_leases').selectAll().where('sandbox_id', '=', sandboxId).executeTakeFirst();
  }

  async usedNetworkLeaseSlots(): Promise<number[]> {
    return (await this.db.selectFrom('network_leases').select('slot').execute()).map((row) => row.slot);
  }

  async insertNetworkLease(row: NetworkLeaseRecord): Promise<void> {
    await this.db.insertInto('network_leases').values(row).execute();
  }

  async deleteNetworkLease(sandboxId: string): Promise<void> {
    await this.db.deleteFrom('network_leases').where('sandbox_id', '=', sandboxId).execute();
  }

  async upsertTemplate(row: TemplateRecord): Promise<void> {
    await this.db
      .insertInto('templates')
      .values(row)
      .onConflict((oc) =>
        oc.column('name').doUpdateSet({
          kernel: row.kernel,
          initramfs: row.initramfs,
          kit: row.kit,
          rootfs: row.rootfs,
        }),
      )
      .execute();
  }

  async getTemplate(name: string): Promise<TemplateRecord | undefined> {
    return await this.db.selectFrom('templates').selectAll().where('name', '=', name).executeTakeFirst();
  }

  async listTemplates(): Promise<TemplateRecord[]> {
    return await this.db.selectFrom('templates').selectAll().orderBy('name').execute();
  }

  async insertApiKey(row: ApiKeyRecord): Promise<void> {
    await this.db.insertInto('api_keys').values(row).execute();
  }

  async listApiKeys(): Promise<ApiKeyRecord[]> {
    return await this.db.selectFrom('api_keys').selectAll().orderBy('created_at').execute();
  }

  async apiKeyByHash(keyHash: string): Promise<ApiKeyRecord | undefined> {
    return await this.db.selectFrom('api_keys').selectAll().where('key_hash', '=', keyHash).executeTakeFirst();
  }

  async touchApiKey(id: string, at: string): Promise<void> {
    await this.db.updateTable('api_keys').set({ last_used_at: at }).where('id', '=', id).execute();
  }

  /** True when a key was removed. */
  async deleteApiKey(id: string): Promise<boolean> {
    const result = await this.db.deleteFrom('api_keys').where('id', '=', id).executeTakeFirst();
    return result.numDeletedRows > 0n;
  }
}
