// `capsule system df` (the disk the daemon's data takes, by kind, as `docker
// system df`) and `capsule system prune` (stopped and failed sandboxes, then the
// image store's garbage and the build cache). Prune asks first unless -f, and
// never touches a running or paused sandbox, a template or a volume.
import type { DiskUsage, SandboxInfo } from '@capsule/sdk';
import { Command } from 'commander';
import { CliContext } from '../cli-context.js';
import { confirm } from '../confirm.js';
import { formatError } from '../error-report.js';
import { EXIT_CAPSULE_FAILURE } from '../exit-codes.js';
import { formatBytes, renderTable } from '../human-format.js';
import { addOutputOptions, printOutput, type OutputOptions } from '../output-format.js';
import { addGlobalOptions } from './global-options.js';

const KINDS: readonly [Exclude<keyof DiskUsage, 'totalBytes'>, string][] = [
  ['sandboxes', 'Sandboxes'],
  ['templates', 'Templates'],
  ['images', 'Images'],
  ['volumes', 'Volumes'],
  ['buildCache', 'Build cache'],
];

export function diskUsageTable(usage: DiskUsage): string {
  return renderTable(
    ['TYPE', 'COUNT', 'SIZE'],
    [
      ...KINDS.map(([kind, title]) => [title, String(usage[kind].count), formatBytes(usage[kind].diskBytes)]),
      ['Total', '', formatBytes(usage.totalBytes)],
    ],
  );
}

function dfCommand(): Command {
  return addGlobalOptions(
    addOutputOptions(
      new Command('df').description('Show the disk space sandboxes, templates, images, volumes and the build cache take'),
    ).action(async (options: OutputOptions, command: Command) => {
      const client = await CliContext.of(command).daemonClient();
      const usage = await client.diskUsage();
      printOutput(usage, options, { table: () => diskUsageTable(usage) });
    }),
  );
}

/** Sandboxes prune removes: stopped ones (their disks kept for a start that never came) and failed ones. */
const PRUNED_STATES: readonly SandboxInfo['state'][] = ['stopped', 'error'];

function pruneCommand(): Command {
  return addGlobalOptions(
    addOutputOptions(new Command('prune'))
      .description('Remove stopped and failed sandboxes, images no template uses, unused blobs and root filesystems, and the build cache')
      .option('-f, --force', 'do not ask')
      .action(async (options: { force?: boolean } & OutputOptions, command: Command) => {
        const context = CliContext.of(command);
        const client = await context.daemonClient();
        const sandboxes = (await client.listSandboxes()).filter((sandbox) => PRUNED_STATES.includes(sandbox.state));
        const what = `${sandboxes.length > 0 ? `${sandboxes.length} stopped or failed sandboxes (${sandboxes.map((sandbox) => sandbox.id).join(', ')}), ` : ''}images no template uses, unused blobs and root filesystems, and the build cache`;
        if (!options.force && !(await confirm(`Remove ${what}? [y/N] `)))
          command.error(`error: ${process.stdin.isTTY ? 'nothing removed' : 'not asked on a terminal: add -f to prune'}`, {
            exitCode: 2,
            code: 'capsule.usage',
          });
        const removed: string[] = [];
        for (const sandbox of sandboxes) {
          try {
            await client.deleteSandbox(sandbox.id);
            removed.push(sandbox.id);
          } catch (error) {
            process.stderr.write(formatError(error, { debug: context.flags.debug, subject: sandbox.id }));
            process.exitCode = EXIT_CAPSULE_FAILURE;
          }
        }
        const images = await client.pruneImages();
        printOutput({ sandboxes: removed, images }, options, {
          table: () =>
            `${removed.map((id) => `${id}\n`).join('')}removed ${removed.length} sandboxes, ${images.blobs} blobs, ${images.rootfs} root filesystems and ${images.buildSteps} cached build steps: ${formatBytes(images.bytes)} freed by the image store\n`,
        });
      }),
  );
}

/** `capsule system df|prune`. */
export function systemCommand(): Command {
  return new Command('system')
    .description('Show the disk space capsule uses, and free it')
    .addCommand(dfCommand())
    .addCommand(pruneCommand());
}
