// `capsule workspace push ID [DIR] [--to PATH] [--branch REF]`: copies a git
// repository's tracked and untracked-but-not-ignored files (or a ref's) into a sandbox as one tar stream
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

const MAX_GIT_OUTPUT_BYTES = 256 * 1024 * 1024;

/** Path (relative, `/`-separated) to `MODE:BLOB` for a file, `link:BLOB` for a symlink; BLOB is git's id of the bytes. */
export type WorkspaceManifest = Record<string, string>;

/** A manifest and the bytes a push of each of its files would send. */
interface WorkspaceSource {
  manifest: WorkspaceManifest;
  sizes: Map<string, number>;
}

const git = (dir: string, args: string[]) =>
  promisify(execFile)('git', ['-C', dir, ...args], { maxBuffer: MAX_GIT_OUTPUT_BYTES, encoding: 'buffer' }).catch(
    (error: { stderr?: Buffer }) => {
      throw new CapsuleError('invalid_argument', `git ${args[0]} in ${dir} failed: ${(error.stderr ?? '').toString().trim()}`, {
        hint: 'push a git work tree (or `git init` it first), and name a ref it has',
      });
    },
  );

/** What git would commit from `dir`: tracked files and untracked ones not ignored, as they are on disk now. */
export async function workspaceFiles(dir: string): Promise<string[]> {
  const { stdout } = await git(dir, ['ls-files', '-z', '--cached', '--others', '--exclude-standard']);
  // A tracked file deleted from the work tree is listed too; so is a submodule (a directory): both are left out below.
  return [
    ...new Set(
      stdout
        .toString()
        .split('\0')
        .filter((name) => name !== ''),
    ),
  ].sort();
}

/** Git's id of a blob (what `git hash-object` prints): a work-tree file and a ref's copy of it compare equal. */
async function blobId(size: number, chunks: AsyncIterable<Buffer> | Buffer[]): Promise<string> {
  const hash = createHash('sha1').update(`blob ${size}\0`);
  for await (const chunk of chunks) hash.update(chunk);
  return hash.digest('hex');
}

/** The manifest of `names` in the work tree `dir`, modes as they are on disk. */
export async function manifestOf(dir: string, names: readonly string[]): Promise<WorkspaceSource> {
  const manifest: WorkspaceManifest = {};
  const sizes = new Map<string, number>();
  for (const name of names) {
    const file = path.join(dir, name);
    const stats = await fs.lstat(file).catch(() => undefined);
    if (stats?.isSymbolicLink()) {
      const target = await fs.readlink(file, { encoding: 'buffer' });
      manifest[name] = `link:${await blobId(target.length, [target])}`;
    } else if (stats?.isFile()) {
      manifest[name] = `${(stats.mode & 0o7777).toString(8)}:${await blobId(stats.size, createReadStream(file))}`;
      sizes.set(name, stats.size);
    }
  }
  return { manifest, sizes };
}

