// The options every leaf command accepts, wherever they appear on the line
// (`capsule --debug ls` and `capsule ls --debug`). Commands read them merged
// with the program's through CliContext.of().
import { type Command, Option } from 'commander';

const CONTEXT_HELP = 'the daemon to use, from `capsule context ls` (default: $CAPSULE_CONTEXT, else the current context)';

export function addGlobalOptions(command: Command): Command {
  return command
    .addOption(new Option('--debug', 'print stack traces and wire codes on errors').hideHelp())
    .addOption(new Option('--verbose', 'print progress of long steps even when stderr is not a terminal').hideHelp())
    .addOption(
      new Option(
        '--socket <path>',
        "capsuled's socket (default: $CAPSULE_SOCKET, else $CAPSULE_RUNTIME_DIR/capsuled.sock, else /run/capsule/capsuled.sock)",
      ).hideHelp(),
    )
    .addOption(new Option('--context <name>', CONTEXT_HELP).hideHelp());
}

/** The same options, shown in the program's help. */
export function addProgramOptions(program: Command): Command {
  return program
    .option('--debug', 'print stack traces and wire codes on errors')
    .option('--verbose', 'print progress of long steps even when stderr is not a terminal')
    .option(
      '--socket <path>',
      "capsuled's socket (default: $CAPSULE_SOCKET, else $CAPSULE_RUNTIME_DIR/capsuled.sock, else /run/capsule/capsuled.sock)",
    )
    .option('--context <name>', CONTEXT_HELP);
}
