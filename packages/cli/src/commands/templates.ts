// `capsule templates` (also `capsule template ls`): the templates sandboxes can boot from.
import { Command } from 'commander';
import { CliContext } from '../cli-context.js';
import { templateTable } from '../human-format.js';
import { addGlobalOptions } from './global-options.js';
import { printJson } from './print-json.js';

function listTemplatesCommand(name: string): Command {
  return addGlobalOptions(
    new Command(name)
      .description('List templates')
      .option('--json', 'print the templates as a JSON array')
      .action(async (options: { json?: boolean }, command: Command) => {
        const client = await CliContext.of(command).daemonClient();
        const templates = await client.listTemplates();
        if (options.json) printJson(templates);
        else process.stdout.write(templateTable(templates));
      }),
  );
}

export function templatesCommand(): Command {
  return listTemplatesCommand('templates');
}

export function templateCommand(): Command {
  return new Command('template').description('Manage templates').addCommand(listTemplatesCommand('ls'));
}
