// Who may read the state folder: it holds the database (API key hashes, sandbox
// env vars), the daemon's secret and its logs, so the folder is 0700 and those
// files 0600. At each start the daemon takes away any looser bits an older
// daemon, a CLI or a hand left, and says so. It only ever removes permission
// bits: it never widens a mode and never changes an owner.
import fs from 'node:fs';
import path from 'node:path';
import type { Logger } from './log.js';

export const STATE_DIR_MODE = 0o700;
export const PRIVATE_FILE_MODE = 0o600;

/** The TCP listener's self-signed certificate and its key (api/tls.ts). */
export const GENERATED_CERT_FILE = 'tls.crt';
export const GENERATED_KEY_FILE = 'tls.key';

/** Files directly in the state folder that only the daemon's user may read. */
const PRIVATE_FILES = [
  'capsule.db',
  'capsule.db-wal',
  'capsule.db-shm',
  'capsule.db-journal',
  'daemon.secret',
  'capsuled.lock',
  'capsuled.log',
  'capsuled.log.1',
  GENERATED_CERT_FILE,
  GENERATED_KEY_FILE,
];

const octal = (mode: number) => mode.toString(8).padStart(4, '0');

/** Creates the state folder owner-only, or removes group and other bits from it and its private files. */
export function tightenStateModes(stateDir: string, log: Logger): void {
  fs.mkdirSync(stateDir, { recursive: true, mode: STATE_DIR_MODE });
  tighten(stateDir, STATE_DIR_MODE, log);
  for (const name of PRIVATE_FILES) tighten(path.join(stateDir, name), PRIVATE_FILE_MODE, log);
}

function tighten(file: string, allowed: number, log: Logger): void {
  let stat: fs.Stats;
  try {
    stat = fs.lstatSync(file);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return;
    throw err;
  }
  // chmod follows a link: whatever one points at is not the daemon's to change.
  if (stat.isSymbolicLink()) return;
  const mode = stat.mode & 0o7777;
  const tightened = mode & allowed;
  if (tightened === mode) return;
  fs.chmodSync(file, tightened);
  log.warn({ file, from: octal(mode), to: octal(tightened) }, `tightened the mode of ${file} from ${octal(mode)} to ${octal(tightened)}`);
}
