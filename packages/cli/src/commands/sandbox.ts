// The sandbox commands that are not run/exec: create, ls, inspect, rm and logs,
// each available at the top level (`capsule ls`) and under `capsule sandbox`.
// Human output by default; -o json|yaml (or --json) prints the daemon's objects unchanged.
import { DEFAULT_TEMPLATE } from '@capsule/protocol';
import { Sandbox, type CapsuleClient, type SandboxInfo } from '@capsule/sdk';
import { setTimeout as sleep } from 'node:timers/promises';
import { Command, InvalidArgumentError, Option } from 'commander';
import { CliContext } from '../cli-context.js';
import { formatError } from '../error-report.js';
import { EXIT_CAPSULE_FAILURE } from '../exit-codes.js';
import { describeNetwork, describeSandbox, formatTimeLeft, sandboxTable } from '../human-format.js';
import {
  collectCidr,
  collectEnv,
  collectMetadata,
  parseCpuCount,
  parseDiskMiB,
  parseDurationMs,
  parseForkCount,
  parseLineCount,
  parseMemoryMiB,
  parseOnOff,
  parseSinceTime,
} from '../option-parsers.js';
import { addNetworkOptions, addPublishOption, addVolumeOption, toCreateRequest, type SandboxSpecOptions } from '../create-request.js';
import { addGlobalOptions } from './global-options.js';
import { printJson } from './print-json.js';
import { escapeTerminalControls } from '../terminal-escape.js';
import { Interrupts } from '../interrupts.js';
import { confirm } from '../confirm.js';
import { lastLines, newPart } from '../log-follow.js';
import { addOutputOptions, printOutput, type OutputOptions } from '../output-format.js';
import {
  collectFilter,
  collectLabelFilter,
  filterSandboxes,
  lastCreated,
  mergeFilters,
  parseLimit,
  type SandboxFilters,
} from '../sandbox-filter.js';
import { forgetHostKeys, knownHostsFile } from '../ssh-known-hosts.js';
import { painterFor } from '../terminal-color.js';

type CreateOptions = SandboxSpecOptions & OutputOptions;

function createCommand(): Command {
  return addGlobalOptions(
    addPublishOption(addVolumeOption(addNetworkOptions(addOutputOptions(new Command('create')))))
      .description('Create a sandbox and print its id')
      .option('-t, --template <name>', 'template to boot from', DEFAULT_TEMPLATE)
      .option('--cpus <n>', 'virtual CPUs', parseCpuCount)
      .option('-m, --memory <size>', 'memory, in MiB or with a unit (512, 1G)', parseMemoryMiB)
      .option('--name <name>', 'name for the sandbox')
      .option('-e, --env <K=V>', 'environment variable (repeatable; bare K copies it from here)', collectEnv)
      .option('--metadata <K=V>', 'metadata entry (repeatable)', collectMetadata)
      .option('--lifetime <duration>', 'kill the sandbox this long after it starts (30s, 10m, 2h; 0: never; default 5m)', parseDurationMs)
      .addOption(
        new Option(
          '--on-timeout <action>',
          'what the end of the lifetime does: kill, pause (resume it later) or stop (start it later from its disk)',
        ).choices(['kill', 'pause', 'stop']),
      )
      .option('--ssh-key <file>', "a public key to authorise for `capsule ssh` in the default user's ~/.ssh/authorized_keys")
      .action(async (options: CreateOptions & { sshKey?: string }, command: Command) => {
        const context = CliContext.of(command);
        // Read first: a key file that is not one fails before a sandbox exists.
        const ssh = options.sshKey !== undefined ? await import('./ssh.js') : undefined;
        const publicKey = options.sshKey !== undefined ? ssh?.readPublicKey(options.sshKey) : undefined;
        const client = await context.daemonClient();
        const request = toCreateRequest(options);
        const { template } = request;
        const sandbox = await context.progress.step(`Creating sandbox from template ${template}`, () => client.createSandbox(request));
        if (ssh !== undefined && publicKey !== undefined) {
          const connected = await Sandbox.connect(sandbox.id, context.connection);
          await ssh.authorizeKey(connected, ssh.DEFAULT_SSH_USER, publicKey).finally(() => connected.client.close());
        }
        printOutput(sandbox, options, { table: () => `${sandbox.id}\n` });
      }),
  );
}