/** The manifest of the files of `ref` (below `dir`, as git archive sends them: 644 or 755 by git's own mode). */
export async function manifestOfRef(dir: string, ref: string): Promise<WorkspaceSource> {
  const { stdout } = await git(dir, ['ls-tree', '-r', '-l', '-z', ref]);
  const manifest: WorkspaceManifest = {};
  const sizes = new Map<string, number>();
  for (const entry of stdout.toString().split('\0')) {
    const match = /^(\d+) blob ([0-9a-f]+) +(-|\d+)\t(.+)$/s.exec(entry);
    if (!match) continue; // a submodule (a commit), or the empty tail
    const [, mode, id, size, name] = match as unknown as [string, string, string, string, string];
    manifest[name] = mode === '120000' ? `link:${id}` : `${mode === '100755' ? '755' : '644'}:${id}`;
    if (size !== '-') sizes.set(name, Number(size));
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

/** Beyond this many changed paths, a ref's archive is sent whole rather than named path by path on git's command line. */
const MAX_ARCHIVE_PATHSPECS = 1000;

/**
 * A tar stream of `names` (relative to `dir`), symlinks as symlinks: the host's
 * GNU tar reading the work tree, or `git archive` reading `ref`.
 */
function tarStream(dir: string, names: readonly string[], ref: string | undefined) {
  const [command, args] =
    ref === undefined
      ? ['tar', ['-c', '-f', '-', '-C', dir, '--no-recursion', '--null', '-T', '-']]
      : [
          'git',
          ['-C', dir, '-c', 'tar.umask=022', '--literal-pathspecs', 'archive', '--format=tar', ref, '--'].concat(
            names.length <= MAX_ARCHIVE_PATHSPECS ? names : [],
          ),
        ];
  const child = spawn(command as string, args as string[], { stdio: ['pipe', 'pipe', 'pipe'] });
  let stderr = '';
  child.stderr.setEncoding('utf8').on('data', (chunk: string) => (stderr = (stderr + chunk).slice(-2000)));
  child.stdin.end(ref === undefined ? names.map((name) => `${name}\0`).join('') : '');
  const done = new Promise<void>((resolve, reject) => {
    child.once('error', reject);
    child.once('close', (code) =>
      code === 0 ? resolve() : reject(new CapsuleError('invalid_argument', `${command} failed: ${stderr.trim()}`)),
    );
  });
  return { stream: child.stdout, done };
}

/** Unpacks the sent tar (modes kept) and removes what is gone; paths come as arguments, never through the shell's parser. */
const UNPACK_SCRIPT =
  'set -e; to=$1; tar=$2; shift 2; mkdir -p "$to"; cd "$to"; if [ -n "$tar" ]; then tar -x -p -f "$tar"; rm -f "$tar"; fi; [ $# -eq 0 ] || rm -f -- "$@"';

export interface PushOptions {
  /** The folder in the sandbox, absolute. */
  to: string;
  /** The sandbox user who owns what is pushed. */
  user: string;
  /** A ref whose files are sent instead of the work tree's. */
  branch?: string | undefined;
}

/** The base template's user, and a source folder in its home. */
export const defaultPushOptions: PushOptions = { to: '/home/user/src', user: 'user' };

/** Makes `options.to` in the sandbox match the repository at `dir` (its work tree, or `options.branch`); a line on stderr says what was sent. */
export async function pushWorkspace(context: CliContext, sandbox: Sandbox, dir: string, options: PushOptions): Promise<void> {
  const root = path.resolve(dir);
  if (!path.posix.isAbsolute(options.to)) throw new CapsuleError('invalid_argument', `--to must be an absolute path, got ${options.to}`);
  // Everything is written and unpacked as this user, so the files are theirs.
  const as = { user: options.user };
  const { manifest, sizes } =
    options.branch !== undefined
      ? await manifestOfRef(root, options.branch)
      : await context.progress.step('Hashing the work tree', async () => manifestOf(root, await workspaceFiles(root)));
  const { send, remove } = workspaceChanges(await previousManifest(sandbox, options.to, as), manifest);
  if (send.length === 0 && remove.length === 0) {
    process.stderr.write(`${options.to} in ${sandbox.id} is up to date (${Object.keys(manifest).length} files)\n`);
    return;
  }
  const total = send.reduce((sum, name) => sum + (sizes.get(name) ?? 0), 0);
  const remoteTar = send.length > 0 ? `/tmp/.capsule-workspace-${randomBytes(8).toString('hex')}.tar` : '';
  if (send.length > 0) {
    const tar = tarStream(root, send, options.branch);
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
}

async function pushAction(idOrName: string, dir: string, options: PushOptions, command: Command): Promise<void> {
  const context = CliContext.of(command);
  await context.daemonClient();
  const sandbox = await Sandbox.connect(idOrName, context.connection);
  try {
    await pushWorkspace(context, sandbox, dir, options);
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
          .option('--to <path>', 'the folder in the sandbox', defaultPushOptions.to)
          .option('-u, --user <user>', 'the sandbox user who owns the files', defaultPushOptions.user)
          .option('-b, --branch <ref>', "send the files of this branch, tag or commit instead of the work tree's")
          .action(pushAction),
      ),
    );
}
