import { Command } from 'commander';
import { describe, expect, it } from 'vitest';
import { addProgramOptions } from './commands/global-options.js';
import { completionCandidates, type CommandTable } from './completion-candidates.js';
import { loadCommand, topLevelCommands } from './program.js';

// The real command tree, loaded as `capsule` loads it; the daemon's answers are stand-ins.
const table: CommandTable = {
  names: topLevelCommands.map((entry) => entry.name),
  programOptions: addProgramOptions(new Command()).options,
  load: async (name) => {
    const entry = topLevelCommands.find((candidate) => candidate.name === name);
    return entry && (await loadCommand(entry));
  },
};
const live = { sandboxes: async () => ['sb_one', 'web'], templates: async () => ['base', 'python'] };
const complete = (line: string) => {
  const words = line.split(' ');
  return completionCandidates(words.slice(0, -1), words.at(-1) ?? '', table, live);
};

describe('shell completion from the command tree', () => {
  it('completes command names and subcommands', async () => {
    expect(await complete('st')).toEqual(['stats', 'stop', 'start']);
    expect(await complete('volume sn')).toEqual(['snapshot', 'snapshots']);
    expect(await complete('--debug ex')).toEqual(['exec']);
  });

  it("completes a command's flags, and a flag's choices", async () => {
    expect(await complete('ls --f')).toEqual(['--filter', '--format']);
    expect(await complete('ls -o ')).toEqual(['json', 'yaml', 'wide']);
    expect(await complete('sandbox create --on-timeout p')).toEqual(['pause']);
    expect(await complete('completion ')).toEqual(['bash', 'zsh', 'fish']);
  });

  it('completes sandboxes where a command takes one, and templates for --template', async () => {
    expect(await complete('exec ')).toEqual(['sb_one', 'web']);
    expect(await complete('exec -e A=1 w')).toEqual(['web']);
    expect(await complete('rm sb_one ')).toEqual(['sb_one', 'web']);
    expect(await complete('proc kill sb_one ')).toEqual([]);
    expect(await complete('run --template p')).toEqual(['python']);
    expect(await complete('sandbox set ')).toEqual(['sb_one', 'web']);
  });

  it("offers nothing after -- (the sandbox command's words) nor for a free value", async () => {
    expect(await complete('exec web -- ')).toEqual([]);
    expect(await complete('cp ')).toEqual([]);
    expect(await complete('run -m ')).toEqual([]);
    expect(await complete('nonsense ')).toEqual([]);
  });
});
