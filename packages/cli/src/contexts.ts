// Contexts, as docker's and kubectl's: named daemons on other hosts (address,
// API key, the certificate fingerprint pinned when the context was added),
// and which one commands use. Kept in one file of this user's own (0600 in a
// 0700 folder), since it holds API keys; never shared with the daemon.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { InvalidArgumentError } from '@capsule/sdk';

export interface DaemonContext {
  /** `https://host:port` (or `http://` for a daemon serving plain HTTP). */
  host: string;
  apiKey?: string;
  /** SHA-256 of the daemon's certificate, pinned at `context add`: another one is refused as a possible impersonation. */
  fingerprintSha256?: string;
}

interface ContextFile {
  /** The context commands use when none is named; absent: this host's daemon. */
  current?: string;
  contexts: Record<string, DaemonContext>;
}

/** The name of this host's own daemon (its unix socket), which is never stored. */
export const LOCAL_CONTEXT = 'default';
export const CONTEXT_ENV = 'CAPSULE_CONTEXT';
const NAME = /^[a-z0-9][a-z0-9_.-]{0,62}$/;

export function contextsFile(env: NodeJS.ProcessEnv = process.env): string {
  const base = env.XDG_CONFIG_HOME || path.join(os.homedir(), '.config');
  return path.join(base, 'capsule', 'contexts.json');
}

export function checkContextName(name: string): string {
  if (name === LOCAL_CONTEXT || !NAME.test(name))
    throw new InvalidArgumentError('invalid_argument', `"${name}" cannot name a context`, {
      hint: `lower-case letters, digits, _ . - (and not "${LOCAL_CONTEXT}", this host's daemon)`,
    });
  return name;
}

export function readContexts(file = contextsFile()): ContextFile {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return { contexts: {} };
    throw error;
  }
  const parsed = JSON.parse(text) as Partial<ContextFile>;
  if (typeof parsed !== 'object' || parsed === null || typeof parsed.contexts !== 'object' || parsed.contexts === null)
    throw new InvalidArgumentError('invalid_argument', `${file} is not a contexts file`, { hint: 'remove it and add the contexts again' });
  return { ...(typeof parsed.current === 'string' && { current: parsed.current }), contexts: parsed.contexts };
}

/** Written whole to a temporary name and renamed: a crash leaves the old file or the new one. */
export function writeContexts(contexts: ContextFile, file = contextsFile()): void {
  fs.mkdirSync(path.dirname(file), { recursive: true, mode: 0o700 });
  fs.chmodSync(path.dirname(file), 0o700);
  const temp = `${file}.${process.pid}.tmp`;
  fs.writeFileSync(temp, `${JSON.stringify(contexts, null, 2)}\n`, { mode: 0o600 });
  fs.renameSync(temp, file);
}

/**
 * The context a command uses: `--context`, else $CAPSULE_CONTEXT, else the
 * current one; undefined for this host's daemon.
 */
export function selectedContext(
  flag: string | undefined,
  env: NodeJS.ProcessEnv = process.env,
): { name: string; context: DaemonContext } | undefined {
  const name = flag ?? (env[CONTEXT_ENV] || undefined);
  const file = readContexts();
  const chosen = name ?? file.current;
  if (chosen === undefined || chosen === LOCAL_CONTEXT) return undefined;
  const context = file.contexts[chosen];
  if (!context)
    throw new InvalidArgumentError('invalid_argument', `there is no context "${chosen}"`, {
      hint: `list them with \`capsule context ls\`; add one with \`capsule context add ${chosen} --host https://HOST:PORT --key KEY\``,
    });
  return { name: chosen, context };
}
