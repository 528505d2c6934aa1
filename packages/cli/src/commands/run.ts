// `capsule run`: create a sandbox, stream one command in it (-i: with this
// process's stdin; -t: on a terminal, -it: attached to this one), exit with the
// command's code, and remove the sandbox whatever happened (Ctrl-C included)
// unless --keep. `-d` starts the command in the background, keeps the sandbox
// and prints its id. With --workspace, a repository is pushed in first. A
// sandbox it made must never be left behind silently.
import { DEFAULT_TEMPLATE, type ExecRequest } from '@capsule/protocol';
import { Commands, Sandbox, SandboxAgent, type CapsuleClient } from '@capsule/sdk';
import { Command } from 'commander';
import { CliContext } from '../cli-context.js';
import { formatError } from '../error-report.js';
import { formatElapsed } from '../human-format.js';
import { EXIT_CAPSULE_FAILURE, exitCodeOfInterruption } from '../exit-codes.js';
import { Interrupts } from '../interrupts.js';
import { collectEnv, parseCpuCount, parseDurationMs, parseMemoryMiB } from '../option-parsers.js';
import { forwardSignal, streamCommand } from '../stream-command.js';
import { addNetworkOptions, addPublishOption, addVolumeOption, toCreateRequest, type SandboxSpecOptions } from '../create-request.js';
import { runTerminalSession } from '../terminal-session.js';
import { addGlobalOptions } from './global-options.js';

interface RunOptions extends Omit<SandboxSpecOptions, 'metadata'> {
  workspace?: string;
  cwd?: string;
  user?: string;
  timeout?: number;
  keep?: boolean;
  rm?: boolean;
  detach?: boolean;
  interactive?: boolean;
  tty?: boolean;
}

const REMOVE_TIMEOUT_MS = 60_000;
const KEEPALIVE_INTERVAL_MS = 60_000;

/** Removes the sandbox; a failure is reported, not thrown, so the command's exit code survives it. */
async function removeSandbox(context: CliContext, client: CapsuleClient, id: string): Promise<void> {
  const failure = await context.progress.step(`Removing sandbox ${id}`, () =>
    client.deleteSandbox(id, { requestTimeoutMs: REMOVE_TIMEOUT_MS }).then(
      () => undefined,
      (error: unknown) => error ?? new Error('unknown failure'),
    ),
  );
  if (failure !== undefined) {
    const reason = failure instanceof Error ? failure.message : String(failure);
    process.stderr.write(`capsule: could not remove sandbox ${id}: ${reason}\nhint: remove it with \`capsule rm ${id}\`\n`);
    if (context.flags.debug) process.stderr.write(formatError(failure, { debug: true }));
  }
}

/** The flag combinations `run` refuses, and the old `-t TEMPLATE` spelling, as usage errors before anything is created. */
function checkRunOptions(cmd: string[], options: RunOptions, command: Command): void {
  const usage = (message: string) => command.error(`error: ${message}`, { exitCode: 2, code: 'capsule.usage' });
  // Until this release `-t` named the template: `run -t NAME -- CMD` now reads NAME as the command.
  if (options.tty && cmd[1] === '--')
    usage(
      `-t is a terminal now, as in \`docker run -t\`; to pick the template: \`capsule run --template ${cmd[0]} -- ${cmd.slice(2).join(' ')}\``,
    );
  if (options.keep && options.rm) usage('--rm and --keep contradict each other');
  if (options.detach && (options.interactive || options.tty)) usage('-d runs the command in the background: it takes no -i or -t');
  if (options.detach && options.rm) usage('-d keeps the sandbox (remove it with `capsule rm ID`); --rm is what run does without -d');
  if (options.detach && options.timeout !== undefined && cmd.length === 0) usage('--timeout limits a command: give one');
  if (options.tty && options.timeout !== undefined) usage('--timeout does not apply to a terminal session (-t)');
  if (cmd.length === 0 && !options.detach && !options.tty)
    command.error("error: missing the command to run after '--'", { exitCode: 2, code: 'commander.missingArgument' });
}

/**
 * `run -d`: the sandbox without a lifetime and the command started in the
 * background (its output is not kept; `capsule top ID` lists it). A sandbox whose
 * command could not start is removed, since nothing would run in it.
 */
async function runDetached(context: CliContext, client: CapsuleClient, cmd: string[], options: RunOptions): Promise<void> {
  const request = toCreateRequest({ ...options, lifetime: 0 });
  const sandbox = await context.progress.step(`Creating sandbox from template ${request.template}`, () => client.createSandbox(request));
  if (cmd.length > 0) {
    try {
      const handle = await new Commands(new SandboxAgent(client, sandbox.id)).run(cmd, {
        background: true,
        ...(options.cwd !== undefined && { cwd: options.cwd }),
        ...(options.user !== undefined && { user: options.user }),
        timeoutMs: options.timeout ?? 0,
      });
      handle.disconnect();
    } catch (error) {
      await removeSandbox(context, client, sandbox.id);
      throw error;
    }
  }
  process.stdout.write(`${sandbox.id}\n`);
}

