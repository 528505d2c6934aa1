// Snapshots through QEMU's migration stream, written to and read from a file
// (QEMU 7.2 has no file: URI, so `exec:cat`). With x-ignore-shared, RAM that
// lives in a shared memory file is not copied: a template's snapshot is then
// only its device state (tens of KiB), and a restore maps the memory file.
import { CapsuleError } from '../errors.js';
import type { QmpClient, QmpEvent } from './qmp.js';

const MIGRATION_TIMEOUT_MS = 120_000;

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
}

const finished = (event: QmpEvent) => event.event === 'MIGRATION' && (event.data?.status === 'completed' || event.data?.status === 'failed');

async function waitForMigration(qmp: QmpClient, what: string, start: () => Promise<unknown>): Promise<void> {
  const done = qmp.waitForEvent(finished, MIGRATION_TIMEOUT_MS);
  done.catch(() => undefined);
  await start();
  const event = await done;
  if (event.data?.status !== 'completed') {
    const info = await qmp.execute<{ 'error-desc'?: string }>('query-migrate').catch(() => ({}) as { 'error-desc'?: string });
    throw new Error(`${what} failed${info['error-desc'] ? `: ${info['error-desc']}` : ''}`);
  }
}

/** Pauses the VM and writes its state to `stateFile`; RAM in a shared memory file is left out when `ignoreShared`. */
export async function saveVmState(qmp: QmpClient, stateFile: string, ignoreShared: boolean): Promise<void> {
  await qmp.execute('stop');
  await enableCapabilities(qmp, ignoreShared);
  await waitForMigration(qmp, 'saving the VM state', () => qmp.execute('migrate', { uri: `exec:cat > ${shellQuotePath(stateFile)}` }));
}

/**
 * Loads a VM started with `-incoming defer` from `stateFile`, then lets it
 * run; `beforeRun` sees the loaded VM before the guest executes anything.
 */
export async function restoreVmState(qmp: QmpClient, stateFile: string, ignoreShared: boolean, beforeRun?: () => Promise<void>): Promise<void> {
  await enableCapabilities(qmp, ignoreShared);
  await waitForMigration(qmp, 'restoring the VM state', () => qmp.execute('migrate-incoming', { uri: `exec:cat ${shellQuotePath(stateFile)}` }));
  await beforeRun?.();
  // A snapshot taken of a stopped VM restores stopped; the guest must run for its fix-ups.
  await qmp.execute('cont');
}
