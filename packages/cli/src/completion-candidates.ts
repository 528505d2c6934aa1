// What the shell may complete next on a `capsule` command line, read from the
// command tree itself (names, subcommands, flags, flag choices, argument names)
// so that no list is kept by hand. Sandbox ids and names, and template names,
// come live from the daemon through `live`; completion never starts a daemon.
import type { Command, Option } from 'commander';

/** What completion may ask the daemon; each answer may be empty (no daemon, no answer in time). */
export interface LiveNames {
  sandboxes: () => Promise<string[]>;
  templates: () => Promise<string[]>;
}

/** The top-level names and a way to load the command one of them stands for. */
export interface CommandTable {
  names: readonly string[];
  programOptions: readonly Option[];
  load: (name: string) => Promise<Command | undefined>;
}

function takesValue(option: Option): boolean {
  return option.required || option.optional;
}

function flagsOf(options: readonly Option[]): string[] {
  return options.filter((option) => !option.hidden).flatMap((option) => [option.long, option.short].filter((flag) => flag !== undefined));
}

function findOption(options: readonly Option[], flag: string): Option | undefined {
  return options.find((option) => option.long === flag || option.short === flag);
}

/**
 * Candidates for `current`, the word being typed, after `before` (the words
 * typed so far, without `capsule`), filtered by what `current` starts with.
 */
export async function completionCandidates(
  before: readonly string[],
  current: string,
  table: CommandTable,
  live: LiveNames,
): Promise<string[]> {
  const matching = (candidates: readonly string[]) => [...new Set(candidates)].filter((candidate) => candidate.startsWith(current));
  let command: Command | undefined;
  let options: readonly Option[] = table.programOptions;
  let positionals = 0;
  let afterDoubleDash = false;
  for (let index = 0; index < before.length; index++) {
    const word = before[index]!;
    if (word === '--') {
      // After `--` come the sandbox command's own words (run, exec): nothing of capsule's to complete.
      afterDoubleDash = true;
      break;
    }
    if (word.startsWith('-')) {
      const option = word.includes('=') ? undefined : findOption(options, word);
      if (option && takesValue(option)) index++; // its value is not a positional word
      continue;
    }
    if (command === undefined) {
      command = await table.load(word);
      if (command === undefined) return [];
      options = [...command.options, ...table.programOptions];
      continue;
    }
    const subcommand = command.commands.find((candidate) => candidate.name() === word);
    if (subcommand) {
      command = subcommand;
      options = [...subcommand.options, ...table.programOptions];
      positionals = 0;
    } else positionals++;
  }
  if (afterDoubleDash) return [];

  const previous = before.at(-1);
  const pendingOption = previous?.startsWith('-') ? findOption(options, previous) : undefined;
  if (pendingOption && takesValue(pendingOption)) {
    if (pendingOption.argChoices) return matching(pendingOption.argChoices);
    if (pendingOption.long === '--template') return matching(await live.templates());
    return []; // a free value (a path, a size): the shell's own completion applies
  }
  if (current.startsWith('-')) return matching(flagsOf(options));
  if (command === undefined) return matching(table.names);
  if (command.commands.length > 0) return matching(command.commands.map((subcommand) => subcommand.name()));
  const argumentsOf = command.registeredArguments;
  const argument = argumentsOf[positionals] ?? (argumentsOf.at(-1)?.variadic ? argumentsOf.at(-1) : undefined);
  if (argument?.argChoices) return matching(argument.argChoices);
  if (argument?.name() === 'sandbox') return matching(await live.sandboxes());
  return [];
}
