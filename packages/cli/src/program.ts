// Assembles the `capsule` command tree and the behaviour every command shares:
// usage errors printed as `capsule: …` with a hint and turned into exceptions
// (cli.ts maps them to exit 2), and the global options. Only the command being
// run is imported: the others are stubs holding their help line, so `--help` and
// a mistyped command name never load a command's code or the SDK.
import { Command, Help } from 'commander';
import { clientVersion } from './client-version.js';
import { addProgramOptions } from './commands/global-options.js';

interface TopLevelCommand {
  name: string;
  /** What `capsule --help` shows after the name; program.test.ts checks it against the loaded command. */
  usage: string;
  description: string;
  /** Left out of `capsule --help`: a command other programs run (ssh's ProxyCommand). */
  hidden?: boolean;
  /** Imports the module that builds this command; it may build its siblings too. */
  load: () => Promise<Command[]>;
}

const sandboxModule = async () => {
  const { sandboxShortcutCommands, sandboxCommand } = await import('./commands/sandbox.js');
  return [...sandboxShortcutCommands(), sandboxCommand()];
};
const execModule = async () => {
  const { execCommand, shellCommand } = await import('./commands/exec.js');
  return [execCommand(), shellCommand()];
};
const processModule = async () => {
  const { topCommand, procCommand } = await import('./commands/processes.js');
  return [topCommand(), procCommand()];
};
const eventsModule = async () => {
  const { eventsCommand, webhookCommand } = await import('./commands/events.js');
  return [eventsCommand(), webhookCommand()];
};
const workloadModule = async () => {
  const { applyCommand, diffCommand, workloadCommand } = await import('./commands/workloads.js');
  return [applyCommand(), diffCommand(), workloadCommand()];
};
const sshModule = async () => {
  const { sshCommand, sshConfigCommand, sshProxyCommand } = await import('./commands/ssh.js');
  return [sshCommand(), sshConfigCommand(), sshProxyCommand()];
};
const templateModule = async () => {
  const { templatesCommand, templateCommand } = await import('./commands/templates.js');
  return [templatesCommand(), templateCommand()];
};

