// `capsule stats [SANDBOX...]`: a live table of sandboxes' CPU, memory and disk,
// like `docker stats`, redrawn in place every couple of seconds until Ctrl-C;
// `--no-stream` prints it once, `--json` prints the rows once. It only reads
// the daemon's metrics history (GET /v1/sandboxes/{id}/metrics); it measures nothing.
import { setTimeout as sleep } from 'node:timers/promises';
import { NotFoundError, type CapsuleClient } from '@capsule/sdk';
import { Command } from 'commander';
import { CliContext } from '../cli-context.js';
import { Interrupts } from '../interrupts.js';
import { statsRowOf, statsTable, type StatsRow } from '../stats-format.js';
import { addGlobalOptions } from './global-options.js';
import { addOutputOptions, isHumanOutput, printOutput, type OutputOptions } from '../output-format.js';

const REFRESH_MS = 2000;
/** How far back a row looks for its newest point: a few of the daemon's sampling intervals, and room for some clock skew. */
const NEWEST_POINT_WINDOW_MS = 60_000;
/** Moves the cursor home and clears the screen, so each table replaces the last. */
const REDRAW = '\x1b[H\x1b[2J';

export function statsCommand(): Command {
  return addGlobalOptions(
    addOutputOptions(new Command('stats'))
      .description("Show sandboxes' CPU, memory and disk use as a live table (like docker stats) until Ctrl-C")
      .argument('[sandbox...]', 'sandbox ids or names (default: every running sandbox)')
      .option('--no-stream', 'print the table once and exit')
      .action(async (names: string[], options: OutputOptions & { stream: boolean }, command: Command) => {
        const client = await CliContext.of(command).daemonClient();
        try {
          // A machine reading rows (id, name, state, memoryLimitBytes, the newest metrics point) takes them once.
          if (!isHumanOutput(options) || !options.stream) {
            const rows = await readRows(client, names);
            printOutput(rows, options, { table: () => statsTable(rows) });
          } else await streamTable(client, names);
        } finally {
          client.close();
        }
      }),
  );
}

async function streamTable(client: CapsuleClient, names: string[]): Promise<void> {
  const interrupts = new Interrupts();
  try {
    while (!interrupts.signal.aborted) {
      const table = statsTable(await readRows(client, names));
      process.stdout.write(process.stdout.isTTY ? `${REDRAW}${table}` : table);
      await sleep(REFRESH_MS, undefined, { signal: interrupts.signal }).catch(() => undefined);
    }
  } finally {
    interrupts.dispose();
  }
}

/** The named sandboxes (an unknown name fails), else every running one; a sandbox removed meanwhile is left out. */
async function readRows(client: CapsuleClient, names: string[]): Promise<StatsRow[]> {
  const sandboxes =
    names.length > 0
      ? await Promise.all(names.map((name) => client.getSandbox(name)))
      : (await client.listSandboxes()).filter((sandbox) => sandbox.state === 'running');
  const since = new Date(Date.now() - NEWEST_POINT_WINDOW_MS);
  const rows = await Promise.all(
    sandboxes.map(async (sandbox) => {
      try {
        return statsRowOf(sandbox, (await client.getSandboxMetrics(sandbox.id, { start: since })).points);
      } catch (error) {
        if (error instanceof NotFoundError) return undefined;
        throw error;
      }
    }),
  );
  return rows.filter((row) => row !== undefined);
}
