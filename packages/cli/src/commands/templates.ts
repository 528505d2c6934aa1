// `capsule templates` (also `capsule template ls`): the templates sandboxes can
// boot from; `capsule template create NAME --image REF` builds one from an
// image (pulled first when not in the store), `template build` from a
// Capsulefile, `template inspect` shows one and `template rm` removes it.
import fs from 'node:fs';
import path from 'node:path';
import { CapsuleError, InvalidArgumentError, NotFoundError, type CapsuleClient, type TemplateInfo } from '@capsule/sdk';
import { Command } from 'commander';
import { CliContext } from '../cli-context.js';
import { describeTemplate, templateTable } from '../human-format.js';
import { parseCpuCount, parseDurationMs, parseMemoryMiB } from '../option-parsers.js';
import { addGlobalOptions } from './global-options.js';
import { addOutputOptions, printOutput, type OutputOptions } from '../output-format.js';
import { pullWithProgress } from './images.js';

const WARM_POLL_MS = 500;

function listTemplatesCommand(name: string): Command {
  return addGlobalOptions(
    addOutputOptions(new Command(name).description('List templates')).action(async (options: OutputOptions, command: Command) => {
      const client = await CliContext.of(command).daemonClient();
      const templates = await client.listTemplates();
      printOutput(templates, options, { table: () => templateTable(templates) });
    }),
  );
}

export function templatesCommand(): Command {
  return listTemplatesCommand('templates');
}

/**
 * Waits until the template's warm snapshot is no longer being built. A
 * template with a START command whose snapshot failed is an error (its cold
 * boots would fail the same way); any other failure only makes it boot cold.
 */
async function waitForWarmSnapshot(client: CapsuleClient, name: string): Promise<TemplateInfo> {
  for (;;) {
    const template = (await client.listTemplates()).find((t) => t.name === name);
    if (!template) throw new NotFoundError('template_not_found', `template "${name}" went away while its warm snapshot was built`);
    if (template.warmSnapshot === 'failed') {
      const details = await client.getTemplate(name);
      if (details.startCommand) {
        throw new CapsuleError(
          'template_start_failed',
          `the warm snapshot of ${name} failed: ${details.warmSnapshotError ?? 'see the daemon log'}`,
          {
            hint: `fix START/READY and build it again (\`capsule template rm ${name}\` first)`,
          },
        );
      }
      process.stderr.write(
        `capsule: the warm snapshot of ${name} failed; its sandboxes boot cold: ${details.warmSnapshotError ?? 'see the daemon log'}\n`,
      );
    }
    if (template.warmSnapshot !== 'building') return template;
    await new Promise((resolve) => setTimeout(resolve, WARM_POLL_MS));
  }
}

function createTemplateCommand(): Command {
  return addGlobalOptions(
    addOutputOptions(new Command('create'))
      .description('Build a template from an OCI image (pulled first if it is not in the store)')
      .argument('<name>', 'template name: lower-case letters, digits, _ . -')
      .requiredOption('--image <ref>', 'image reference or digest')
      .option('--cpus <n>', 'default vCPUs of its sandboxes', parseCpuCount)
      .option('--memory <size>', 'default memory of its sandboxes, e.g. 512M', parseMemoryMiB)
      .option(
        '--start [cmd]',
        "start a service before the warm snapshot: CMD under /bin/sh -c, or without CMD the image's Entrypoint + Cmd",
      )
      .option('--ready <cmd>', 'with --start: a check (under /bin/sh -c) retried until it exits 0 before the snapshot')
      .option('--ready-timeout <duration>', 'how long --ready is retried (default 60s)', parseDurationMs)
      .option('--no-wait', 'return before the warm snapshot is built')
      .action(async (name: string, options: CreateTemplateOptions, command: Command) => {
        const context = CliContext.of(command);
        const client = await context.daemonClient();
        try {
          await client.getImage(options.image);
        } catch (error) {
          if (!(error instanceof NotFoundError)) throw error;
          await pullWithProgress(context, client, options.image);
        }
        let template = await context.progress.step(`Building the root filesystem of ${name} from ${options.image}`, () =>
          client.createTemplate({
            name,
            image: options.image,
            ...(options.cpus !== undefined && { vcpus: options.cpus }),
            ...(options.memory !== undefined && { memoryMiB: options.memory }),
            ...(options.start !== undefined && { start: options.start === true ? ('image' as const) : ['/bin/sh', '-c', options.start] }),
            ...(options.ready !== undefined && { ready: ['/bin/sh', '-c', options.ready] }),
            ...(options.readyTimeout !== undefined && { readyTimeoutMs: options.readyTimeout }),
          }),
        );
        if (options.wait && template.warmSnapshot === 'building') {
          template = await context.progress.step(`Booting ${name} once for its warm snapshot`, () => waitForWarmSnapshot(client, name));
        }
        printOutput(template, options, { table: () => `${name}\n` });
      }),
  );
}

