// `capsule events` (the daemon's event stream, until Ctrl-C) and `capsule
// webhook` (URLs that receive events as signed POSTs). A webhook's secret is
// printed once, when it is added; the daemon never shows it again.
import { Command } from 'commander';
import { CliContext } from '../cli-context.js';
import { collectEventFilter, deliveryTable, formatEventLine, parseSince, webhookTable, type EventFilters } from '../event-format.js';
import { Interrupts } from '../interrupts.js';
import { addGlobalOptions } from './global-options.js';
import { addOutputOptions, formatOutput, printOutput, type OutputOptions } from '../output-format.js';

export function eventsCommand(): Command {
  return addGlobalOptions(
    addOutputOptions(new Command('events'))
      .description('Stream sandbox, template and image events until Ctrl-C')
      .option('--since <duration|id>', 'first replay the events of this long ago (10m, 1h) or after this event id')
      .option(
        '--filter <key=value>',
        'only events of sandbox=ID, template=NAME or type=TYPE (sandbox.killed, image, ...); repeatable',
        collectEventFilter,
      )
      .action(async (options: OutputOptions & { since?: string; filter?: EventFilters }, command: Command) => {
        const client = await CliContext.of(command).daemonClient();
        const interrupts = new Interrupts();
        try {
          const events = client.events({
            ...(options.since !== undefined ? { since: parseSince(options.since) } : {}),
            sandboxes: options.filter?.sandboxes ?? [],
            templates: options.filter?.templates ?? [],
            types: options.filter?.types ?? [],
            signal: interrupts.signal,
          });
          // One line per event in JSON too, so that a reader can take each as it comes.
          const oneLineJson = options.json || options.output === 'json';
          for await (const event of events)
            process.stdout.write(
              oneLineJson ? `${JSON.stringify(event)}\n` : formatOutput(event, options, { table: () => formatEventLine(event) }),
            );
        } catch (error) {
          // Ctrl-C is how this command ends.
          if (interrupts.received === undefined) throw error;
        } finally {
          interrupts.dispose();
          client.close();
        }
      }),
  );
}

function addWebhookCommand(): Command {
  return addGlobalOptions(
    addOutputOptions(new Command('add'))
      .description('Register a URL that receives events as signed POSTs; prints its id and signing secret (shown only now)')
      .argument('<url>', 'an http:// or https:// URL')
      .option('--secret <secret>', 'the signing secret (at least 16 characters); one is made when omitted')
      .option('--events <types>', 'comma-separated event types or families (sandbox, template, image); all when omitted')
      .action(async (url: string, options: OutputOptions & { secret?: string; events?: string }, command: Command) => {
        const client = await CliContext.of(command).daemonClient();
        const created = await client.createWebhook({
          url,
          ...(options.secret !== undefined ? { secret: options.secret } : {}),
          ...(options.events !== undefined ? { events: options.events.split(',').filter((t) => t !== '') } : {}),
        });
        printOutput(created, options, { table: () => `${created.id}\nsecret: ${created.secret}\n` });
      }),
  );
}

function listWebhooksCommand(): Command {
  return addGlobalOptions(
    addOutputOptions(new Command('ls'))
      .description('List webhooks')
      .action(async (options: OutputOptions, command: Command) => {
        const client = await CliContext.of(command).daemonClient();
        const webhooks = await client.listWebhooks();
        printOutput(webhooks, options, { table: () => webhookTable(webhooks) });
      }),
  );
}

function removeWebhookCommand(): Command {
  return addGlobalOptions(
    new Command('rm')
      .description('Remove webhooks; deliveries still queued for them are dropped')
      .argument('<id...>', 'webhook ids, as `capsule webhook ls` shows them')
      .action(async (ids: string[], _options: unknown, command: Command) => {
        const client = await CliContext.of(command).daemonClient();
        for (const id of ids) await client.deleteWebhook(id);
      }),
  );
}

function deliveriesCommand(): Command {
  return addGlobalOptions(
    addOutputOptions(new Command('deliveries'))
      .description("A webhook's newest deliveries and their status")
      .argument('<id>', 'the webhook id')
      .action(async (id: string, options: OutputOptions, command: Command) => {
        const client = await CliContext.of(command).daemonClient();
        const deliveries = await client.webhookDeliveries(id);
        printOutput(deliveries, options, { table: () => deliveryTable(deliveries) });
      }),
  );
}

export function webhookCommand(): Command {
  return new Command('webhook')
    .description('Manage webhooks: URLs that receive events as signed POSTs')
    .addCommand(addWebhookCommand())
    .addCommand(listWebhooksCommand())
    .addCommand(removeWebhookCommand())
    .addCommand(deliveriesCommand());
}
