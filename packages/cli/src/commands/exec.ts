// `capsule exec`: run a command in an existing sandbox, stream its output as raw
// bytes and exit with its code; with -i it reads this process's stdin. Ctrl-C
// passes the signal on to the command and exits 128+signal; the sandbox itself
// is left alone. With -t the command runs
// on a terminal (-it: attached to this one), and `capsule shell` is `exec -it`
// with the sandbox's login shell.
import type { ExecRequest } from '@capsule/protocol';
import { Command } from 'commander';
import { CliContext } from '../cli-context.js';
import { exitCodeOfInterruption } from '../exit-codes.js';
import { Interrupts } from '../interrupts.js';
import { collectEnv, parseDurationMs } from '../option-parsers.js';
import { forwardSignal, streamCommand } from '../stream-command.js';
import { runTerminalSession } from '../terminal-session.js';
import { addGlobalOptions } from './global-options.js';

interface ExecOptions {
  env?: Record<string, string>;
  cwd?: string;
  user?: string;
  timeout?: number;
  interactive?: boolean;
  tty?: boolean;
}

async function execAction(idOrName: string, rawCmd: string[], options: ExecOptions, command: Command): Promise<void> {
  // With pass-through options commander keeps a `--` that follows the sandbox argument.
  const cmd = rawCmd[0] === '--' ? rawCmd.slice(1) : rawCmd;
  if (options.tty) {
    if (options.timeout !== undefined)
      command.error('error: --timeout does not apply to a terminal session (-t)', { exitCode: 2, code: 'capsule.usage' });
    const client = await CliContext.of(command).daemonClient();
    process.exitCode = await runTerminalSession(client, idOrName, {
      ...(cmd.length > 0 && { cmd }),
      ...(options.env && { env: options.env }),
      ...(options.cwd !== undefined && { cwd: options.cwd }),
      ...(options.user !== undefined && { user: options.user }),
      forwardInput: options.interactive === true,
    });
    return;
  }
  if (cmd.length === 0) command.error("error: missing the command to run after '--'", { exitCode: 2, code: 'commander.missingArgument' });
  const client = await CliContext.of(command).daemonClient();
  const request: ExecRequest = {
    cmd,
    ...(options.env && { env: options.env }),
    ...(options.cwd !== undefined && { cwd: options.cwd }),
    ...(options.user !== undefined && { user: options.user }),
    ...(options.timeout !== undefined && { timeoutMs: options.timeout }),
  };
  const interrupts = new Interrupts();
  let pid: number | undefined;
  try {
    process.exitCode = await streamCommand(client, idOrName, request, {
      signal: interrupts.signal,
      onStart: (started) => (pid = started),
      ...(options.interactive && { stdin: process.stdin }),
    });
  } catch (error) {
    if (interrupts.received === undefined) throw error;
    if (pid !== undefined) await forwardSignal(client, idOrName, pid, interrupts.received);
    process.exitCode = exitCodeOfInterruption(interrupts.received);
  } finally {
    interrupts.dispose();
  }
}

export function execCommand(): Command {
  return addGlobalOptions(
    new Command('exec')
      .description("Run a command in a running sandbox, stream its output and exit with the command's code")
      .argument('<sandbox>', 'sandbox id or name')
      .argument('[cmd...]', 'the command and its arguments (put them after --); with -t, default a login shell')
      .option('-i, --interactive', "send this process's stdin to the command (piped input; with -t, what is typed)")
      .option('-t, --tty', "run the command on a terminal the size of this one; its exit code is capsule's")
      .option('-e, --env <K=V>', 'environment variable for the command (repeatable; bare K copies it from here)', collectEnv)
      .option('-w, --cwd <dir>', 'working directory of the command')
      .option('-u, --user <user>', 'user to run the command as')
      .option('--timeout <duration>', 'kill the command after this long (30s, 5m; 0 = never)', parseDurationMs)
      .passThroughOptions()
      .action(execAction),
  );
}

async function shellAction(idOrName: string, options: Pick<ExecOptions, 'env' | 'cwd' | 'user'>, command: Command): Promise<void> {
  const client = await CliContext.of(command).daemonClient();
  process.exitCode = await runTerminalSession(client, idOrName, {
    ...(options.env && { env: options.env }),
    ...(options.cwd !== undefined && { cwd: options.cwd }),
    ...(options.user !== undefined && { user: options.user }),
    forwardInput: true,
  });
}

export function shellCommand(): Command {
  return addGlobalOptions(
    new Command('shell')
      .description("An interactive login shell in a running sandbox, on this terminal (exec -it); exits with the shell's code")
      .argument('<sandbox>', 'sandbox id or name')
      .option('-e, --env <K=V>', 'environment variable for the shell (repeatable; bare K copies it from here)', collectEnv)
      .option('-w, --cwd <dir>', 'working directory of the shell')
      .option('-u, --user <user>', 'user to run the shell as')
      .action(shellAction),
  );
}
