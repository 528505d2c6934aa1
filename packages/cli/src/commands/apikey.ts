// `capsule apikey`: keys for API clients over TCP (capsuled with CAPSULE_LISTEN,
// e.g. the e2b SDK). Managed through the unix socket only; a key is printed
// once, when it is created, and the daemon keeps only its hash.
import { Command } from 'commander';
import { CliContext } from '../cli-context.js';
import { apiKeyTable } from '../human-format.js';
import { addGlobalOptions } from './global-options.js';
import { addOutputOptions, printOutput, type OutputOptions } from '../output-format.js';

function createCommand(): Command {
  return addGlobalOptions(
    addOutputOptions(new Command('create'))
      .description('Create an API key and print it (the only time it is shown)')
      .argument('<name>', 'what the key is for')
      .option('--key <e2b_…>', 'register this existing e2b-form key instead of generating one')
      .action(async (name: string, options: { key?: string } & OutputOptions, command: Command) => {
        const client = await CliContext.of(command).daemonClient();
        const created = await client.createApiKey(name, options.key);
        printOutput(created, options, { table: () => `${created.key}\n` });
      }),
  );
}

function listCommand(): Command {
  return addGlobalOptions(
    addOutputOptions(new Command('ls').description('List API keys (masked)')).action(async (options: OutputOptions, command: Command) => {
      const client = await CliContext.of(command).daemonClient();
      const keys = await client.listApiKeys();
      printOutput(keys, options, { table: () => apiKeyTable(keys) });
    }),
  );
}

function removeCommand(): Command {
  return addGlobalOptions(
    new Command('rm')
      .description('Remove API keys; clients using them are refused from then on')
      .argument('<id...>', 'key ids, as `capsule apikey ls` shows them')
      .action(async (ids: string[], _options: unknown, command: Command) => {
        const client = await CliContext.of(command).daemonClient();
        for (const id of ids) await client.deleteApiKey(id);
      }),
  );
}

export function apiKeyCommand(): Command {
  return new Command('apikey')
    .description('Manage API keys for clients over TCP')
    .addCommand(createCommand())
    .addCommand(listCommand())
    .addCommand(removeCommand());
}
