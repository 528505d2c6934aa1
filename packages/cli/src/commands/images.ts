// `capsule image pull|import|ls|rm`: the daemon's image store. Pulls and
// imports draw a progress bar on a terminal; `ls` prints a table or -o json|yaml.
import type { CapsuleClient, ImageInfo } from '@capsule/sdk';
import { Command } from 'commander';
import { CliContext } from '../cli-context.js';
import { formatAge, formatBytes, renderTable } from '../human-format.js';
import { TransferProgress } from '../transfer-progress.js';
import { addGlobalOptions } from './global-options.js';
import { addOutputOptions, printOutput, type OutputOptions } from '../output-format.js';

async function readStdin(): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const chunk of process.stdin) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks)
    .toString('utf8')
    .replace(/\r?\n$/, '');
}

export function shortDigest(digest: string): string {
  return digest.slice('sha256:'.length, 'sha256:'.length + 12);
}

/** `capsule image ls`; `wide` shows whole digests. */
export function imageTable(
  images: readonly ImageInfo[],
  { now = Date.now(), wide = false }: { now?: number; wide?: boolean } = {},
): string {
  return renderTable(
    ['REFERENCE', 'DIGEST', 'SIZE', 'LAYERS', 'TEMPLATES', 'AGE'],
    images.flatMap((image) =>
      (image.refs.length > 0 ? image.refs : ['<none>']).map((ref) => [
        ref,
        wide ? image.digest : shortDigest(image.digest),
        formatBytes(image.sizeBytes),
        String(image.layers),
        image.templates.join(',') || '-',
        formatAge(image.createdAt, now),
      ]),
    ),
  );
}

/** Pulls `ref` with a progress bar on stderr; used by `image pull` and by `template create` for a missing image. */
export async function pullWithProgress(
  context: CliContext,
  client: CapsuleClient,
  ref: string,
  credentials: { username?: string; password?: string } = {},
): Promise<ImageInfo> {
  const bar = new TransferProgress(`Pulling ${ref}`, { enabled: context.progress.enabled });
  try {
    return await client.pullImage(ref, credentials, { onEvent: (event) => bar.onEvent(event) });
  } finally {
    bar.finish();
  }
}

function pullCommand(): Command {
  return addGlobalOptions(
    addOutputOptions(new Command('pull'))
      .description('Pull an image from a registry into the store')
      .argument('<ref>', 'image reference, e.g. localhost:5000/app:1.0 or debian:12')
      .option('--username <name>', 'registry user name')
      .option('--password-stdin', 'read the registry password from stdin')
      .action(async (ref: string, options: { username?: string; passwordStdin?: boolean } & OutputOptions, command: Command) => {
        const context = CliContext.of(command);
        const password = options.passwordStdin ? await readStdin() : undefined;
        const client = await context.daemonClient();
        const image = await pullWithProgress(context, client, ref, {
          ...(options.username !== undefined && { username: options.username }),
          ...(password !== undefined && { password }),
        });
        printOutput(image, options, { table: () => `${image.digest}\n` });
      }),
  );
}

function importCommand(): Command {
  return addGlobalOptions(
    addOutputOptions(new Command('import'))
      .description('Import a `docker save` tarball, an OCI archive or an OCI layout folder')
      .argument('<file>', 'path of the archive or folder (on this host)')
      .option('--tag <ref>', 'name the image by this reference (default: the one in the archive)')
      .action(async (file: string, options: { tag?: string } & OutputOptions, command: Command) => {
        const context = CliContext.of(command);
        const client = await context.daemonClient();
        const { resolve } = await import('node:path');
        const bar = new TransferProgress(`Importing ${file}`, { enabled: context.progress.enabled });
        let image: ImageInfo;
        try {
          image = await client.importImage(resolve(file), options.tag, { onEvent: (event) => bar.onEvent(event) });
        } finally {
          bar.finish();
        }
        printOutput(image, options, { table: () => `${image.refs[0] ?? image.digest}\n` });
      }),
  );
}

function listCommand(): Command {
  return addGlobalOptions(
    addOutputOptions(new Command('ls').description('List images in the store'), { wide: true }).action(
      async (options: OutputOptions, command: Command) => {
        const client = await CliContext.of(command).daemonClient();
        const images = await client.listImages();
        printOutput(images, options, { table: () => imageTable(images), wide: () => imageTable(images, { wide: true }) });
      },
    ),
  );
}

function removeCommand(): Command {
  return addGlobalOptions(
    new Command('rm')
      .description('Remove image references (or images by digest); unused layers are deleted')
      .argument('<ref...>', 'references or digests')
      .action(async (refs: string[], _options: unknown, command: Command) => {
        const client = await CliContext.of(command).daemonClient();
        for (const ref of refs) await client.deleteImage(ref);
      }),
  );
}

function pruneCommand(): Command {
  return addGlobalOptions(
    addOutputOptions(new Command('prune'))
      .description('Delete images no reference names and no template uses, unused blobs and root filesystems, and every cached build step')
      .action(async (options: OutputOptions, command: Command) => {
        const client = await CliContext.of(command).daemonClient();
        const result = await client.pruneImages();
        printOutput(result, options, {
          table: () =>
            `removed ${result.blobs} blobs, ${result.rootfs} root filesystems and ${result.buildSteps} cached build steps: ${formatBytes(result.bytes)} freed\n`,
        });
      }),
  );
}

export function imageCommand(): Command {
  return new Command('image')
    .description('Manage OCI images that templates are built from')
    .addCommand(pullCommand())
    .addCommand(importCommand())
    .addCommand(listCommand())
    .addCommand(removeCommand())
    .addCommand(pruneCommand());
}