/** `ls`, and `ps` as docker spells it; `ps ID` listed a sandbox's processes until this release, and says where that went. */
function listCommand(name: 'ls' | 'ps'): Command {
  const list = addOutputOptions(
    new Command(name)
      .description('List sandboxes (killed ones only with --all)')
      .option('-a, --all', 'include killed sandboxes')
      .option('-q, --quiet', 'print only ids')
      .option(
        '-f, --filter <key=value>',
        'only sandboxes with this id prefix, name, state, template or label=K[=V] (repeatable)',
        collectFilter,
      )
      .option(
        '-m, --metadata <key=value>',
        'only sandboxes with this metadata entry, as --filter label=K=V (repeatable)',
        collectLabelFilter,
      )
      .option('-n, --limit <n>', 'only the n sandboxes created last', parseLimit),
    { wide: true },
  );
  // The old `ps ID` is let through to be answered with where it went, not with commander's "too many arguments".
  if (name === 'ps') list.allowExcessArguments();
  return addGlobalOptions(
    list.action(
      async (
        options: OutputOptions & { all?: boolean; quiet?: boolean; filter?: SandboxFilters; metadata?: SandboxFilters; limit?: number },
        command: Command,
      ) => {
        const legacySandbox = command.args[0];
        if (name === 'ps' && legacySandbox !== undefined)
          command.error(
            `error: \`capsule ps\` lists sandboxes now, as \`docker ps\` does; the processes in a sandbox: \`capsule top ${legacySandbox}\``,
            { exitCode: 2, code: 'capsule.usage' },
          );
        const client = await CliContext.of(command).daemonClient();
        // Asking for killed sandboxes by state finds them without --all, as `docker ps --filter status=exited` does.
        const all = options.all === true || options.filter?.state?.includes('killed') === true;
        const filters = mergeFilters(options.filter, options.metadata);
        const sandboxes = lastCreated(filterSandboxes(await client.listSandboxes({ all }), filters), options.limit);
        if (options.quiet) process.stdout.write(sandboxes.map((sandbox) => `${sandbox.id}\n`).join(''));
        else
          printOutput(sandboxes, options, {
            table: () => sandboxTable(sandboxes, { paint: painterFor() }),
            wide: () => sandboxTable(sandboxes, { wide: true, paint: painterFor() }),
          });
      },
    ),
  );
}

function inspectCommand(): Command {
  return addGlobalOptions(
    addOutputOptions(
      new Command('inspect').description('Show a sandbox in detail, with its state history').argument('<sandbox>', 'sandbox id or name'),
    ).action(async (idOrName: string, options: OutputOptions, command: Command) => {
      const client = await CliContext.of(command).daemonClient();
      const sandbox = await client.getSandbox(idOrName);
      printOutput(sandbox, options, { table: () => describeSandbox(sandbox) });
    }),
  );
}

/**
 * `rm` (and `kill`, as docker and e2b spell ending one): removes sandboxes,
 * running ones included. `rm --all` asks first unless `-f`. `kill ID PID`
 * ended a process until this release, and says where that went.
 */
