// `capsule --help` is printed from the table in program.ts, without loading the
// commands: these tests keep that table true to the commands it stands for.
import { Help } from 'commander';
import { describe, expect, it } from 'vitest';
import { loadCommand, topLevelCommands } from './program.js';

describe('the top-level command table', () => {
  it.each(topLevelCommands.map((entry) => [entry.name, entry] as const))('matches the command %s builds', async (_name, entry) => {
    const command = await loadCommand(entry);
    expect(command.description()).toBe(entry.description);
    expect(new Help().subcommandTerm(command)).toBe(`${entry.name} ${entry.usage}`.trimEnd());
  });

  it('names each command once', () => {
    const names = topLevelCommands.map((entry) => entry.name);
    expect(new Set(names).size).toBe(names.length);
  });
});
