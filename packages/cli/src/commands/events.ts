// `capsule events` (the daemon's event stream, until Ctrl-C) and `capsule
// webhook` (URLs that receive events as signed POSTs). A webhook's secret is
// printed once, when it is added; the daemon never shows it again.
import { Command } from 'commander';
import { CliContext } from '../cli-context.js';
import { collectEventFilter, deliveryTable, formatEventLine, parseSince, webhookTable, type EventFilters } from '../event-format.js';
import { Interrupts } from '../interrupts.js';
import { addGlobalOptions } from './global-options.js';
import { printJson } from './print-json.js';

export function eventsCommand(): Command {
  return addGlobalOptions(
    new Command('events')
      .description('Stream sandbox, template and image events until Ctrl-C')
      .option('--since <duration|id>', 'first replay the events of this long ago (10m, 1h) or after this event id')
      .option(
        '--filter <key=value>',
        'only events of sandbox=ID, template=NAME or type=TYPE (sandbox.killed, image, ...); repeatable',
        collectEventFilter,
      )
      .option('--json', 'print each event as a line of JSON')
      .action(async (options: { since?: string; filter?: EventFilters; json?: boolean }, command: Command) => {
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
          for await (const event of events) process.stdout.write(options.json ? `${JSON.stringify(event)}\n` : formatEventLine(event));
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
    new Command('add')
      .description('Register a URL that receives events as signed POSTs; prints its id and signing secret (shown only now)')
      .argument('<url>', 'an http:// or https:// URL')
      .option('--secret <secret>', 'the signing secret (at least 16 characters); one is made when omitted')
      .option('--events <types>', 'comma-separated event types or families (sandbox, template, image); all when omitted')
      .option('--json', 'print the webhook and its secret as JSON')
      .action(async (url: string, options: { secret?: string; events?: string; json?: boolean }, command: Command) => {
        const client = await CliContext.of(command).daemonClient();
        const created = await client.createWebhook({
          url,
          ...(options.secret !== undefined ? { secret: options.secret } : {}),
          ...(options.events !== undefined ? { events: options.events.split(',').filter((t) => t !== '') } : {}),
        });
        if (options.json) printJson(created);
        else process.stdout.write(`${created.id}\nsecret: ${created.secret}\n`);
      }),
  );
}

function listWebhooksCommand(): Command {
  return addGlobalOptions(
    new Command('ls')
      .description('List webhooks')
      .option('--json', 'print the webhooks as a JSON array')
      .action(async (options: { json?: boolean }, command: Command) => {
        const client = await CliContext.of(command).daemonClient();
        const webhooks = await client.listWebhooks();
        if (options.json) printJson(webhooks);
        else process.stdout.write(webhookTable(webhooks));
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
    new Command('deliveries')
      .description("A webhook's newest deliveries and their status")
      .argument('<id>', 'the webhook id')
      .option('--json', 'print the deliveries as a JSON array')
      .action(async (id: string, options: { json?: boolean }, command: Command) => {
        const client = await CliContext.of(command).daemonClient();
        const deliveries = await client.webhookDeliveries(id);
        if (options.json) printJson(deliveries);
        else process.stdout.write(deliveryTable(deliveries));
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
