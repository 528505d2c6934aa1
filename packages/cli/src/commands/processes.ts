// `capsule top ID` (= `capsule proc ls ID`) and `capsule proc kill ID PID`:
// the processes the sandbox's agent started (commands, background commands,
// the template's start command), and ending one of them by its pid in the
// sandbox. (`ps` and `kill` are docker's verbs for sandboxes: sandbox.ts.)
import { Command } from 'commander';
import { processTable } from '../human-format.js';
import { parseKillSignal, parsePid } from '../option-parsers.js';
import { withSandbox } from './files.js';
import { addGlobalOptions } from './global-options.js';
import { addOutputOptions, printOutput, type OutputOptions } from '../output-format.js';
import { NotFoundError } from '@capsule/sdk';

function listProcessesCommand(name: 'top' | 'ls'): Command {
  return addGlobalOptions(
    addOutputOptions(
      new Command(name)
        .description('List the processes running in a sandbox that its agent started')
        .argument('<sandbox>', 'sandbox id or name'),
    ).action(async (idOrName: string, options: OutputOptions, command: Command) => {
      const processes = await withSandbox(command, idOrName, (sandbox) => sandbox.commands.list());
      printOutput(processes, options, { table: () => processTable(processes) });
    }),
  );
}

function killProcessCommand(): Command {
  return addGlobalOptions(
    new Command('kill')
      .description('End a process in a sandbox by its pid (see `capsule top`)')
      .argument('<sandbox>', 'sandbox id or name')
      .argument('<pid>', 'the process id in the sandbox', parsePid)
      .option('-s, --signal <signal>', 'KILL or TERM', parseKillSignal, 'SIGKILL' as const)
      .action(async (idOrName: string, pid: number, options: { signal: 'SIGKILL' | 'SIGTERM' }, command: Command) => {
        await withSandbox(command, idOrName, async (sandbox) => {
          if (!(await sandbox.commands.kill(pid, { killSignal: options.signal }))) {
            throw new NotFoundError('not_found', `no process ${pid} runs in ${idOrName}`, {
              hint: `list its processes with \`capsule top ${idOrName}\``,
            });
          }
        });
      }),
  );
}

export function topCommand(): Command {
  return listProcessesCommand('top');
}

/** `capsule proc ls|kill`. */
export function procCommand(): Command {
  return new Command('proc')
    .description("List and end the processes a sandbox's agent started")
    .addCommand(listProcessesCommand('ls'))
    .addCommand(killProcessCommand());
}
