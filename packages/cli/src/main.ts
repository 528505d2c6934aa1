#!/usr/bin/env node
// The `capsule` executable: parses the command line, runs the command, and ends
// the process with the exit code it decided (see exit-codes.ts). Failures are
// printed by error-report.ts; nothing here prints a stack unless --debug.
import { CommanderError } from 'commander';
import { lastSeenFlags } from './cli-context.js';
import { reportError } from './error-report.js';
import { EXIT_OK, EXIT_USAGE } from './exit-codes.js';
import { buildProgram } from './program.js';

async function main(argv: string[]): Promise<number> {
  try {
    await buildProgram().parseAsync(argv);
    return process.exitCode === undefined ? EXIT_OK : Number(process.exitCode);
  } catch (error) {
    if (error instanceof CommanderError) return error.exitCode === 0 ? EXIT_OK : EXIT_USAGE;
    return reportError(error, { debug: lastSeenFlags.debug });
  }
}

const exitCode = await main(process.argv);
// Let buffered output reach its pipe before exiting; exiting explicitly means a
// lingering socket or timer can never keep the CLI alive.
await Promise.all([process.stdout, process.stderr].map((stream) => new Promise((resolve) => stream.write('', resolve))));
process.exit(exitCode);
