// Runs a `capsule` command line: parses it, runs the command, and ends the
// process with the exit code it decided (see exit-codes.ts). Failures are
// printed by error-report.ts; nothing here prints a stack unless --debug.
import { CommanderError } from 'commander';
import { EXIT_OK, EXIT_USAGE } from './exit-codes.js';
import { runProgram } from './program.js';

async function exitCodeOf(argv: string[]): Promise<number> {
  try {
    await runProgram(argv);
    return process.exitCode === undefined ? EXIT_OK : Number(process.exitCode);
  } catch (error) {
    if (error instanceof CommanderError) return error.exitCode === 0 ? EXIT_OK : EXIT_USAGE;
    // Loaded only now: the reporter brings in the SDK's error classes.
    const [{ reportError }, { lastSeenFlags }] = await Promise.all([import('./error-report.js'), import('./cli-context.js')]);
    return reportError(error, { debug: lastSeenFlags.debug });
  }
}

export async function runCli(argv: string[]): Promise<never> {
  const exitCode = await exitCodeOf(argv);
  // Let buffered output reach its pipe before exiting; exiting explicitly means a
  // lingering socket or timer can never keep the CLI alive.
  await Promise.all([process.stdout, process.stderr].map((stream) => new Promise((resolve) => stream.write('', resolve))));
  process.exit(exitCode);
}
