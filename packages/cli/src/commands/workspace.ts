// `capsule workspace push ID [DIR] [--to PATH]`: copies a git repository's
// tracked and untracked-but-not-ignored files into a sandbox as one tar stream
// (modes and symlinks kept), then unpacks it there as the sandbox's user. The
// manifest of what was sent (a hash per file) stays in the sandbox, so the next
// push sends only what changed and removes what is gone. Never sends .git or
// an ignored file, and never deletes a path the manifest did not list.
import { execFile, spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { createReadStream } from 'node:fs';
import fs from 'node:fs/promises';
import path from 'node:path';
import { promisify } from 'node:util';
import { CapsuleError, NotFoundError, Sandbox } from '@capsule/sdk';
import { Command } from 'commander';
import { CliContext } from '../cli-context.js';
import { formatBytes } from '../human-format.js';
import { addGlobalOptions } from './global-options.js';

/** The default destination: what the dev boxes call their source folder. */
const DEFAULT_DESTINATION = '/home/user/src';
const MAX_GIT_OUTPUT_BYTES = 256 * 1024 * 1024;

/** Path (relative, `/`-separated) to `MODE:sha256` for a file, `link:TARGET` for a symlink. */
export type WorkspaceManifest = Record<string, string>;

/** What git would commit from `dir`: tracked files and untracked ones not ignored, as they are on disk now. */
export async function workspaceFiles(dir: string): Promise<string[]> {
  const { stdout } = await promisify(execFile)('git', ['-C', dir, 'ls-files', '-z', '--cached', '--others', '--exclude-standard'], {
    maxBuffer: MAX_GIT_OUTPUT_BYTES,
  }).catch((error: { stderr?: string }) => {
    throw new CapsuleError('invalid_argument', `${dir} is not a git work tree: ${(error.stderr ?? '').trim()}`, {
      hint: 'push the top of a git repository (or `git init` it first)',
    });
  });
  // A tracked file deleted from the work tree is listed too; so is a submodule (a directory): both are left out below.
  return [...new Set(stdout.split('\0').filter((name) => name !== ''))].sort();
}

async function sha256Of(file: string): Promise<string> {
  const hash = createHash('sha256');
  for await (const chunk of createReadStream(file)) hash.update(chunk as Buffer);
  return hash.digest('hex');
}

/** The manifest of `names` under `dir`, with the bytes a push of each would send. */
export async function manifestOf(
  dir: string,
  names: readonly string[],
): Promise<{ manifest: WorkspaceManifest; sizes: Map<string, number> }> {
  const manifest: WorkspaceManifest = {};
  const sizes = new Map<string, number>();
  for (const name of names) {
    const file = path.join(dir, name);
    const stats = await fs.lstat(file).catch(() => undefined);
    if (stats?.isSymbolicLink()) manifest[name] = `link:${await fs.readlink(file)}`;
    else if (stats?.isFile()) {
      manifest[name] = `${(stats.mode & 0o7777).toString(8)}:${await sha256Of(file)}`;
      sizes.set(name, stats.size);
    }
  }
  return { manifest, sizes };
}

/** What a push must send (new or changed) and remove (gone since the last push). */
export function workspaceChanges(previous: WorkspaceManifest, current: WorkspaceManifest): { send: string[]; remove: string[] } {
  return {
    send: Object.keys(current).filter((name) => previous[name] !== current[name]),
    remove: Object.keys(previous).filter((name) => !(name in current)),
  };
}

/** Where the manifest of a push to `destination` is kept, relative to the user's home in the sandbox. */
function manifestPath(destination: string): string {
  return `.cache/capsule/workspace-${createHash('sha256').update(destination).digest('hex').slice(0, 16)}.json`;
}

async function previousManifest(sandbox: Sandbox, destination: string, as: { user: string }): Promise<WorkspaceManifest> {
  try {
    const parsed: unknown = JSON.parse(await sandbox.files.read(manifestPath(destination), as));
    return typeof parsed === 'object' && parsed !== null && !Array.isArray(parsed) ? (parsed as WorkspaceManifest) : {};
  } catch (error) {
    // None yet, or not one of ours: everything is sent again.
    if (error instanceof NotFoundError || error instanceof SyntaxError) return {};
    throw error;
  }
}

/** The host's GNU tar writing `names` (relative to `dir`) as a stream, symlinks as symlinks. */
function tarStream(dir: string, names: readonly string[]) {
  const child = spawn('tar', ['-c', '-f', '-', '-C', dir, '--no-recursion', '--null', '-T', '-'], { stdio: ['pipe', 'pipe', 'pipe'] });
  let stderr = '';
  child.stderr.setEncoding('utf8').on('data', (chunk: string) => (stderr = (stderr + chunk).slice(-2000)));
  child.stdin.end(names.map((name) => `${name}\0`).join(''));
  const done = new Promise<void>((resolve, reject) => {
    child.once('error', reject);
    child.once('close', (code) => (code === 0 ? resolve() : reject(new CapsuleError('invalid_argument', `tar failed: ${stderr.trim()}`))));
  });
  return { stream: child.stdout, done };
}

/** Unpacks the sent tar (modes kept) and removes what is gone; paths come as arguments, never through the shell's parser. */
const UNPACK_SCRIPT =
  'set -e; to=$1; tar=$2; shift 2; mkdir -p "$to"; cd "$to"; if [ -n "$tar" ]; then tar -x -p -f "$tar"; rm -f "$tar"; fi; [ $# -eq 0 ] || rm -f -- "$@"';

interface PushOptions {
  to: string;
  user: string;
}

async function pushAction(idOrName: string, dir: string, options: PushOptions, command: Command): Promise<void> {
  const context = CliContext.of(command);
  const root = path.resolve(dir);
  if (!path.posix.isAbsolute(options.to)) throw new CapsuleError('invalid_argument', `--to must be an absolute path, got ${options.to}`);
  await context.daemonClient();
  const sandbox = await Sandbox.connect(idOrName, context.connection);
  // Everything is written and unpacked as this user, so the files are theirs.
  const as = { user: options.user };
  try {
    const names = await workspaceFiles(root);
    const { manifest, sizes } = await context.progress.step(`Hashing ${names.length} files`, () => manifestOf(root, names));
    const { send, remove } = workspaceChanges(await previousManifest(sandbox, options.to, as), manifest);
    if (send.length === 0 && remove.length === 0) {
      process.stderr.write(`${options.to} in ${sandbox.id} is up to date (${Object.keys(manifest).length} files)\n`);
      return;
    }
    const total = send.reduce((sum, name) => sum + (sizes.get(name) ?? 0), 0);
    const remoteTar = send.length > 0 ? `/tmp/.capsule-workspace-${randomBytes(8).toString('hex')}.tar` : '';
    if (send.length > 0) {
      const tar = tarStream(root, send);
      await context.progress.step(`Sending ${send.length} changed files (${formatBytes(total)})`, async () => {
        await Promise.all([sandbox.files.write(remoteTar, tar.stream, as), tar.done]);
      });
    }
    await context.progress.step(`Unpacking into ${options.to}`, async () => {
      await sandbox.commands.run(['sh', '-c', UNPACK_SCRIPT, 'sh', options.to, remoteTar, ...remove], { ...as, timeoutMs: 0 });
    });
    await sandbox.files.write(manifestPath(options.to), JSON.stringify(manifest), as);
    const files = (count: number) => `${count} file${count === 1 ? '' : 's'}`;
    process.stderr.write(`${files(send.length)} sent, ${remove.length} removed: ${options.to} in ${sandbox.id} matches ${root}\n`);
  } finally {
    sandbox.client.close();
  }
}

export function workspaceCommand(): Command {
  return new Command('workspace')
    .description("Copy a git repository's files into a sandbox")
    .addCommand(
      addGlobalOptions(
        new Command('push')
          .description('Copy tracked and untracked-but-not-ignored files into a sandbox, modes and symlinks kept; again: only what changed')
          .argument('<sandbox>', 'sandbox id or name')
          .argument('[dir]', 'the repository (its work tree)', '.')
          .option('--to <path>', 'the folder in the sandbox', DEFAULT_DESTINATION)
          .option('-u, --user <user>', 'the sandbox user who owns the files', 'user')
          .action(pushAction),
      ),
    );
}
