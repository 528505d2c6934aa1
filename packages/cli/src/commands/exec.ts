// `capsule exec`: run a command in an existing sandbox, stream its output as raw
// bytes and exit with its code. Ctrl-C passes the signal on to the command and
// exits 128+signal; the sandbox itself is left alone.
import type { ExecRequest } from '@capsule/protocol';
import { Command } from 'commander';
import { CliContext } from '../cli-context.js';
import { exitCodeOfInterruption } from '../exit-codes.js';
import { Interrupts } from '../interrupts.js';
import { collectEnv, parseDurationMs } from '../option-parsers.js';
import { forwardSignal, streamCommand } from '../stream-command.js';
import { addGlobalOptions } from './global-options.js';

interface ExecOptions {
  env?: Record<string, string>;
  cwd?: string;
  user?: string;
  timeout?: number;
}

async function execAction(idOrName: string, cmd: string[], options: ExecOptions, command: Command): Promise<void> {
  if (cmd.length === 1 && cmd[0] === '--') command.error("error: missing the command to run after '--'", { exitCode: 2, code: 'commander.missingArgument' });
  const client = await CliContext.of(command).daemonClient();
  const request: ExecRequest = {
    // With pass-through options commander keeps a `--` that follows the sandbox argument.
    cmd: cmd[0] === '--' ? cmd.slice(1) : cmd,
    ...(options.env && { env: options.env }),
    ...(options.cwd !== undefined && { cwd: options.cwd }),
    ...(options.user !== undefined && { user: options.user }),
    ...(options.timeout !== undefined && { timeoutMs: options.timeout }),
  };
  const interrupts = new Interrupts();
  let pid: number | undefined;
  try {
    process.exitCode = await streamCommand(client, idOrName, request, { signal: interrupts.signal, onStart: (started) => (pid = started) });
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
      .argument('<cmd...>', 'the command and its arguments (put them after --)')
      .option('-e, --env <K=V>', 'environment variable for the command (repeatable; bare K copies it from here)', collectEnv)
      .option('-w, --cwd <dir>', 'working directory of the command')
      .option('-u, --user <user>', 'user to run the command as')
      .option('--timeout <duration>', 'kill the command after this long (30s, 5m; 0 = never)', parseDurationMs)
      .passThroughOptions()
      .action(execAction),
  );
}