function removeCommand(name: 'rm' | 'kill'): Command {
  const remove = new Command(name)
    .description(
      name === 'rm'
        ? 'Remove sandboxes, running ones included; prints each id removed and reports each failure'
        : 'End sandboxes (the same as rm); prints each id removed',
    )
    .argument(name === 'rm' ? '[sandbox...]' : '<sandbox...>', 'sandbox ids or names');
  if (name === 'rm') remove.option('-f, --force', 'do not ask (with --all)').option('--all', 'every sandbox that is not killed yet');
  return addGlobalOptions(
    remove.action(async (idsOrNames: string[], options: { force?: boolean; all?: boolean }, command: Command) => {
      const usage = (message: string) => command.error(`error: ${message}`, { exitCode: 2, code: 'capsule.usage' });
      if (name === 'kill' && idsOrNames.length === 2 && /^\d+$/.test(idsOrNames[1] ?? ''))
        usage(
          `\`capsule kill\` ends sandboxes now, as \`docker kill\` does; to end process ${idsOrNames[1]} in a sandbox: \`capsule proc kill ${idsOrNames[0]} ${idsOrNames[1]}\``,
        );
      if (options.all) {
        if (idsOrNames.length > 0) usage('give sandboxes or --all, not both');
        const client = await CliContext.of(command).daemonClient();
        idsOrNames = (await client.listSandboxes()).map((sandbox) => sandbox.id);
        if (idsOrNames.length === 0) return;
        if (!options.force && !(await confirm(`Remove all ${idsOrNames.length} sandboxes (${idsOrNames.join(', ')})? [y/N] `)))
          usage(process.stdin.isTTY ? 'nothing removed' : 'not asked on a terminal: add -f to remove every sandbox');
      } else if (idsOrNames.length === 0) usage("missing required argument 'sandbox'");
      await forEachSandbox(command, idsOrNames, async (client, idOrName) => {
        await client.deleteSandbox(idOrName);
        // Its SSH host keys go with it: a later sandbox of the same name has keys of its own.
        forgetHostKeys(knownHostsFile(), idOrName);
        return idOrName;
      });
    }),
  );
}

/** How often `logs -f` reads the console log again. */
const FOLLOW_INTERVAL_MS = 1000;

function logsCommand(): Command {
  return addGlobalOptions(
    new Command('logs')
      .description("Print a sandbox's serial console log")
      .argument('<sandbox>', 'sandbox id or name')
      .option('-f, --follow', 'keep printing what the guest writes, until Ctrl-C or the sandbox ends')
      .option('-n, --tail <lines>', 'only the last N lines (then what follows, with -f)', parseLineCount)
      .option('--since <time>', 'only what the guest wrote since then: 10m, 1h30m (ago), 2026-12-07T15:00:00Z, Unix seconds', (v: string) =>
        parseSinceTime(v),
      )
      .option('--json', 'print {"id", "log"} as JSON')
      .option('--raw', 'print control characters as the guest wrote them (they act on this terminal)')
      .action(
        async (
          idOrName: string,
          options: { follow?: boolean; tail?: number; since?: Date; json?: boolean; raw?: boolean },
          command: Command,
        ) => {
          if (options.follow && options.json)
            command.error('error: --follow prints text, not --json', { exitCode: 2, code: 'capsule.usage' });
          const client = await CliContext.of(command).daemonClient();
          // The guest wrote this: escape sequences in it must not drive the user's terminal.
          const show = (text: string) => process.stdout.write(options.raw ? text : escapeTerminalControls(text));
          const first = await client.logs(idOrName, options.since ? { since: options.since } : undefined);
          const shown = options.tail === undefined ? first : lastLines(first, options.tail);
          if (options.json) return printJson({ id: idOrName, log: shown });
          show(shown);
          if (!options.follow) return;
          // -f goes on from the end of what was read (newPart finds it in the whole log); with nothing since, from the whole log's end.
          let log = first === '' && options.since ? await client.logs(idOrName) : first;
          const interrupts = new Interrupts();
          try {
            while (!interrupts.signal.aborted) {
              await sleep(FOLLOW_INTERVAL_MS, undefined, { signal: interrupts.signal }).catch(() => undefined);
              if (interrupts.signal.aborted) break;
              const sandbox = await client.getSandbox(idOrName);
              const next = await client.logs(sandbox.id);
              const { text, cut } = newPart(log, next);
              if (cut) process.stderr.write('capsule: the log moved on faster than it was read; some of it is not shown\n');
              show(text);
              log = next;
              if (sandbox.state === 'killed' || sandbox.state === 'error') break;
            }
          } finally {
            interrupts.dispose();
          }
        },
      ),
  );
}

