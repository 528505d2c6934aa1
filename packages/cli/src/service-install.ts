// Installing capsuled as a systemd service: the unit with this host's real
// paths, a commented config file, and the systemctl calls that enable it; and
// the reverse. It never overwrites a config file, never removes state, and runs
// systemctl only on the real root of a host whose PID 1 is systemd.
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { CapsuleError } from '@capsule/sdk';
import { DEFAULT_DAEMON_CONFIG_FILE, defaultSocketPath, renderDaemonConfigTemplate } from '@capsule/protocol';
import { findCapsuledBinary } from './daemon-process.js';
import { renderServiceUnit } from './service-unit.js';

export const SERVICE_NAME = 'capsuled.service';
const UNIT_PATH = `/etc/systemd/system/${SERVICE_NAME}`;

/** A file the install writes; `keep`: it exists and is left as it is. */
export interface PlannedFile {
  path: string;
  content: string;
  mode: number;
  action: 'create' | 'update' | 'unchanged' | 'keep';
}

export interface InstallPlan {
  root: string;
  files: PlannedFile[];
  /** True when systemctl can be run: the real root, and systemd is PID 1. */
  systemd: boolean;
}

/** The host's paths under `root` (a test or packaging root; `/` for the host itself). */
function underRoot(root: string, hostPath: string): string {
  return path.join(root, hostPath);
}

/** Whether systemd is PID 1 under `root` (what sd_booted checks). */
export function systemdRunning(root = '/'): boolean {
  return fs.existsSync(underRoot(root, '/run/systemd/system'));
}

/**
 * Whether the service, not the CLI, should start the daemon behind
 * `socketPath`: its unit is installed, systemd runs, and the socket is the
 * host's default one (a private daemon on another socket is the CLI's to start).
 */
export function serviceOwnsDaemon(socketPath: string, root = '/'): boolean {
  return socketPath === defaultSocketPath({}) && systemdRunning(root) && serviceInstalled(root);
}

/** Whether `capsule daemon install` has put the unit under `root`. */
export function serviceInstalled(root = '/'): boolean {
  return fs.existsSync(unitPath(root));
}

/** capsuled's command line for ExecStart: real paths, with this node when capsuled is a .js file. */
export function daemonCommandLine(): string[] {
  const binary = findCapsuledBinary();
  if (binary === undefined)
    throw new CapsuleError('daemon_not_found', 'Cannot install the service: capsuled was not found', {
      hint: 'Install Capsule so that `capsuled` is on PATH (scripts/setup does), or set CAPSULED_BIN to its path',
    });
  let daemon: string;
  try {
    daemon = fs.realpathSync(binary);
  } catch (err) {
    throw new CapsuleError('daemon_not_found', `Cannot install the service: ${binary} cannot be resolved (${(err as Error).message})`, {
      hint: 'Point CAPSULED_BIN at the capsuled executable, or unset it to use `capsuled` on PATH',
    });
  }
  return /\.[cm]?js$/.test(daemon) ? [fs.realpathSync(process.execPath), daemon] : [daemon];
}

function plannedFile(file: string, content: string, mode: number, { keepExisting }: { keepExisting: boolean }): PlannedFile {
  let existing: string | undefined;
  try {
    existing = fs.readFileSync(file, 'utf8');
  } catch (err) {
    // Absent, or a path that cannot hold it: the write then fails and says so.
    const code = (err as NodeJS.ErrnoException).code;
    if (code !== 'ENOENT' && code !== 'ENOTDIR')
      throw new CapsuleError('service_install_failed', `Cannot read ${file}: ${(err as Error).message}`);
  }
  const action = existing === undefined ? 'create' : keepExisting ? 'keep' : existing === content ? 'unchanged' : 'update';
  return { path: file, content, mode, action };
}

/** What `install` writes under `root`: the unit (rewritten if it changed) and the config file (only if absent). */
export function planInstall(root: string): InstallPlan {
  return {
    root,
    files: [
      plannedFile(underRoot(root, UNIT_PATH), renderServiceUnit(daemonCommandLine()), 0o644, { keepExisting: false }),
      plannedFile(underRoot(root, DEFAULT_DAEMON_CONFIG_FILE), renderDaemonConfigTemplate(), 0o600, { keepExisting: true }),
    ],
    systemd: path.resolve(root) === '/' && systemdRunning(),
  };
}

/** Writes the plan's files (folders made as needed: root's, 0755). */
export function writeInstall(plan: InstallPlan): void {
  for (const file of plan.files) {
    if (file.action === 'keep' || file.action === 'unchanged') continue;
    try {
      writeAtomically(file);
    } catch (err) {
      throw new CapsuleError('service_install_failed', `Cannot write ${file.path}: ${(err as Error).message}`, {
        hint: (err as NodeJS.ErrnoException).code === 'EACCES' ? 'Run it as root' : undefined,
      });
    }
  }
}

/** Written beside and renamed: a unit or config file is never seen half-written. */
function writeAtomically(file: PlannedFile): void {
  fs.mkdirSync(path.dirname(file.path), { recursive: true, mode: 0o755 });
  const temporary = `${file.path}.tmp-${process.pid}`;
  fs.writeFileSync(temporary, file.content, { mode: file.mode });
  fs.chmodSync(temporary, file.mode);
  fs.renameSync(temporary, file.path);
}

/** The unit file `uninstall` removes under `root`. */
export function unitPath(root: string): string {
  return underRoot(root, UNIT_PATH);
}

/** Runs `systemctl ARGS` with its output on this terminal; throws when it fails. */
export function systemctl(args: string[]): void {
  const result = spawnSync('systemctl', args, { stdio: ['ignore', 'inherit', 'inherit'] });
  if (result.error || result.status !== 0)
    throw new CapsuleError(
      'service_failed',
      `systemctl ${args.join(' ')} failed: ${result.error?.message ?? `exit status ${result.status ?? result.signal}`}`,
      { hint: 'See `systemctl status capsuled` and `journalctl -u capsuled`' },
    );
}

/** Whether systemctl says `check` (is-active, is-enabled) of the service; false when it cannot tell. */
export function systemctlSays(check: 'is-active' | 'is-enabled'): boolean {
  return spawnSync('systemctl', [check, '--quiet', SERVICE_NAME], { stdio: 'ignore' }).status === 0;
}
