// The sandbox commands that are not run/exec: create, ls, inspect, rm and logs,
// each available at the top level (`capsule ls`) and under `capsule sandbox`.
// Human output by default; --json prints the daemon's objects unchanged.
import { DEFAULT_TEMPLATE } from '@capsule/protocol';
import type { CapsuleClient } from '@capsule/sdk';
import { Command, Option } from 'commander';
import { CliContext } from '../cli-context.js';
import { formatError } from '../error-report.js';
import { EXIT_CAPSULE_FAILURE } from '../exit-codes.js';
import { describeNetwork, describeSandbox, formatTimeLeft, sandboxTable } from '../human-format.js';
import {
  collectCidr,
  collectEnv,
  collectMetadata,
  collectPublish,
  parseCpuCount,
  parseDurationMs,
  parseForkCount,
  parseMemoryMiB,
  parseOnOff,
} from '../option-parsers.js';
import { addNetworkOptions, addVolumeOption, toCreateRequest, type SandboxSpecOptions } from '../create-request.js';
import { addGlobalOptions } from './global-options.js';
import { printJson } from './print-json.js';
import { escapeTerminalControls } from '../terminal-escape.js';

interface CreateOptions extends SandboxSpecOptions {
  json?: boolean;
}

function createCommand(): Command {
  return addGlobalOptions(
    addVolumeOption(addNetworkOptions(new Command('create')))
      .description('Create a sandbox and print its id')
      .option('-t, --template <name>', 'template to boot from', DEFAULT_TEMPLATE)
      .option('--cpus <n>', 'virtual CPUs', parseCpuCount)
      .option('-m, --memory <size>', 'memory, in MiB or with a unit (512, 1G)', parseMemoryMiB)
      .option('--name <name>', 'name for the sandbox')
      .option('-e, --env <K=V>', 'environment variable (repeatable; bare K copies it from here)', collectEnv)
      .option('--metadata <K=V>', 'metadata entry (repeatable)', collectMetadata)
      .option('--lifetime <duration>', 'kill the sandbox this long after it starts (30s, 10m, 2h; 0: never; default 5m)', parseDurationMs)
      .addOption(
        new Option('--on-timeout <action>', 'what the end of the lifetime does: kill, or pause (resume it later)').choices([
          'kill',
          'pause',
        ]),
      )
      .option(
        '-p, --publish <[ip:]host:port>',
        'publish a sandbox port on the host, e.g. 8080:80 (repeatable; default ip 127.0.0.1; host 0 or left out: a free port)',
        collectPublish,
      )
      .option('--json', 'print the whole sandbox as JSON')
      .action(async (options: CreateOptions, command: Command) => {
        const context = CliContext.of(command);
        const client = await context.daemonClient();
        const request = toCreateRequest(options);
        const { template } = request;
        const sandbox = await context.progress.step(`Creating sandbox from template ${template}`, () => client.createSandbox(request));
        if (options.json) printJson(sandbox);
        else process.stdout.write(`${sandbox.id}\n`);
      }),
  );
}

function listCommand(name: string): Command {
  return addGlobalOptions(
    new Command(name)
      .description('List sandboxes (killed ones only with --all)')
      .option('-a, --all', 'include killed sandboxes')
      .option('-q, --quiet', 'print only ids')
      .option('--json', 'print the sandboxes as a JSON array')
      .action(async (options: { all?: boolean; quiet?: boolean; json?: boolean }, command: Command) => {
        const client = await CliContext.of(command).daemonClient();
        const sandboxes = await client.listSandboxes({ all: options.all === true });
        if (options.json) printJson(sandboxes);
        else if (options.quiet) process.stdout.write(sandboxes.map((sandbox) => `${sandbox.id}\n`).join(''));
        else process.stdout.write(sandboxTable(sandboxes));
      }),
  );
}

function inspectCommand(): Command {
  return addGlobalOptions(
    new Command('inspect')
      .description('Show a sandbox in detail, with its state history')
      .argument('<sandbox>', 'sandbox id or name')
      .option('--json', 'print the sandbox as JSON')
      .action(async (idOrName: string, options: { json?: boolean }, command: Command) => {
        const client = await CliContext.of(command).daemonClient();
        const sandbox = await client.getSandbox(idOrName);
        if (options.json) printJson(sandbox);
        else process.stdout.write(describeSandbox(sandbox));
      }),
  );
}