/** The top-level commands in the order `capsule --help` lists them. */
export const topLevelCommands: readonly TopLevelCommand[] = [
  {
    name: 'run',
    usage: '[options] [cmd...]',
    description:
      'Run a command in a new sandbox, stream its output and exit with its code; the sandbox is removed afterwards (-d: kept, the command in the background)',
    load: async () => [(await import('./commands/run.js')).runCommand()],
  },
  {
    name: 'exec',
    usage: '[options] <sandbox> [cmd...]',
    description: "Run a command in a running sandbox, stream its output and exit with the command's code",
    load: execModule,
  },
  {
    name: 'shell',
    usage: '[options] <sandbox>',
    description: "An interactive login shell in a running sandbox, on this terminal (exec -it); exits with the shell's code",
    load: execModule,
  },
  { name: 'ls', usage: '[options]', description: 'List sandboxes (killed ones only with --all)', load: sandboxModule },
  { name: 'ps', usage: '[options]', description: 'List sandboxes (killed ones only with --all)', load: sandboxModule },
  { name: 'inspect', usage: '[options] <sandbox>', description: 'Show a sandbox in detail, with its state history', load: sandboxModule },
  {
    name: 'rm',
    usage: '[options] [sandbox...]',
    description: 'Remove sandboxes, running ones included; prints each id removed and reports each failure',
    load: sandboxModule,
  },
  {
    name: 'kill',
    usage: '[options] <sandbox...>',
    description: 'End sandboxes (the same as rm); prints each id removed',
    load: sandboxModule,
  },
  { name: 'logs', usage: '[options] <sandbox>', description: "Print a sandbox's serial console log", load: sandboxModule },
  {
    name: 'stats',
    usage: '[options] [sandbox...]',
    description: "Show sandboxes' CPU, memory and disk use as a live table (like docker stats) until Ctrl-C",
    load: async () => [(await import('./commands/stats.js')).statsCommand()],
  },
  {
    name: 'pause',
    usage: '[options] <sandbox...>',
    description: 'Pause sandboxes: save their memory and end their VMs (no RAM used until resumed)',
    load: sandboxModule,
  },
  { name: 'resume', usage: '[options] <sandbox...>', description: 'Resume paused sandboxes where they stopped', load: sandboxModule },
  {
    name: 'stop',
    usage: '[options] <sandbox...>',
    description: 'Stop sandboxes: their guests flush and power off, their disks stay (no RAM used until started)',
    load: sandboxModule,
  },
  {
    name: 'start',
    usage: '[options] <sandbox...>',
    description: 'Start stopped sandboxes again from their own disks',
    load: sandboxModule,
  },
  {
    name: 'restart',
    usage: '[options] <sandbox...>',
    description: 'Stop sandboxes and start them again from their disks',
    load: sandboxModule,
  },
  {
    name: 'fork',
    usage: '[options] <sandbox>',
    description: 'Start sandboxes that each continue from this moment of a running sandbox; prints their ids',
    load: sandboxModule,
  },
  {
    name: 'snapshot',
    usage: '[options] <sandbox>',
    description: "Make a running sandbox's current state (memory, processes, disk) a new template; the sandbox runs on",
    load: sandboxModule,
  },
  {
    name: 'cp',
    usage: '[options] <src> <dst>',
    description: 'Copy files or directories between this host and a sandbox (ID:/path names the sandbox side), modes kept',
    load: async () => [(await import('./commands/cp.js')).cpCommand()],
  },
  {
    name: 'files',
    usage: '',
    description: 'List, print and remove files in a sandbox (copy them with `capsule cp`)',
    load: async () => [(await import('./commands/files.js')).filesCommand()],
  },
  {
    name: 'top',
    usage: '[options] <sandbox>',
    description: 'List the processes running in a sandbox that its agent started',
    load: processModule,
  },
  { name: 'proc', usage: '', description: "List and end the processes a sandbox's agent started", load: processModule },
  {
    name: 'port-forward',
    usage: '[options] <sandbox> <[local:]remote>',
    description: 'Forward a local TCP port to a port inside a sandbox, until Ctrl-C',
    load: async () => [(await import('./commands/port-forward.js')).portForwardCommand()],
  },
  {
    name: 'ssh',
    usage: '[options] <sandbox> [cmd...]',
    description: "Log in to a sandbox with the system's ssh (or run CMD), its host key pinned; your public key is authorised",
    load: sshModule,
  },
  {
    name: 'ssh-config',
    usage: '[options]',
    description: 'Print a `Host *.capsule` block for ~/.ssh/config: ssh, scp, rsync and editors then reach sandboxes by name',
    load: sshModule,
  },
  {
    name: 'ssh-proxy',
    usage: '[options] <host>',
    description: "ssh's ProxyCommand for sandboxes: carries one SSH connection on stdin and stdout",
    hidden: true,
    load: sshModule,
  },
  {
    name: 'workspace',
    usage: '',
    description: "Copy a git repository's files into a sandbox",
    load: async () => [(await import('./commands/workspace.js')).workspaceCommand()],
  },
  { name: 'sandbox', usage: '', description: 'Create, list, inspect, time out and remove sandboxes', load: sandboxModule },
  { name: 'templates', usage: '[options]', description: 'List templates', load: templateModule },
  { name: 'template', usage: '', description: 'Manage templates', load: templateModule },
  {
    name: 'context',
    usage: '',
    description: 'Reach daemons on other hosts by name (their address, API key and pinned certificate)',
    load: async () => [(await import('./commands/context.js')).contextCommand()],
  },
  {
    name: 'apikey',
    usage: '',
    description: 'Manage API keys for clients over TCP',
    load: async () => [(await import('./commands/apikey.js')).apiKeyCommand()],
  },
  {
    name: 'image',
    usage: '',
    description: 'Manage OCI images that templates are built from',
    load: async () => [(await import('./commands/images.js')).imageCommand()],
  },
  {
    name: 'volume',
    usage: '',
    description: 'Manage volumes: disks that outlive sandboxes',
    load: async () => [(await import('./commands/volumes.js')).volumeCommand()],
  },
  {
    name: 'apply',
    usage: '[options]',
    description: 'Create, keep or replace the workloads a file declares (YAML or JSON, several documents)',
    load: workloadModule,
  },
  {
    name: 'diff',
    usage: '[options]',
    description: 'Show what `capsule apply -f FILE` would change, changing nothing',
    load: workloadModule,
  },
  {
    name: 'workload',
    usage: '',
    description: 'Manage workloads: services the daemon keeps running (declared with capsule apply -f)',
    load: workloadModule,
  },
  {
    name: 'events',
    usage: '[options]',
    description: 'Stream sandbox, template and image events until Ctrl-C',
    load: eventsModule,
  },
  { name: 'webhook', usage: '', description: 'Manage webhooks: URLs that receive events as signed POSTs', load: eventsModule },
  {
    name: 'dashboard',
    usage: '[options]',
    description: 'Open the web dashboard, signed in by a one-time link (capsuled must listen on TCP)',
    load: async () => [(await import('./commands/dashboard.js')).dashboardCommand()],
  },
  {
    name: 'system',
    usage: '',
    description: 'Show the disk space capsule uses, and free it',
    load: async () => [(await import('./commands/system.js')).systemCommand()],
  },
  {
    name: 'completion',
    usage: '[options] <shell> [words...]',
    description: 'Print a shell completion script (bash, zsh or fish); sandbox ids, names and templates complete live',
    load: async () => [(await import('./commands/completion.js')).completionCommand()],
  },
  {
    name: 'daemon',
    usage: '',
    description: 'Start, stop or check capsuled, the host daemon, or install it as a systemd service',
    load: async () => [(await import('./commands/daemon.js')).daemonCommand()],
  },
  {
    name: 'doctor',
    usage: '[options]',
    description: 'Check that this host can run sandboxes',
    load: async () => [(await import('./commands/doctor.js')).doctorCommand()],
  },
  {
    name: 'version',
    usage: '[options]',
    description: "Show the version of this client and of the daemon it reaches (--version: the client's alone)",
    load: async () => [(await import('./commands/version.js')).versionCommand()],
  },
];