interface CreateTemplateOptions extends OutputOptions {
  image: string;
  cpus?: number;
  memory?: number;
  start?: string | true;
  ready?: string;
  readyTimeout?: number;
  wait: boolean;
}

function buildTemplateCommand(): Command {
  return addGlobalOptions(
    addOutputOptions(new Command('build'))
      .description('Build a template from a Capsulefile: FROM image|template, RUN, COPY, ENV, WORKDIR, USER, START, READY')
      .requiredOption('-t, --tag <name>', 'name of the new template')
      .option('-f, --file <path>', 'the Capsulefile', 'Capsulefile')
      .option('--no-wait', 'return before the warm snapshot is built')
      .action(async (options: { tag: string; file: string; wait: boolean } & OutputOptions, command: Command) => {
        const context = CliContext.of(command);
        const file = path.resolve(options.file);
        let capsulefile: string;
        try {
          capsulefile = fs.readFileSync(file, 'utf8');
        } catch {
          throw new InvalidArgumentError('invalid_argument', `cannot read ${file}`, { hint: 'pass the Capsulefile with -f' });
        }
        const client = await context.daemonClient();
        // The build log goes to stderr as it comes, so stdout stays the template's name.
        let template = await client.buildTemplate(
          { name: options.tag, capsulefile, contextDir: path.dirname(file) },
          {
            onEvent: (event) => {
              if (event.type === 'step')
                process.stderr.write(
                  `${event.index === 0 ? '==>' : `[${event.index}]`}${event.cached ? ' CACHED' : ''} ${event.instruction}\n`,
                );
              else process.stderr.write(event.text);
            },
          },
        );
        if (options.wait && template.warmSnapshot === 'building') {
          template = await context.progress.step(`Booting ${template.name} once for its warm snapshot`, () =>
            waitForWarmSnapshot(client, template.name),
          );
        }
        printOutput(template, options, { table: () => `${template.name}\n` });
      }),
  );
}

function inspectTemplateCommand(): Command {
  return addGlobalOptions(
    addOutputOptions(
      new Command('inspect')
        .description('Show a template: its source, image, start and ready commands, warm snapshot and sizes')
        .argument('<name>'),
    ).action(async (name: string, options: OutputOptions, command: Command) => {
      const client = await CliContext.of(command).daemonClient();
      const template = await client.getTemplate(name);
      printOutput(template, options, { table: () => describeTemplate(template) });
    }),
  );
}

function removeTemplateCommand(): Command {
  return addGlobalOptions(
    new Command('rm')
      .description('Remove templates built from images (their running sandboxes keep running)')
      .argument('<name...>')
      .action(async (names: string[], _options: unknown, command: Command) => {
        const client = await CliContext.of(command).daemonClient();
        for (const name of names) await client.deleteTemplate(name);
      }),
  );
}

export function templateCommand(): Command {
  return new Command('template')
    .description('Manage templates')
    .addCommand(listTemplatesCommand('ls'))
    .addCommand(createTemplateCommand())
    .addCommand(buildTemplateCommand())
    .addCommand(inspectTemplateCommand())
    .addCommand(removeTemplateCommand());
}
