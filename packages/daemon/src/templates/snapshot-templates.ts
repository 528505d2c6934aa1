// Templates made by `capsule snapshot`: a sandbox's frozen state (memory file,
// device state, flattened disk) in a folder of the daemon's state folder,
// described by its snapshot.json and recorded in the store. Loaded by name,
// never rebuilt by booting: there is nothing to boot, the state is a moment of
// a sandbox's life. Freezing the sandbox is sandboxes/snapshot.ts's job, never this file's.
import fs from 'node:fs';
import path from 'node:path';
import { CapsuleError, errorMessage } from '../errors.js';
import { writeFileAtomic } from '../guest/files.js';
import type { Store, TemplateRecord } from '../store/store.js';
import { recordResourceEvent } from '../store/events.js';
import { deleteTemplate, insertSnapshotTemplate } from '../store/templates.js';
import type { WarmSnapshot } from './warm-snapshot.js';

const SNAPSHOT_FILE = 'snapshot.json';

/** What snapshot.json says: the warm snapshot's description, the QEMU that took it and the sandbox it is a moment of. */
export type SnapshotTemplateMeta = Omit<WarmSnapshot, 'dir' | 'memory' | 'state' | 'disk'> & { qemuVersion: string; sourceSandbox: string };

/** Writes a snapshot template's description into its (still temporary) folder. */
export function writeSnapshotTemplateMeta(dir: string, meta: SnapshotTemplateMeta): void {
  writeFileAtomic(path.join(dir, SNAPSHOT_FILE), JSON.stringify(meta, null, 2), 0o600);
}

/**
 * Reads a snapshot template's warm snapshot. Throws a clear error when its files
 * are missing or were taken by another QEMU (a restore would fail or misbehave).
 */
export function loadSnapshotTemplate(dir: string, qemuVersion: string): WarmSnapshot {
  let meta: SnapshotTemplateMeta;
  try {
    meta = JSON.parse(fs.readFileSync(path.join(dir, SNAPSHOT_FILE), 'utf8')) as SnapshotTemplateMeta;
  } catch (err) {
    throw new Error(`the snapshot's description ${path.join(dir, SNAPSHOT_FILE)} cannot be read: ${errorMessage(err)}`);
  }
  const files = { dir, memory: path.join(dir, 'memory'), state: path.join(dir, 'state'), disk: path.join(dir, 'disk.qcow2') };
  const missing = [files.memory, files.state, files.disk].filter((f) => !fs.existsSync(f));
  if (missing.length > 0) throw new Error(`the snapshot is missing ${missing.join(', ')}`);
  if (meta.qemuVersion !== qemuVersion)
    throw new Error(`the snapshot was taken with QEMU ${meta.qemuVersion}; this host runs ${qemuVersion}`);
  return { ...meta, ...files };
}

/**
 * Records a snapshot template whose folder `dir` is complete; removes the folder
 * when it cannot be recorded (another snapshot took the name meanwhile: `name_taken`).
 */
export async function recordSnapshotTemplate(store: Store, record: TemplateRecord, sourceSandbox: string, dir: string): Promise<void> {
  try {
    await insertSnapshotTemplate(store, record, sourceSandbox, dir);
  } catch (err) {
    fs.rmSync(dir, { recursive: true, force: true });
    // Another snapshot took the name while this one was being written.
    if (await store.getTemplate(record.name))
      throw new CapsuleError('name_taken', `a template named "${record.name}" already exists`, { hint: 'pick another name' });
    throw err;
  }
  await recordResourceEvent(store, {
    type: 'template.created',
    template: record.name,
    reason: 'snapshot',
    message: `from sandbox ${sourceSandbox}`,
  });
}

/** Removes a snapshot template's rows and files (sandboxes made from it run on: their memory is mapped, their disk open). */
export async function removeSnapshotTemplate(store: Store, name: string, dir: string): Promise<void> {
  await deleteTemplate(store, name);
  fs.rmSync(dir, { recursive: true, force: true });
}