function timeoutCommand(): Command {
  return addGlobalOptions(
    addOutputOptions(new Command('timeout'))
      .description("Set a running sandbox's lifetime, counted from now (0: never killed)")
      .argument('<sandbox>', 'sandbox id or name')
      .argument('<duration>', 'e.g. 30s, 10m, 2h, 0', parseDurationMs)
      .action(async (idOrName: string, timeoutMs: number, options: OutputOptions, command: Command) => {
        const client = await CliContext.of(command).daemonClient();
        const sandbox = await client.setSandboxTimeout(idOrName, timeoutMs);
        printOutput(sandbox, options, {
          table: () => `${sandbox.id}: ${sandbox.expiresAt ? `killed in ${formatTimeLeft(sandbox.expiresAt)}` : 'no timeout'}\n`,
        });
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

type LifecycleAction = 'pause' | 'resume' | 'stop' | 'start' | 'restart';

/** What each state change says and does; the descriptions are program.ts's too. */
const LIFECYCLE: Record<
  LifecycleAction,
  { description: string; doing: string; call: (client: CapsuleClient, id: string) => Promise<SandboxInfo> }
> = {
  pause: {
    description: 'Pause sandboxes: save their memory and end their VMs (no RAM used until resumed)',
    doing: 'Pausing',
    call: (client, id) => client.pauseSandbox(id),
  },
  resume: { description: 'Resume paused sandboxes where they stopped', doing: 'Resuming', call: (client, id) => client.resumeSandbox(id) },
  stop: {
    description: 'Stop sandboxes: their guests flush and power off, their disks stay (no RAM used until started)',
    doing: 'Stopping',
    call: (client, id) => client.stopSandbox(id),
  },
  start: {
    description: 'Start stopped sandboxes again from their own disks',
    doing: 'Starting',
    call: (client, id) => client.startSandbox(id),
  },
  restart: {
    description: 'Stop sandboxes and start them again from their disks',
    doing: 'Restarting',
    call: (client, id) => client.restartSandbox(id),
  },
};

function lifecycleCommand(action: LifecycleAction): Command {
  const { description, doing, call } = LIFECYCLE[action];
  return addGlobalOptions(
    new Command(action)
      .description(description)
      .argument('<sandbox...>', 'sandbox ids or names')
      .action(async (idsOrNames: string[], _options: object, command: Command) => {
        const context = CliContext.of(command);
        await forEachSandbox(command, idsOrNames, async (client, idOrName) => {
          const sandbox = await context.progress.step(`${doing} ${idOrName}`, () => call(client, idOrName));
          return sandbox.id;
        });
      }),
  );
}

function setCommand(): Command {
  return addGlobalOptions(
    addOutputOptions(new Command('set'))
      .description("Change a stopped sandbox's CPUs, memory or disk size (the disk only grows; its filesystem grows at the next start)")
      .argument('<sandbox>', 'sandbox id or name')
      .option('--cpus <n>', 'virtual CPUs', parseCpuCount)
      .option('-m, --memory <size>', 'memory, in MiB or with a unit (512, 1G)', parseMemoryMiB)
      .option('--disk <size>', 'root disk size, in MiB or with a unit (20G)', parseDiskMiB)
      .action(async (idOrName: string, options: { cpus?: number; memory?: number; disk?: number } & OutputOptions, command: Command) => {
        if (options.cpus === undefined && options.memory === undefined && options.disk === undefined)
          throw new InvalidArgumentError('nothing to change: give --cpus, --memory or --disk');
        const client = await CliContext.of(command).daemonClient();
        const sandbox = await client.setSandboxResources(idOrName, {
          ...(options.cpus !== undefined && { vcpus: options.cpus }),
          ...(options.memory !== undefined && { memoryMiB: options.memory }),
          ...(options.disk !== undefined && { diskMiB: options.disk }),
        });
        printOutput(sandbox, options, {
          table: () => `${sandbox.id}: ${sandbox.vcpus} CPUs, ${sandbox.memoryMiB} MiB from its next start\n`,
        });
      }),
  );
}

function forkCommand(): Command {
  return addGlobalOptions(
    addOutputOptions(new Command('fork'))
      .description('Start sandboxes that each continue from this moment of a running sandbox; prints their ids')
      .argument('<sandbox>', 'sandbox id or name')
      .option('-n, --count <n>', 'how many forks (1-16)', parseForkCount, 1)
      .action(async (idOrName: string, options: { count: number } & OutputOptions, command: Command) => {
        const context = CliContext.of(command);
        const client = await context.daemonClient();
        const forks = await context.progress.step(`Forking ${idOrName} ${options.count} time(s)`, () =>
          client.forkSandbox(idOrName, options.count),
        );
        printOutput(forks, options, { table: () => forks.map((sandbox) => `${sandbox.id}\n`).join('') });
      }),
  );
}

function networkCommand(): Command {
  return addGlobalOptions(
    addOutputOptions(new Command('network'))
      .description("Switch a running or paused sandbox's network on or off, or set its egress lists (TAP networking)")
      .argument('<sandbox>', 'sandbox id or name')
      .argument('[state]', 'on or off (default: leave as it is)', parseOnOff)
      .option('--egress-allow <cidr>', 'a network the sandbox may reach even if denied (repeatable; replaces the list)', collectCidr)
      .option('--egress-deny <cidr>', 'a network the sandbox may not reach (repeatable; replaces the list)', collectCidr)
      .option('--clear-egress', 'empty both egress lists')
      .action(
        async (
          idOrName: string,
          internet: boolean | undefined,
          options: { egressAllow?: string[]; egressDeny?: string[]; clearEgress?: boolean } & OutputOptions,
          command: Command,
        ) => {
          const lists = options.egressAllow || options.egressDeny || options.clearEgress;
          const sandbox = await (await CliContext.of(command).daemonClient()).setSandboxNetwork(idOrName, {
            ...(internet !== undefined && { internet }),
            ...(lists && { egress: { allow: options.egressAllow ?? [], deny: options.egressDeny ?? [] } }),
          });
          printOutput(sandbox, options, { table: () => `${sandbox.id}: ${describeNetwork(sandbox.network)}\n` });
        },
      ),
  );
}

function snapshotCommand(): Command {
  return addGlobalOptions(
    addOutputOptions(new Command('snapshot'))
      .description("Make a running sandbox's current state (memory, processes, disk) a new template; the sandbox runs on")
      .argument('<sandbox>', 'sandbox id or name')
      .requiredOption('-t, --template <name>', 'the new template (lower-case letters, digits, _ . -)')
      .action(async (idOrName: string, options: { template: string } & OutputOptions, command: Command) => {
        const context = CliContext.of(command);
        const client = await context.daemonClient();
        const template = await context.progress.step(`Snapshotting ${idOrName} as template ${options.template}`, () =>
          client.snapshotSandbox(idOrName, options.template),
        );
        printOutput(template, options, { table: () => `${template.name}\n` });
      }),
  );
}

/** Top-level shortcuts: ls, ps, inspect, rm, kill, logs, pause, resume, stop, start, restart, fork, snapshot. */
export function sandboxShortcutCommands(): Command[] {
  return [
    listCommand('ls'),
    listCommand('ps'),
    inspectCommand(),
    removeCommand('rm'),
    removeCommand('kill'),
    logsCommand(),
    lifecycleCommand('pause'),
    lifecycleCommand('resume'),
    lifecycleCommand('stop'),
    lifecycleCommand('start'),
    lifecycleCommand('restart'),
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
    lifecycleCommand('pause'),
    lifecycleCommand('resume'),
    lifecycleCommand('stop'),
    lifecycleCommand('start'),
    lifecycleCommand('restart'),
    forkCommand(),
    snapshotCommand(),
    timeoutCommand(),
    keepaliveCommand(),
    networkCommand(),
    setCommand(),
  ]) {
    group.addCommand(subcommand);
  }
  return group;
}
