// `capsule cp SRC DST`: copies files and directory trees between this host and
// a sandbox, either way (`ID:/path` names the sandbox side), streamed, with
// modes kept. Like cp: into an existing directory the source keeps its name.
// Nothing the guest reports may place a file outside the destination.
import { createReadStream, createWriteStream } from 'node:fs';
import fs from 'node:fs/promises';
import path from 'node:path';
import { posix } from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { CapsuleError, InvalidArgumentError, NotFoundError, Sandbox, type EntryInfo } from '@capsule/sdk';
import { Command } from 'commander';
import { CliContext } from '../cli-context.js';
import { linkTargetFor, localPathFor, parseCopyLocation } from '../copy-location.js';
import { addGlobalOptions } from './global-options.js';

/** Files sent or fetched at once: enough to hide per-request latency, few enough not to swamp a TCG guest. */
const CONCURRENT_TRANSFERS = 4;
/** How deep a downloaded tree is listed (the agent bounds the entry count). */
const MAX_TREE_DEPTH = 4096;
/** Paths per `chmod` invocation in the sandbox. */
const PATHS_PER_CHMOD = 200;
/** What the agent gives a new file; anything else needs a chmod. */
const AGENT_FILE_MODE = 0o644;

interface CopyOptions {
  user?: string;
}

