// `capsule doctor`: one line per host check (ok/warn/fail); exits 1 when any
// check fails. It reads the daemon's view when one runs but never starts one.
import { Command } from 'commander';
import { CliContext } from '../cli-context.js';
import { formatCheck, runAllChecks } from '../doctor-checks.js';
import { EXIT_CHECK_FAILED } from '../exit-codes.js';
import { addGlobalOptions } from './global-options.js';
import { printJson } from './print-json.js';

export function doctorCommand(): Command {
  return addGlobalOptions(
    new Command('doctor')
      .description('Check that this host can run sandboxes')
      .option('--json', 'print the checks as a JSON array')
      .action(async (options: { json?: boolean }, command: Command) => {
        const checks = await runAllChecks(CliContext.of(command).client());
        if (options.json) printJson(checks);
        else process.stdout.write(checks.map((check) => `${formatCheck(check)}\n`).join(''));
        if (checks.some((check) => check.status === 'fail')) process.exitCode = EXIT_CHECK_FAILED;
      }),
  );
}
