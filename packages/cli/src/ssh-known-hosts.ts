// Capsule's own known_hosts, for `capsule ssh` and `ssh NAME.capsule`: the host
// keys the daemon learnt from each sandbox over its agent channel, pinned before
// the first connection. One file of this user's (0600 in a 0700 folder), never
// ~/.ssh/known_hosts. A key other than the pinned one is refused, never replaced.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { CapsuleError } from '@capsule/sdk';

/** What `ssh NAME.capsule` is spelt with: ssh-config's `Host *.capsule` block matches it. */
export const SSH_HOST_SUFFIX = '.capsule';

export function capsuleSshDir(env: NodeJS.ProcessEnv = process.env): string {
  const base = env.XDG_CONFIG_HOME || path.join(os.homedir(), '.config');
  return path.join(base, 'capsule', 'ssh');
}

export function knownHostsFile(env: NodeJS.ProcessEnv = process.env): string {
  return path.join(capsuleSshDir(env), 'known_hosts');
}

/** The sandbox id or name a host name of ssh's stands for: `web.capsule` is `web`. */
export function sandboxOfHost(host: string): string {
  return host.endsWith(SSH_HOST_SUFFIX) ? host.slice(0, -SSH_HOST_SUFFIX.length) : host;
}

/** One line: `HOST TYPE BASE64 SANDBOX_ID` (ssh reads the id as the key's comment; removal finds lines by it). */
interface Entry {
  host: string;
  key: string;
  sandboxId: string | undefined;
}

function parseLine(line: string): Entry | undefined {
  const [host, type, blob, sandboxId] = line.trim().split(/\s+/);
  if (host === undefined || host.startsWith('#') || type === undefined || blob === undefined) return undefined;
  return { host, key: `${type} ${blob}`, sandboxId };
}

function readLines(file: string): string[] {
  try {
    return fs
      .readFileSync(file, 'utf8')
      .split('\n')
      .filter((line) => line.trim() !== '');
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw error;
  }
}

/** Written whole to a temporary name and renamed, 0600 in a 0700 folder: a crash leaves the old file or the new one. */
function writeLines(file: string, lines: string[]): void {
  fs.mkdirSync(path.dirname(file), { recursive: true, mode: 0o700 });
  fs.chmodSync(path.dirname(file), 0o700);
  const temp = `${file}.${process.pid}.tmp`;
  fs.writeFileSync(temp, lines.map((line) => `${line}\n`).join(''), { mode: 0o600 });
  fs.renameSync(temp, file);
}

/**
 * Pins `hostKeys` for `host` (what ssh connects to, e.g. `web.capsule`) unless
 * keys are pinned for it already; those must be the same keys, or this throws
 * `ssh_host_key_mismatch`: something other than the sandbox pinned answers.
 */
export function pinHostKeys(file: string, host: string, sandboxId: string, hostKeys: readonly string[]): void {
  const lines = readLines(file);
  const pinned = lines.map(parseLine).filter((entry): entry is Entry => entry?.host === host);
  if (pinned.length === 0) {
    writeLines(file, [...lines, ...hostKeys.map((key) => `${host} ${key} ${sandboxId}`)]);
    return;
  }
  const pinnedKeys = new Set(pinned.map((entry) => entry.key));
  if (hostKeys.length === pinnedKeys.size && hostKeys.every((key) => pinnedKeys.has(key))) return;
  const pinnedFor = pinned[0]?.sandboxId;
  throw new CapsuleError(
    'ssh_host_key_mismatch',
    `possible impersonation: ${host} (sandbox ${sandboxId}) presents SSH host key ${hostKeys[0] ?? '(none)'}, not the one pinned in ${file}` +
      (pinnedFor !== undefined && pinnedFor !== sandboxId ? ` for sandbox ${pinnedFor}` : ''),
    {
      hint:
        pinnedFor !== undefined && pinnedFor !== sandboxId
          ? `the name now belongs to another sandbox; if sandbox ${pinnedFor} is gone, remove the lines for ${host} from ${file}`
          : `nothing was sent to it; if you know why its key changed, remove the lines for ${host} from ${file}`,
    },
  );
}

/**
 * Removes the pins of a sandbox, named by id or name: the lines for
 * `ID_OR_NAME.capsule`, and every line of the sandbox(es) those were for.
 */
export function forgetHostKeys(file: string, idOrName: string): number {
  const lines = readLines(file);
  const host = `${idOrName}${SSH_HOST_SUFFIX}`;
  const sandboxIds = new Set([idOrName]);
  for (const entry of lines.map(parseLine)) if (entry?.host === host && entry.sandboxId !== undefined) sandboxIds.add(entry.sandboxId);
  const kept = lines.filter((line) => {
    const entry = parseLine(line);
    return !(entry && (entry.host === host || (entry.sandboxId !== undefined && sandboxIds.has(entry.sandboxId))));
  });
  if (kept.length !== lines.length) writeLines(file, kept);
  return lines.length - kept.length;
}
