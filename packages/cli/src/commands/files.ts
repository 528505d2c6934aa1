// `capsule files ls|cat|rm ID PATH`: look at and remove files in a sandbox.
// `cat` streams raw bytes to stdout at the pace stdout takes them.
import { Readable } from 'node:stream';
import type { ReadableStream as WebReadableStream } from 'node:stream/web';
import { pipeline } from 'node:stream/promises';
import { Sandbox } from '@capsule/sdk';
import { Command } from 'commander';
import { CliContext } from '../cli-context.js';
import { fileTable } from '../human-format.js';
import { parseDepth } from '../option-parsers.js';
import { addGlobalOptions } from './global-options.js';
import { addOutputOptions, printOutput, type OutputOptions } from '../output-format.js';

/** Runs `work` with the named sandbox, and lets go of its connections afterwards. */
export async function withSandbox<T>(command: Command, idOrName: string, work: (sandbox: Sandbox) => Promise<T>): Promise<T> {
  const context = CliContext.of(command);
  await context.daemonClient();
  const sandbox = await Sandbox.connect(idOrName, context.connection);
  try {
    return await work(sandbox);
  } finally {
    sandbox.client.close();
  }
}

function userOption(options: { user?: string }) {
  return options.user !== undefined ? { user: options.user } : {};
}

function lsCommand(): Command {
  return addGlobalOptions(
    addOutputOptions(new Command('ls'))
      .description('List a directory in a sandbox (or describe one file)')
      .argument('<sandbox>', 'sandbox id or name')
      .argument('[path]', "directory or file; relative paths are under the user's home", '/')
      .option('-d, --depth <n>', 'also list this many levels below the directory', parseDepth, 1)
      .option('-u, --user <user>', 'the sandbox user to list as')
      .action(async (idOrName: string, path: string, options: OutputOptions & { depth: number; user?: string }, command: Command) => {
        const entries = await withSandbox(command, idOrName, async (sandbox) => {
          const info = await sandbox.files.getInfo(path, userOption(options));
          return info.type === 'dir' ? await sandbox.files.list(path, { ...userOption(options), depth: options.depth }) : [info];
        });
        printOutput(entries, options, { table: () => fileTable(entries) });
      }),
  );
}

function catCommand(): Command {
  return addGlobalOptions(
    new Command('cat')
      .description('Print a file from a sandbox to stdout, as raw bytes')
      .argument('<sandbox>', 'sandbox id or name')
      .argument('<path>', 'the file')
      .option('-u, --user <user>', 'the sandbox user to read as')
      .action(async (idOrName: string, path: string, options: { user?: string }, command: Command) => {
        await withSandbox(command, idOrName, async (sandbox) => {
          const stream = await sandbox.files.read(path, { ...userOption(options), format: 'stream' });
          try {
            await pipeline(Readable.fromWeb(stream as WebReadableStream<Uint8Array>), process.stdout, { end: false });
          } catch (error) {
            // `capsule files cat … | head`: the reader left, as with cat itself.
            if ((error as NodeJS.ErrnoException).code !== 'EPIPE') throw error;
          }
        });
      }),
  );
}

function rmCommand(): Command {
  return addGlobalOptions(
    new Command('rm')
      .description('Remove files or directories (with everything in them) in a sandbox')
      .argument('<sandbox>', 'sandbox id or name')
      .argument('<path...>', 'what to remove')
      .option('-f, --force', 'no error for paths that do not exist')
      .option('-u, --user <user>', 'the sandbox user to remove as')
      .action(async (idOrName: string, paths: string[], options: { force?: boolean; user?: string }, command: Command) => {
        await withSandbox(command, idOrName, async (sandbox) => {
          for (const path of paths) {
            // The agent's remove is `rm -rf`; without --force a missing path is an error, as with rm.
            if (!options.force) await sandbox.files.getInfo(path, userOption(options));
            await sandbox.files.remove(path, userOption(options));
          }
        });
      }),
  );
}

export function filesCommand(): Command {
  const group = new Command('files').description('List, print and remove files in a sandbox (copy them with `capsule cp`)');
  for (const subcommand of [lsCommand(), catCommand(), rmCommand()]) group.addCommand(subcommand);
  return group;
}
