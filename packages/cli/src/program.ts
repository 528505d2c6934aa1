// Assembles the `capsule` command tree and the behaviour every command shares:
// usage errors printed as `capsule: …` with a hint and turned into exceptions
// (main maps them to exit 2), and the global options.
import { createRequire } from 'node:module';
import { Command } from 'commander';
import { apiKeyCommand } from './commands/apikey.js';
import { daemonCommand } from './commands/daemon.js';
import { doctorCommand } from './commands/doctor.js';
import { execCommand, shellCommand } from './commands/exec.js';
import { cpCommand } from './commands/cp.js';
import { filesCommand } from './commands/files.js';
import { imageCommand } from './commands/images.js';
import { addProgramOptions } from './commands/global-options.js';
import { killCommand, psCommand } from './commands/processes.js';
import { portForwardCommand } from './commands/port-forward.js';
import { runCommand } from './commands/run.js';
import { sandboxCommand, sandboxShortcutCommands } from './commands/sandbox.js';
import { templateCommand, templatesCommand } from './commands/templates.js';

const { version } = createRequire(import.meta.url)('../package.json') as { version: string };

function commandPath(command: Command): string {
  const names: string[] = [];
  for (let current: Command | null = command; current; current = current.parent) names.unshift(current.name());
  return names.join(' ');
}

function forEachCommand(command: Command, visit: (command: Command) => void): void {
  visit(command);
  for (const child of command.commands) forEachCommand(child, visit);
}

export function buildProgram(): Command {
  const program = new Command('capsule')
    .description('Run untrusted code and services in microVM sandboxes on this host')
    .version(version, '-V, --version')
    // Options after a subcommand belong to it; after run/exec's command they belong to the command.
    .enablePositionalOptions();
  addProgramOptions(program);
  for (const command of [
    runCommand(),
    execCommand(),
    shellCommand(),
    ...sandboxShortcutCommands(),
    cpCommand(),
    filesCommand(),
    psCommand(),
    killCommand(),
    portForwardCommand(),
    sandboxCommand(),
    templatesCommand(),
    templateCommand(),
    apiKeyCommand(),
    imageCommand(),
    daemonCommand(),
    doctorCommand(),
  ]) {
    program.addCommand(command);
  }
  // Commands built with `new Command()` inherit nothing, so the shared settings are applied to the whole tree.
  forEachCommand(program, (command) => {
    command
      .exitOverride()
      .configureOutput({ outputError: (text, write) => write(text.replace(/^error: /, 'capsule: ')) })
      .showHelpAfterError(`hint: see '${commandPath(command)} --help'`);
    if (command.commands.length > 0) command.enablePositionalOptions();
  });
  return program;
}