function removeCommand(name: string): Command {
  return addGlobalOptions(
    new Command(name)
      .description('Remove (kill) sandboxes; prints each id removed and reports each failure')
      .argument('<sandbox...>', 'sandbox ids or names')
      .action(async (idsOrNames: string[], _options: object, command: Command) => {
        await forEachSandbox(command, idsOrNames, async (client, idOrName) => {
          await client.deleteSandbox(idOrName);
          return idOrName;
        });
      }),
  );
}

function logsCommand(): Command {
  return addGlobalOptions(
    new Command('logs')
      .description("Print a sandbox's serial console log")
      .argument('<sandbox>', 'sandbox id or name')
      .option('--json', 'print {"id", "log"} as JSON')
      .option('--raw', 'print control characters as the guest wrote them (they act on this terminal)')
      .action(async (idOrName: string, options: { json?: boolean; raw?: boolean }, command: Command) => {
        const client = await CliContext.of(command).daemonClient();
        const log = await client.logs(idOrName);
        if (options.json) printJson({ id: idOrName, log });
        // The guest wrote this: escape sequences in it must not drive the user's terminal.
        else process.stdout.write(options.raw ? log : escapeTerminalControls(log));
      }),
  );
}

function timeoutCommand(): Command {
  return addGlobalOptions(
    new Command('timeout')
      .description("Set a running sandbox's lifetime, counted from now (0: never killed)")
      .argument('<sandbox>', 'sandbox id or name')
      .argument('<duration>', 'e.g. 30s, 10m, 2h, 0', parseDurationMs)
      .option('--json', 'print the sandbox as JSON')
      .action(async (idOrName: string, timeoutMs: number, options: { json?: boolean }, command: Command) => {
        const client = await CliContext.of(command).daemonClient();
        const sandbox = await client.setSandboxTimeout(idOrName, timeoutMs);
        if (options.json) printJson(sandbox);
        else
          process.stdout.write(`${sandbox.id}: ${sandbox.expiresAt ? `killed in ${formatTimeLeft(sandbox.expiresAt)}` : 'no timeout'}\n`);
      }),
  );
}

function keepaliveCommand(): Command {
  return addGlobalOptions(
    new Command('keepalive')
      .description("Restart a running sandbox's timeout from now")
      .argument('<sandbox>', 'sandbox id or name')
      .action(async (idOrName: string, _options: object, command: Command) => {
        const client = await CliContext.of(command).daemonClient();
        const sandbox = await client.keepSandboxAlive(idOrName);
        process.stdout.write(`${sandbox.id}: ${sandbox.expiresAt ? `killed in ${formatTimeLeft(sandbox.expiresAt)}` : 'no timeout'}\n`);
      }),
  );
}

/**
 * Runs `work` for each named sandbox, printing what it returns; a failure is
 * reported for its sandbox and the rest still run; any failure exits 125.
 */
async function forEachSandbox(
  command: Command,
  idsOrNames: string[],
  work: (client: CapsuleClient, idOrName: string) => Promise<string>,
): Promise<void> {
  const context = CliContext.of(command);
  const client = await context.daemonClient();
  for (const idOrName of idsOrNames) {
    try {
      process.stdout.write(`${await work(client, idOrName)}\n`);
    } catch (error) {
      process.stderr.write(formatError(error, { debug: context.flags.debug, subject: idOrName }));
      process.exitCode = EXIT_CAPSULE_FAILURE;
    }
  }
}

function pauseOrResumeCommand(action: 'pause' | 'resume'): Command {
  return addGlobalOptions(
    new Command(action)
      .description(
        action === 'pause'
          ? 'Pause sandboxes: save their memory and end their VMs (no RAM used until resumed)'
          : 'Resume paused sandboxes where they stopped',
      )
      .argument('<sandbox...>', 'sandbox ids or names')
      .action(async (idsOrNames: string[], _options: object, command: Command) => {
        const context = CliContext.of(command);
        await forEachSandbox(command, idsOrNames, async (client, idOrName) => {
          const sandbox = await context.progress.step(`${action === 'pause' ? 'Pausing' : 'Resuming'} ${idOrName}`, () =>
            action === 'pause' ? client.pauseSandbox(idOrName) : client.resumeSandbox(idOrName),
          );
          return sandbox.id;
        });
      }),
  );
}

