// Snapshots through QEMU's migration stream, written to and read from a file
// (QEMU 7.2 has no file: URI, so `exec:cat`) or sent straight into another
// QEMU over a unix socket. With x-ignore-shared, RAM that lives in a shared
// memory file is not copied: a template's snapshot is then only its device
// state (tens of KiB), and a restore maps the memory file.
import { CapsuleError } from '../errors.js';
import type { QmpClient, QmpEvent } from './qmp.js';

const MIGRATION_TIMEOUT_MS = 120_000;
/**
 * QEMU throttles migration to 32 MiB/s by default, for live migration over a
 * network. Every migration here is of a stopped VM to a local file or
 * process, where the throttle only makes the guest wait: 365 MiB took 2.9 s
 * with it and 0.4 s without.
 */
const UNTHROTTLED = { 'max-bandwidth': 64 * 1024 * 1024 * 1024, 'downtime-limit': 60_000 };

/** Quotes a path for the shell QEMU runs exec: URIs in. */
export function shellQuotePath(file: string): string {
  if (!/^[\w./+@:=-]+$/.test(file)) throw new CapsuleError('invalid_argument', `unsupported characters in snapshot path ${file}`);
  return `'${file}'`;
}

async function enableCapabilities(qmp: QmpClient, ignoreShared: boolean): Promise<void> {
  await qmp.execute('migrate-set-capabilities', {
    capabilities: [
      { capability: 'x-ignore-shared', state: ignoreShared },
      { capability: 'events', state: true },
    ],
  });
  await qmp.execute('migrate-set-parameters', UNTHROTTLED);
}

const finished = (event: QmpEvent) =>
  event.event === 'MIGRATION' && (event.data?.status === 'completed' || event.data?.status === 'failed');

/** Waits for the MIGRATION event that ends what `start` began; throws with QEMU's reason when it failed. */
async function waitForMigration(qmp: QmpClient, what: string, start: () => Promise<unknown>): Promise<void> {
  const done = await startMigration(qmp, start);
  await done(what);
}

/** Starts a migration (errors of the command itself are thrown here); the result waits for its end. */
async function startMigration(qmp: QmpClient, start: () => Promise<unknown>): Promise<(what: string) => Promise<void>> {
  const done = qmp.waitForEvent(finished, MIGRATION_TIMEOUT_MS);
  done.catch(() => undefined);
  await start();
  return async (what) => {
    const event = await done;
    if (event.data?.status !== 'completed') {
      const info = await qmp.execute<{ 'error-desc'?: string }>('query-migrate').catch(() => ({}) as { 'error-desc'?: string });
      throw new Error(`${what} failed${info['error-desc'] ? `: ${info['error-desc']}` : ''}`);
    }
  };
}

/** Pauses the VM and writes its state to `stateFile`; RAM in a shared memory file is left out when `ignoreShared`. */
export async function saveVmState(qmp: QmpClient, stateFile: string, ignoreShared: boolean): Promise<void> {
  await qmp.execute('stop');
  await enableCapabilities(qmp, ignoreShared);
  await waitForMigration(qmp, 'saving the VM state', () => qmp.execute('migrate', { uri: `exec:cat > ${shellQuotePath(stateFile)}` }));
}

/** Loads a VM started with `-incoming defer` from `stateFile`; a state saved of a stopped VM leaves it stopped. */
export async function loadVmState(qmp: QmpClient, stateFile: string, ignoreShared: boolean): Promise<void> {
  await enableCapabilities(qmp, ignoreShared);
  await waitForMigration(qmp, 'restoring the VM state', () =>
    qmp.execute('migrate-incoming', { uri: `exec:cat ${shellQuotePath(stateFile)}` }),
  );
}

/**
 * Loads a VM started with `-incoming defer` from `stateFile`, then lets it
 * run; `beforeRun` sees the loaded VM before the guest executes anything.
 */
export async function restoreVmState(
  qmp: QmpClient,
  stateFile: string,
  ignoreShared: boolean,
  beforeRun?: () => Promise<void>,
): Promise<void> {
  await loadVmState(qmp, stateFile, ignoreShared);
  await beforeRun?.();
  // A snapshot taken of a stopped VM restores stopped; the guest must run for its fix-ups.
  await qmp.execute('cont');
}

/**
 * Moves the whole state of a VM into another QEMU started with `-incoming
 * defer`, over a unix socket: the source is stopped first and stays stopped
 * (its caller continues or ends it), the target ends up loaded and paused.
 */
export async function migrateBetween(source: QmpClient, target: QmpClient, socketPath: string): Promise<void> {
  const uri = `unix:${socketPath}`;
  await enableCapabilities(target, false);
  // The target listens once migrate-incoming has answered.
  const loaded = await startMigration(target, () => target.execute('migrate-incoming', { uri }));
  await source.execute('stop');
  await enableCapabilities(source, false);
  await waitForMigration(source, 'sending the VM state', () => source.execute('migrate', { uri }));
  await loaded('loading the VM state');
}