/** Runs `work` over `items`, at most `limit` at a time; the first failure stops the rest from starting. */
async function forEachLimited<T>(items: readonly T[], limit: number, work: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  let failed = false;
  const worker = async () => {
    while (!failed && next < items.length) {
      const item = items[next++] as T;
      try {
        await work(item);
      } catch (error) {
        failed = true;
        throw error;
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
}

function userOption(options: CopyOptions) {
  return options.user !== undefined ? { user: options.user } : {};
}

async function localInfo(file: string) {
  try {
    return await fs.lstat(file);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') throw new NotFoundError('not_found', `${file}: no such file or directory`);
    throw error;
  }
}

async function remoteInfo(sandbox: Sandbox, remotePath: string, options: CopyOptions): Promise<EntryInfo | undefined> {
  try {
    return await sandbox.files.getInfo(remotePath, userOption(options));
  } catch (error) {
    // Sandbox.connect checked that the sandbox exists: not found is about the path.
    if (error instanceof NotFoundError) return undefined;
    throw error;
  }
}

/** Sets modes in the sandbox with `chmod`, grouped by mode (one exec per group of paths). */
async function applyRemoteModes(sandbox: Sandbox, modes: Map<string, number>, options: CopyOptions): Promise<void> {
  const byMode = new Map<number, string[]>();
  for (const [file, mode] of modes) byMode.set(mode, [...(byMode.get(mode) ?? []), file]);
  for (const [mode, files] of byMode) {
    for (let index = 0; index < files.length; index += PATHS_PER_CHMOD) {
      await sandbox.commands.run(['chmod', mode.toString(8), '--', ...files.slice(index, index + PATHS_PER_CHMOD)], {
        ...userOption(options),
        timeoutMs: 0,
      });
    }
  }
}

async function upload(sandbox: Sandbox, source: string, destination: string, options: CopyOptions): Promise<void> {
  const info = await localInfo(source);
  const existing = await remoteInfo(sandbox, destination, options);
  const intoDirectory = existing?.type === 'dir' || destination.endsWith('/');
  const target = intoDirectory ? posix.join(destination, path.basename(path.resolve(source))) : destination;
  const modes = new Map<string, number>();
  const links: [target: string, link: string][] = [];
  const files: [local: string, remote: string][] = [];
  const directories: string[] = [];

  const visit = async (local: string, remote: string, stats: Awaited<ReturnType<typeof fs.lstat>>) => {
    const mode = Number(stats.mode) & 0o7777;
    if (stats.isSymbolicLink()) links.push([await fs.readlink(local), remote]);
    else if (stats.isFile()) {
      files.push([local, remote]);
      if (mode !== AGENT_FILE_MODE) modes.set(remote, mode);
    } else if (stats.isDirectory()) {
      directories.push(remote);
      modes.set(remote, mode);
      for (const name of (await fs.readdir(local)).sort())
        await visit(path.join(local, name), posix.join(remote, name), await fs.lstat(path.join(local, name)));
    } else process.stderr.write(`capsule: skipping ${local}: not a regular file, directory or symlink\n`);
  };
  if (!info.isDirectory() && !info.isFile() && !info.isSymbolicLink())
    throw new InvalidArgumentError('invalid_argument', `${source} is not a regular file, directory or symlink`);
  await visit(source, target, info);

  for (const directory of directories) await sandbox.files.makeDir(directory, userOption(options));
  await forEachLimited(files, CONCURRENT_TRANSFERS, async ([local, remote]) => {
    await sandbox.files.write(remote, createReadStream(local), userOption(options));
  });
  for (const [linkTarget, link] of links)
    await sandbox.commands.run(['ln', '-sfn', '--', linkTarget, link], { ...userOption(options), timeoutMs: 0 });
  await applyRemoteModes(sandbox, modes, options);
}

async function downloadFile(sandbox: Sandbox, remote: string, local: string, mode: number, options: CopyOptions): Promise<void> {
  const stream = await sandbox.files.read(remote, { ...userOption(options), format: 'stream' });
  // Written beside the target and renamed, so a failed copy never leaves a truncated file under its name.
  const temp = path.join(path.dirname(local), `.${path.basename(local)}.capsule-cp-${process.pid}`);
  try {
    await pipeline(
      Readable.fromWeb(stream as import('node:stream/web').ReadableStream<Uint8Array>),
      createWriteStream(temp, { mode: 0o600 }),
    );
    await fs.chmod(temp, mode & 0o7777);
    await fs.rename(temp, local);
  } catch (error) {
    await fs.rm(temp, { force: true });
    throw error;
  }
}

async function download(sandbox: Sandbox, source: string, destination: string, options: CopyOptions): Promise<void> {
  const info = await sandbox.files.getInfo(source, userOption(options));
  const localExisting = await fs.stat(destination).catch(() => undefined);
  const intoDirectory = localExisting?.isDirectory() === true || destination.endsWith('/');
  const target = intoDirectory ? path.join(destination, posix.basename(info.path)) : destination;
  if (info.isSymlink && info.symlinkTarget !== undefined) {
    await fs.rm(target, { force: true });
    await fs.symlink(info.symlinkTarget, target);
    return;
  }
  if (info.type === 'file') {
    await fs.mkdir(path.dirname(target), { recursive: true });
    return await downloadFile(sandbox, info.path, target, info.mode, options);
  }
  if (info.type !== 'dir') throw new InvalidArgumentError('invalid_argument', `${source} is not a regular file, directory or symlink`);

  const entries = await sandbox.files.list(info.path, { ...userOption(options), depth: MAX_TREE_DEPTH });
  const directories: [local: string, mode: number][] = [[target, info.mode]];
  const files: [remote: string, local: string, mode: number][] = [];
  const links: [linkTarget: string, local: string][] = [];
  for (const entry of entries) {
    const local = localPathFor(info.path, entry.path, target, path.join);
    if (local === undefined)
      throw new CapsuleError(
        'protocol_error',
        `the sandbox listed ${JSON.stringify(entry.path.slice(0, 200))}, which is not under ${info.path}`,
      );
    if (entry.isSymlink) {
      if (entry.symlinkTarget !== undefined) links.push([linkTargetFor(entry.symlinkTarget, entry.path, info.path), local]);
    } else if (entry.type === 'dir') directories.push([local, entry.mode]);
    else if (entry.type === 'file') files.push([entry.path, local, entry.mode]);
    else process.stderr.write(`capsule: skipping ${entry.path}: not a regular file, directory or symlink\n`);
  }
  // Directories writable while filling them; their own modes once they are full.
  for (const [local] of directories) await fs.mkdir(local, { recursive: true, mode: 0o700 });
  await forEachLimited(files, CONCURRENT_TRANSFERS, ([remote, local, mode]) => downloadFile(sandbox, remote, local, mode, options));
  // Links last: no file is ever written through a link this copy made.
  for (const [linkTarget, local] of links) {
    await fs.rm(local, { force: true });
    await fs.symlink(linkTarget, local);
  }
  for (const [local, mode] of directories.reverse()) await fs.chmod(local, mode & 0o7777);
}

/** A failure of this host's filesystem (EACCES, ENOSPC…) is the user's to fix, not a bug: said in one line with a hint. */
function asLocalFileError(error: unknown): unknown {
  const { code, syscall } = error as NodeJS.ErrnoException;
  if (error instanceof CapsuleError || typeof code !== 'string' || typeof syscall !== 'string') return error;
  return new CapsuleError('local_file_error', (error as Error).message, { hint: 'check the local path and its permissions', cause: error });
}

export function cpCommand(): Command {
  return addGlobalOptions(
    new Command('cp')
      .description('Copy files or directories between this host and a sandbox (ID:/path names the sandbox side), modes kept')
      .argument('<src>', 'what to copy: a local path or ID:/path')
      .argument('<dst>', 'where to: ID:/path or a local path; an existing directory receives SRC under its own name')
      .option('-u, --user <user>', 'the sandbox user who owns what is written (and reads what is copied)')
      .addHelpText(
        'after',
        '\nExamples:\n  capsule cp ./app sb_abc:/srv/        # upload a directory into /srv/app\n  capsule cp sb_abc:/var/log/app.log .  # download a file here',
      )
      .action(async (src: string, dst: string, options: CopyOptions, command: Command) => {
        const from = parseCopyLocation(src);
        const to = parseCopyLocation(dst);
        if ((from.kind === 'sandbox') === (to.kind === 'sandbox')) {
          command.error(
            from.kind === 'sandbox'
              ? 'error: copying from one sandbox to another is not supported'
              : 'error: one of SRC and DST must name a sandbox, as ID:/path',
            { exitCode: 2, code: 'capsule.usage' },
          );
        }
        const remote = from.kind === 'sandbox' ? from : (to as Extract<typeof to, { kind: 'sandbox' }>);
        if (remote.path === '') command.error(`error: give a path after "${remote.sandbox}:"`, { exitCode: 2, code: 'capsule.usage' });
        const context = CliContext.of(command);
        await context.daemonClient();
        const sandbox = await Sandbox.connect(remote.sandbox, context.connection);
        try {
          if (from.kind === 'local') await upload(sandbox, from.path, remote.path, options);
          else await download(sandbox, from.path, to.path, options);
        } catch (error) {
          throw asLocalFileError(error);
        } finally {
          sandbox.client.close();
        }
      }),
  );
}