function forkCommand(): Command {
  return addGlobalOptions(
    new Command('fork')
      .description('Start sandboxes that each continue from this moment of a running sandbox; prints their ids')
      .argument('<sandbox>', 'sandbox id or name')
      .option('-n, --count <n>', 'how many forks (1-16)', parseForkCount, 1)
      .option('--json', 'print the forks as a JSON array')
      .action(async (idOrName: string, options: { count: number; json?: boolean }, command: Command) => {
        const context = CliContext.of(command);
        const client = await context.daemonClient();
        const forks = await context.progress.step(`Forking ${idOrName} ${options.count} time(s)`, () =>
          client.forkSandbox(idOrName, options.count),
        );
        if (options.json) printJson(forks);
        else process.stdout.write(forks.map((sandbox) => `${sandbox.id}\n`).join(''));
      }),
  );
}

function networkCommand(): Command {
  return addGlobalOptions(
    new Command('network')
      .description("Switch a running or paused sandbox's network on or off, or set its egress lists (TAP networking)")
      .argument('<sandbox>', 'sandbox id or name')
      .argument('[state]', 'on or off (default: leave as it is)', parseOnOff)
      .option('--egress-allow <cidr>', 'a network the sandbox may reach even if denied (repeatable; replaces the list)', collectCidr)
      .option('--egress-deny <cidr>', 'a network the sandbox may not reach (repeatable; replaces the list)', collectCidr)
      .option('--clear-egress', 'empty both egress lists')
      .option('--json', 'print the sandbox as JSON')
      .action(
        async (
          idOrName: string,
          internet: boolean | undefined,
          options: { egressAllow?: string[]; egressDeny?: string[]; clearEgress?: boolean; json?: boolean },
          command: Command,
        ) => {
          const lists = options.egressAllow || options.egressDeny || options.clearEgress;
          const sandbox = await (await CliContext.of(command).daemonClient()).setSandboxNetwork(idOrName, {
            ...(internet !== undefined && { internet }),
            ...(lists && { egress: { allow: options.egressAllow ?? [], deny: options.egressDeny ?? [] } }),
          });
          if (options.json) printJson(sandbox);
          else process.stdout.write(`${sandbox.id}: ${describeNetwork(sandbox.network)}\n`);
        },
      ),
  );
}

function snapshotCommand(): Command {
  return addGlobalOptions(
    new Command('snapshot')
      .description("Make a running sandbox's current state (memory, processes, disk) a new template; the sandbox runs on")
      .argument('<sandbox>', 'sandbox id or name')
      .requiredOption('-t, --template <name>', 'the new template (lower-case letters, digits, _ . -)')
      .option('--json', 'print the template as JSON')
      .action(async (idOrName: string, options: { template: string; json?: boolean }, command: Command) => {
        const context = CliContext.of(command);
        const client = await context.daemonClient();
        const template = await context.progress.step(`Snapshotting ${idOrName} as template ${options.template}`, () =>
          client.snapshotSandbox(idOrName, options.template),
        );
        if (options.json) printJson(template);
        else process.stdout.write(`${template.name}\n`);
      }),
  );
}

/** Top-level shortcuts: ls, inspect, rm, logs, pause, resume, fork, snapshot. */
export function sandboxShortcutCommands(): Command[] {
  return [
    listCommand('ls'),
    inspectCommand(),
    removeCommand('rm'),
    logsCommand(),
    pauseOrResumeCommand('pause'),
    pauseOrResumeCommand('resume'),
    forkCommand(),
    snapshotCommand(),
  ];
}

/** `capsule sandbox create|ls|inspect|rm|logs`. */
export function sandboxCommand(): Command {
  const group = new Command('sandbox').description('Create, list, inspect, time out and remove sandboxes');
  for (const subcommand of [
    createCommand(),
    listCommand('ls'),
    inspectCommand(),
    removeCommand('rm'),
    logsCommand(),
    pauseOrResumeCommand('pause'),
    pauseOrResumeCommand('resume'),
    forkCommand(),
    snapshotCommand(),
    timeoutCommand(),
    keepaliveCommand(),
    networkCommand(),
  ]) {
    group.addCommand(subcommand);
  }
  return group;
}