/** Imports `entry`'s module and returns the command it builds. */
export async function loadCommand(entry: TopLevelCommand): Promise<Command> {
  const command = (await entry.load()).find((candidate) => candidate.name() === entry.name);
  if (command === undefined) throw new Error(`internal: the module of \`capsule ${entry.name}\` does not build it`);
  return command;
}

function commandPath(command: Command): string {
  const names: string[] = [];
  for (let current: Command | null = command; current; current = current.parent) names.unshift(current.name());
  return names.join(' ');
}

function forEachCommand(command: Command, visit: (command: Command) => void): void {
  visit(command);
  for (const child of command.commands) forEachCommand(child, visit);
}

/**
 * The program with `loaded` in its place and a stub for every other command:
 * a stub takes any arguments and only reports, through `onStub`, that it was chosen.
 */
function assembleProgram(loaded: Command | undefined, onStub: (entry: TopLevelCommand) => void): Command {
  const program = new Command('capsule')
    .description('Run untrusted code and services in microVM sandboxes on this host')
    .version(clientVersion, '-V, --version')
    // Options after a subcommand belong to it; after run/exec's command they belong to the command.
    .enablePositionalOptions();
  addProgramOptions(program);
  for (const entry of topLevelCommands) {
    const hidden = { hidden: entry.hidden === true };
    if (entry.name === loaded?.name()) {
      program.addCommand(loaded, hidden);
      continue;
    }
    program.addCommand(
      new Command(entry.name)
        .description(entry.description)
        .helpOption(false)
        .allowUnknownOption()
        .allowExcessArguments()
        .action(() => onStub(entry)),
      hidden,
    );
  }
  // Commander's own help command would print a stub's help; this one lets the stub be replaced first.
  program.addCommand(
    new Command('help')
      .description('display help for command')
      .argument('[command]')
      .action((name: string | undefined) => {
        const entry = topLevelCommands.find((candidate) => candidate.name === name);
        if (entry === undefined) program.help({ error: name !== undefined });
        else if (entry.name === loaded?.name()) loaded.help();
        else onStub(entry);
      }),
  );
  program.configureHelp({
    subcommandTerm: (command) => {
      const entry = topLevelCommands.find((candidate) => candidate.name === command.name());
      return entry === undefined ? new Help().subcommandTerm(command) : `${entry.name} ${entry.usage}`.trimEnd();
    },
  });
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

/**
 * Parses `argv` with stubs to learn which command it names (commander decides,
 * as it will for the real one), then loads that command alone and parses again.
 */
export async function runProgram(argv: string[]): Promise<void> {
  let chosen: TopLevelCommand | undefined;
  await assembleProgram(undefined, (entry) => {
    chosen = entry;
  }).parseAsync(argv);
  if (chosen === undefined) return;
  const loaded = await loadCommand(chosen);
  await assembleProgram(loaded, (entry) => {
    throw new Error(`internal: \`capsule ${entry.name}\` was chosen on the second parse of the command line, not \`${chosen?.name}\``);
  }).parseAsync(argv);
}