async function runAction(rawCmd: string[], options: RunOptions, command: Command): Promise<void> {
  // With pass-through options commander keeps a `--` that follows the options.
  const cmd = rawCmd[0] === '--' ? rawCmd.slice(1) : rawCmd;
  checkRunOptions(cmd, options, command);
  const context = CliContext.of(command);
  const client = await context.daemonClient();
  if (options.detach) return await runDetached(context, client, cmd, options);
  const createRequest = toCreateRequest(options);
  const { template } = createRequest;
  const workspace = options.workspace !== undefined ? await import('./workspace.js') : undefined;
  const execRequest: ExecRequest = {
    cmd,
    // With a workspace, the command runs in it unless told otherwise.
    ...(options.cwd !== undefined ? { cwd: options.cwd } : workspace && { cwd: workspace.defaultPushOptions.to }),
    ...(options.user !== undefined && { user: options.user }),
    ...(options.timeout !== undefined && { timeoutMs: options.timeout }),
  };

  let sandboxId: string | undefined;
  const interrupts = new Interrupts(() => {
    const where = sandboxId
      ? `sandbox ${sandboxId} may still exist; remove it with \`capsule rm ${sandboxId}\``
      : 'a sandbox may have been created; check with `capsule ls`';
    process.stderr.write(`\ncapsule: stopped waiting; ${where}\n`);
  });
  try {
    // Not aborted by Ctrl-C: only a finished create tells us which sandbox to remove.
    const creating = context.progress.step(`Creating sandbox from template ${template}`, () => client.createSandbox(createRequest));
    interrupts.signal.addEventListener('abort', () => {
      if (sandboxId === undefined)
        process.stderr.write('\ncapsule: interrupted; removing the sandbox as soon as it exists (interrupt again to stop waiting)\n');
    });
    const sandbox = await creating;
    sandboxId = sandbox.id;
    context.progress.note(
      `Sandbox ${sandbox.id} is ${sandbox.state}${sandbox.bootMs !== undefined ? ` (booted in ${formatElapsed(sandbox.bootMs)})` : ''}`,
    );
    for (const port of sandbox.ports) context.progress.note(`Port ${port.guestPort} is published on ${port.hostIp}:${port.hostPort}`);

    let exitCode: number = EXIT_CAPSULE_FAILURE;
    let failure: unknown;
    let pid: number | undefined;
    // The sandbox keeps its (default 5-minute) lifetime while we keep it alive:
    // a command may run for hours, yet if this process dies the sandbox does not outlive it for long.
    const keepalive = setInterval(() => void client.keepSandboxAlive(sandbox.id).catch(() => undefined), KEEPALIVE_INTERVAL_MS);
    keepalive.unref();
    try {
      if (workspace !== undefined && options.workspace !== undefined && interrupts.received === undefined) {
        const connected = await Sandbox.connect(sandbox.id, context.connection);
        await workspace
          .pushWorkspace(context, connected, options.workspace, workspace.defaultPushOptions)
          .finally(() => connected.client.close());
      }
      if (interrupts.received === undefined && options.tty) {
        // On a terminal Ctrl-C is a key for the command; SIGTERM and SIGHUP end the session, then the sandbox goes.
        exitCode = await runTerminalSession(client, sandbox.id, {
          ...(cmd.length > 0 && { cmd }),
          ...(options.cwd !== undefined && { cwd: options.cwd }),
          ...(options.user !== undefined && { user: options.user }),
          forwardInput: options.interactive === true,
          signal: interrupts.signal,
        });
      } else if (interrupts.received === undefined) {
        exitCode = await streamCommand(client, sandbox.id, execRequest, {
          signal: interrupts.signal,
          onStart: (started) => (pid = started),
          ...(options.interactive && { stdin: process.stdin }),
        });
      }
    } catch (error) {
      failure = error;
    } finally {
      clearInterval(keepalive);
    }
    if (interrupts.received !== undefined) {
      // A kept sandbox outlives us, so the command must hear the signal; otherwise removal ends it.
      if (options.keep && pid !== undefined) await forwardSignal(client, sandbox.id, pid, interrupts.received);
      exitCode = exitCodeOfInterruption(interrupts.received);
      failure = undefined;
    }
    if (options.keep) {
      await client.setSandboxTimeout(sandbox.id, 0).catch(() => undefined);
      process.stderr.write(`Kept sandbox ${sandbox.id} (no timeout); remove it with \`capsule rm ${sandbox.id}\`\n`);
    } else {
      await removeSandbox(context, client, sandbox.id);
    }
    if (failure !== undefined) throw failure;
    process.exitCode = exitCode;
  } finally {
    interrupts.dispose();
  }
}

export function runCommand(): Command {
  return addGlobalOptions(
    addPublishOption(addVolumeOption(addNetworkOptions(new Command('run'))))
      .description(
        'Run a command in a new sandbox, stream its output and exit with its code; the sandbox is removed afterwards (-d: kept, the command in the background)',
      )
      .argument('[cmd...]', 'the command and its arguments (put them after --); with -t, default a login shell')
      .option('--template <name>', 'template to boot from', DEFAULT_TEMPLATE)
      .option('-d, --detach', 'start the command in the background, keep the sandbox (no lifetime) and print its id')
      .option('-i, --interactive', "send this process's stdin to the command (with -t, what is typed)")
      .option('-t, --tty', 'run the command on a terminal the size of this one (-it: attached to it)')
      .option('--cpus <n>', 'virtual CPUs', parseCpuCount)
      .option('-m, --memory <size>', 'memory, in MiB or with a unit (512, 1G)', parseMemoryMiB)
      .option('-e, --env <K=V>', 'environment variable for the sandbox (repeatable; bare K copies it from here)', collectEnv)
      .option('--workspace <dir>', 'copy this git repository into /home/user/src first (capsule workspace push) and run there')
      .option('-w, --cwd <dir>', 'working directory of the command')
      .option('-u, --user <user>', 'user to run the command as')
      .option('--name <name>', 'name for the sandbox')
      .option('--timeout <duration>', 'kill the command after this long (30s, 5m; 0 = never)', parseDurationMs)
      .option('--keep', 'keep the sandbox after the command ends')
      .option('--rm', 'remove the sandbox when the command ends (what run does unless -d or --keep)')
      .passThroughOptions()
      .action(runAction),
  );
}
