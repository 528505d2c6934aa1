// `capsule doctor`: one line per host check (ok/warn/fail); exits 1 when any
// check fails. It reads the daemon's view when one runs but never starts one.
import { Command } from 'commander';
import { CliContext } from '../cli-context.js';
import { formatCheck, runAllChecks } from '../doctor-checks.js';
import { EXIT_CHECK_FAILED } from '../exit-codes.js';
import { addGlobalOptions } from './global-options.js';
import { addOutputOptions, printOutput, type OutputOptions } from '../output-format.js';

export function doctorCommand(): Command {
  return addGlobalOptions(
    addOutputOptions(new Command('doctor'))
      .description('Check that this host can run sandboxes')
      .action(async (options: OutputOptions, command: Command) => {
        const checks = await runAllChecks(CliContext.of(command).client());
        printOutput(checks, options, { table: () => checks.map((check) => `${formatCheck(check)}\n`).join('') });
        if (checks.some((check) => check.status === 'fail')) process.exitCode = EXIT_CHECK_FAILED;
      }),
  );
}
