// Schema migrations, applied in order at daemon start. Never edit a migration
// that has shipped: add a new one.
import { sql, type Kysely, type Migration } from 'kysely';

export const migrations: Record<string, Migration> = {
  '0001_sandboxes_and_templates': {
    async up(db: Kysely<unknown>) {
      await db.schema
        .createTable('sandboxes')
        .addColumn('id', 'text', (c) => c.primaryKey())
        .addColumn('name', 'text')
        .addColumn('template', 'text', (c) => c.notNull())
        .addColumn('state', 'text', (c) => c.notNull())
        .addColumn('state_reason', 'text', (c) => c.notNull())
        .addColumn('state_message', 'text')
        .addColumn('vcpus', 'integer', (c) => c.notNull())
        .addColumn('memory_mib', 'integer', (c) => c.notNull())
        .addColumn('accel', 'text', (c) => c.notNull())
        .addColumn('metadata', 'text', (c) => c.notNull())
        .addColumn('env', 'text', (c) => c.notNull())
        .addColumn('created_at', 'text', (c) => c.notNull())
        .addColumn('boot_ms', 'integer')
        .execute();
      // A name identifies one live sandbox; killed ones keep theirs for history.
      await sql`CREATE UNIQUE INDEX sandboxes_live_name ON sandboxes(name) WHERE name IS NOT NULL AND state != 'killed'`.execute(db);
      await db.schema.createIndex('sandboxes_state').on('sandboxes').column('state').execute();
      await db.schema
        .createTable('sandbox_events')
        .addColumn('id', 'integer', (c) => c.primaryKey().autoIncrement())
        .addColumn('sandbox_id', 'text', (c) => c.notNull().references('sandboxes.id').onDelete('cascade'))
        .addColumn('state', 'text', (c) => c.notNull())
        .addColumn('reason', 'text', (c) => c.notNull())
        .addColumn('message', 'text')
        .addColumn('at', 'text', (c) => c.notNull())
        .execute();
      await db.schema.createIndex('sandbox_events_sandbox').on('sandbox_events').column('sandbox_id').execute();
      await db.schema
        .createTable('templates')
        .addColumn('name', 'text', (c) => c.primaryKey())
        .addColumn('kernel', 'text', (c) => c.notNull())
        .addColumn('initramfs', 'text', (c) => c.notNull())
        .addColumn('kit', 'text', (c) => c.notNull())
        .addColumn('rootfs', 'text', (c) => c.notNull())
        .addColumn('default_vcpus', 'integer', (c) => c.notNull())
        .addColumn('default_memory_mib', 'integer', (c) => c.notNull())
        .addColumn('created_at', 'text', (c) => c.notNull())
        .execute();
    },
  },
  '0002_sandbox_timeouts': {
    async up(db: Kysely<unknown>) {
      await db.schema
        .alterTable('sandboxes')
        .addColumn('timeout_ms', 'integer', (c) => c.notNull().defaultTo(0))
        .execute();
      await db.schema.alterTable('sandboxes').addColumn('expires_at', 'text').execute();
      await db.schema.createIndex('sandboxes_expires_at').on('sandboxes').column('expires_at').execute();
    },
  },
  '0003_api_keys_and_timeout_action': {
    async up(db: Kysely<unknown>) {
      // What the reaper does when the timeout passes: `kill` or `pause`.
      await db.schema
        .alterTable('sandboxes')
        .addColumn('on_timeout', 'text', (c) => c.notNull().defaultTo('kill'))
        .execute();
      // Keys for API clients over TCP. Only a hash of each key is kept; the key is shown once, at creation.
      await db.schema
        .createTable('api_keys')
        .addColumn('id', 'text', (c) => c.primaryKey())
        .addColumn('name', 'text', (c) => c.notNull())
        .addColumn('key_hash', 'text', (c) => c.notNull().unique())
        .addColumn('mask', 'text', (c) => c.notNull())
        .addColumn('created_at', 'text', (c) => c.notNull())
        .addColumn('last_used_at', 'text')
        .execute();
    },
  },
  '0004_images': {
    async up(db: Kysely<unknown>) {
      // Images are kept by the digest of their linux/amd64 manifest; references point at them.
      await db.schema
        .createTable('images')
        .addColumn('digest', 'text', (c) => c.primaryKey())
        .addColumn('config_digest', 'text', (c) => c.notNull())
        .addColumn('layers', 'text', (c) => c.notNull())
        .addColumn('config', 'text', (c) => c.notNull())
        .addColumn('size_bytes', 'integer', (c) => c.notNull())
        .addColumn('source', 'text', (c) => c.notNull())
        .addColumn('created_at', 'text', (c) => c.notNull())
        .execute();
      await db.schema
        .createTable('image_refs')
        .addColumn('ref', 'text', (c) => c.primaryKey())
        .addColumn('digest', 'text', (c) => c.notNull().references('images.digest').onDelete('cascade'))
        .addColumn('updated_at', 'text', (c) => c.notNull())
        .execute();
      await db.schema.createIndex('image_refs_digest').on('image_refs').column('digest').execute();
      // A template built from an image or a Capsulefile, and the defaults its sandboxes get (Env, User, WorkingDir);
      // image_digest is the image it came from, if any (a build FROM a template has none).
      await db.schema
        .createTable('template_images')
        .addColumn('template', 'text', (c) => c.primaryKey().references('templates.name').onDelete('cascade'))
        .addColumn('image_digest', 'text', (c) => c.references('images.digest'))
        .addColumn('image_ref', 'text', (c) => c.notNull())
        .addColumn('env', 'text', (c) => c.notNull())
        .addColumn('user', 'text', (c) => c.notNull())
        .addColumn('workdir', 'text')
        .execute();
    },
  },
  '0005_network': {
    async up(db: Kysely<unknown>) {
      // Egress per sandbox: internet_access 0 cuts the guest's link; egress_allow/egress_deny are
      // JSON arrays of CIDRs (TAP mode only; empty: no list). Forks copy them, pause keeps them.
      await db.schema
        .alterTable('sandboxes')
        .addColumn('internet_access', 'integer', (c) => c.notNull().defaultTo(1))
        .execute();
      await db.schema
        .alterTable('sandboxes')
        .addColumn('egress_allow', 'text', (c) => c.notNull().defaultTo('[]'))
        .execute();
      await db.schema
        .alterTable('sandboxes')
        .addColumn('egress_deny', 'text', (c) => c.notNull().defaultTo('[]'))
        .execute();
      // TAP mode: the host-side addresses handed to a sandbox's network namespace, one slot each, never guessed.
      // A lease may exist before its sandbox row (a warm-pool VM); leases of no live sandbox are freed at start.
      await db.schema
        .createTable('network_leases')
        .addColumn('sandbox_id', 'text', (c) => c.primaryKey())
        .addColumn('slot', 'integer', (c) => c.notNull().unique())
        .addColumn('netns', 'text', (c) => c.notNull())
        .addColumn('host_ifname', 'text', (c) => c.notNull())
        .addColumn('host_address', 'text', (c) => c.notNull())
        .addColumn('netns_address', 'text', (c) => c.notNull())
        .addColumn('created_at', 'text', (c) => c.notNull())
        .execute();
    },
  },
  '0006_ports': {
    async up(db: Kysely<unknown>) {
      // Host ports a sandbox publishes (`-p 8080:80`). The listener is bound while the sandbox runs;
      // the row stays so a resume or a daemon restart binds the same host port again.
      await db.schema
        .createTable('sandbox_ports')
        .addColumn('sandbox_id', 'text', (c) => c.notNull().references('sandboxes.id').onDelete('cascade'))
        .addColumn('host_ip', 'text', (c) => c.notNull())
        .addColumn('host_port', 'integer', (c) => c.notNull())
        .addColumn('guest_port', 'integer', (c) => c.notNull())
        .addPrimaryKeyConstraint('sandbox_ports_pk', ['sandbox_id', 'host_ip', 'host_port'])
        .execute();
    },
  },
  '0007_templates_build': {
    async up(db: Kysely<unknown>) {
      // START and READY of a template (JSON argv, null for none), run in its VM before the warm snapshot;
      // source_kind says what made the template: `image` (template create) or `capsulefile` (template build).
      await db.schema.alterTable('template_images').addColumn('start_cmd', 'text').execute();
      await db.schema.alterTable('template_images').addColumn('ready_cmd', 'text').execute();
      await db.schema.alterTable('template_images').addColumn('ready_timeout_ms', 'integer').execute();
      await db.schema
        .alterTable('template_images')
        .addColumn('source_kind', 'text', (c) => c.notNull().defaultTo('image'))
        .execute();
    },
  },
  '0008_snapshots': {
    async up(db: Kysely<unknown>) {
      // A template made by `capsule snapshot` from a sandbox: its warm snapshot (memory, devices, a
      // flattened qcow2 disk) lives in `dir` and is loaded by name; it is never rebuilt by booting.
      await db.schema
        .createTable('template_snapshots')
        .addColumn('template', 'text', (c) => c.primaryKey().references('templates.name').onDelete('cascade'))
        .addColumn('source_sandbox', 'text', (c) => c.notNull())
        .addColumn('dir', 'text', (c) => c.notNull())
        .execute();
    },
  },
  '0009_desired_state': {
    async up(db: Kysely<unknown>) {
      // What the user last asked a sandbox to be, beside what it is: a host reboot brings back the running ones.
      await db.schema
        .alterTable('sandboxes')
        .addColumn('desired_state', 'text', (c) => c.notNull().defaultTo('running'))
        .execute();
    },
  },
  '0010_volumes': {
    async up(db: Kysely<unknown>) {
      // Volumes, their snapshots, and the sandboxes they are attached to. An attachment row stays with its sandbox for
      // history; whether it still holds the volume is the sandbox's state (live: starting, running,
      // paused, stopped), so a kill lets go without touching this table.
      await db.schema
        .createTable('volumes')
        .addColumn('name', 'text', (c) => c.primaryKey())
        .addColumn('size_bytes', 'integer', (c) => c.notNull())
        .addColumn('created_at', 'text', (c) => c.notNull())
        .execute();
      await db.schema
        .createTable('sandbox_volumes')
        .addColumn('sandbox_id', 'text', (c) => c.notNull().references('sandboxes.id').onDelete('cascade'))
        .addColumn('volume', 'text', (c) => c.notNull())
        .addColumn('position', 'integer', (c) => c.notNull())
        .addColumn('mount', 'text', (c) => c.notNull())
        .addColumn('read_only', 'integer', (c) => c.notNull())
        .addPrimaryKeyConstraint('sandbox_volumes_pk', ['sandbox_id', 'position'])
        .execute();
      await db.schema.createIndex('sandbox_volumes_volume').on('sandbox_volumes').column('volume').execute();
      await db.schema
        .createTable('volume_snapshots')
        .addColumn('volume', 'text', (c) => c.notNull().references('volumes.name').onDelete('cascade'))
        .addColumn('name', 'text', (c) => c.notNull())
        .addColumn('size_bytes', 'integer', (c) => c.notNull())
        .addColumn('created_at', 'text', (c) => c.notNull())
        .addPrimaryKeyConstraint('volume_snapshots_pk', ['volume', 'name'])
        .execute();
    },
  },
  '0011_events_and_webhooks': {
    async up(db: Kysely<unknown>) {
      // Template and image events for the event stream (sandbox events are sandbox_events); bounded by
      // store/events.ts (the newest 10,000 rows, none older than 30 days).
      await db.schema
        .createTable('resource_events')
        .addColumn('id', 'integer', (c) => c.primaryKey().autoIncrement())
        .addColumn('type', 'text', (c) => c.notNull())
        .addColumn('template', 'text')
        .addColumn('image', 'text')
        .addColumn('reason', 'text', (c) => c.notNull())
        .addColumn('message', 'text')
        .addColumn('at', 'text', (c) => c.notNull())
        .execute();
      // `events`: JSON array of types or families, empty for every event; the secret signs deliveries, so it is kept as it is.
      await db.schema
        .createTable('webhooks')
        .addColumn('id', 'text', (c) => c.primaryKey())
        .addColumn('url', 'text', (c) => c.notNull())
        .addColumn('secret', 'text', (c) => c.notNull())
        .addColumn('events', 'text', (c) => c.notNull())
        .addColumn('created_at', 'text', (c) => c.notNull())
        .execute();
      // One row per delivery, updated at each attempt; the newest 200 per webhook are kept.
      await db.schema
        .createTable('webhook_deliveries')
        .addColumn('id', 'integer', (c) => c.primaryKey().autoIncrement())
        .addColumn('webhook_id', 'text', (c) => c.notNull().references('webhooks.id').onDelete('cascade'))
        .addColumn('event_id', 'text', (c) => c.notNull())
        .addColumn('event_type', 'text', (c) => c.notNull())
        .addColumn('status', 'text', (c) => c.notNull())
        .addColumn('attempts', 'integer', (c) => c.notNull())
        .addColumn('http_status', 'integer')
        .addColumn('error', 'text')
        .addColumn('created_at', 'text', (c) => c.notNull())
        .addColumn('updated_at', 'text', (c) => c.notNull())
        .execute();
      await db.schema.createIndex('webhook_deliveries_webhook').on('webhook_deliveries').columns(['webhook_id', 'id']).execute();
    },
  },
  '0012_workloads': {
    async up(db: Kysely<unknown>) {
      await db.schema
        .createTable('workloads')
        .addColumn('name', 'text', (c) => c.primaryKey())
        .addColumn('source', 'text')
        .addColumn('spec', 'text', (c) => c.notNull())
        .addColumn('spec_hash', 'text', (c) => c.notNull())
        .addColumn('state', 'text', (c) => c.notNull())
        .addColumn('sandbox_id', 'text')
        .addColumn('sandbox_hash', 'text')
        .addColumn('restarts', 'integer', (c) => c.notNull())
        .addColumn('failures', 'integer', (c) => c.notNull())
        .addColumn('conditions', 'text', (c) => c.notNull())
        .addColumn('last_exit', 'text')
        .addColumn('created_at', 'text', (c) => c.notNull())
        .addColumn('updated_at', 'text', (c) => c.notNull())
        .execute();
      // Workload events share the template and image events' table (and its retention).
      await db.schema.alterTable('resource_events').addColumn('workload', 'text').execute();
    },
  },
  '0013_ssh_host_keys': {
    async up(db: Kysely<unknown>) {
      // JSON array of the SSH server's public host keys, learnt from the guest when the server first starts; null before.
      await db.schema.alterTable('sandboxes').addColumn('ssh_host_keys', 'text').execute();
    },
  },
  '0014_workload_replicas': {
    async up(db: Kysely<unknown>) {
      // A workload may run several sandboxes: what was kept of its one sandbox moves to a row per replica.
      await db.schema
        .createTable('workload_replicas')
        .addColumn('workload', 'text', (c) => c.notNull())
        .addColumn('slot', 'integer', (c) => c.notNull())
        .addColumn('sandbox_id', 'text')
        .addColumn('spec_hash', 'text', (c) => c.notNull())
        .addColumn('phase', 'text', (c) => c.notNull())
        .addColumn('message', 'text')
        .addColumn('restarts', 'integer', (c) => c.notNull())
        .addColumn('failures', 'integer', (c) => c.notNull())
        .addColumn('last_exit', 'text')
        .addColumn('created_at', 'text', (c) => c.notNull())
        .addColumn('updated_at', 'text', (c) => c.notNull())
        .addPrimaryKeyConstraint('workload_replicas_pk', ['workload', 'slot'])
        .execute();
      // Its phase from its conditions, so that a crash-looped workload stays so and a ready one is not reported starting.
      await sql`INSERT INTO workload_replicas
          (workload, slot, sandbox_id, spec_hash, phase, restarts, failures, last_exit, created_at, updated_at)
        SELECT name, 0, sandbox_id, COALESCE(sandbox_hash, spec_hash),
          CASE WHEN conditions LIKE '%"reason":"crash_loop"%' THEN 'crash_loop'
               WHEN conditions LIKE '%"type":"Ready","status":true%' THEN 'ready'
               WHEN state = 'stopped' THEN 'stopped'
               ELSE 'starting' END,
          restarts, failures, last_exit, created_at, updated_at
        FROM workloads`.execute(db);
      for (const column of ['sandbox_id', 'sandbox_hash', 'restarts', 'failures', 'last_exit'])
        await db.schema.alterTable('workloads').dropColumn(column).execute();
    },
  },
};
