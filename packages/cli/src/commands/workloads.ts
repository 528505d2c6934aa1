// `capsule apply -f FILE`, `capsule diff -f FILE` and `capsule workload
// ls|get|rm|restart|stop|start|logs`: declared workloads that the daemon keeps
// running. A file is read here (YAML or JSON, several documents) and checked
// with the protocol's spec checker before anything is sent; the daemon checks
// it again and does the rest. Nothing here decides how a workload runs.
import fs from 'node:fs';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { checkWorkloadDocuments, formatSpecProblem } from '@capsule/protocol';
import { CapsuleError, type CapsuleClient, InvalidArgumentError, type WorkloadChange, type WorkloadInfo } from '@capsule/sdk';
import { Command } from 'commander';
import { parseAllDocuments } from 'yaml';
import { CliContext } from '../cli-context.js';
import { formatAge, keyValueLines, renderTable } from '../human-format.js';
import { Interrupts } from '../interrupts.js';
import { parseDurationMs, parseLineCount, parseSinceTime } from '../option-parsers.js';
import { escapeTerminalControls } from '../terminal-escape.js';
import { addGlobalOptions } from './global-options.js';
import { printJson } from './print-json.js';

/** How often `apply --wait` and `workload logs -f` ask again. */
const POLL_INTERVAL_MS = 1000;
/** The largest workload file read. */
const MAX_FILE_BYTES = 1024 * 1024;

/** A file's documents, parsed and checked; a problem anywhere is an error naming its document and field. */
export function readWorkloadFile(file: string): unknown[] {
  let text: string;
  try {
    if (fs.statSync(file).size > MAX_FILE_BYTES) throw new Error(`it is larger than ${MAX_FILE_BYTES} bytes`);
    text = fs.readFileSync(file, 'utf8');
  } catch (err) {
    throw new InvalidArgumentError('invalid_argument', `cannot read ${file}: ${(err as Error).message}`);
  }
  const parsed = parseAllDocuments(text, { prettyErrors: true });
  if (!Array.isArray(parsed)) return [];
  const documents: unknown[] = [];
  for (const [i, document] of parsed.entries()) {
    const error = document.errors[0];
    if (error) throw new InvalidArgumentError('invalid_argument', `${file}: document ${i + 1} is not valid YAML: ${error.message}`);
    const value: unknown = document.toJS({ maxAliasCount: 100 });
    // An empty document (a trailing `---`) holds nothing to apply.
    if (value !== null && value !== undefined) documents.push(value);
  }
  const { problems } = checkWorkloadDocuments(documents);
  if (problems.length > 0)
    throw new InvalidArgumentError('invalid_argument', `${file}:\n${problems.map(formatSpecProblem).join('\n')}`, {
      hint: 'fix these and apply again; nothing was changed',
    });
  return documents;
}

const CHANGE_MARKS: Record<WorkloadChange['action'], string> = {
  create: '+',
  replace: '~',
  update: '~',
  unchanged: '=',
  remove: '-',
};

export function formatChanges(changes: readonly WorkloadChange[], dryRun: boolean): string {
  const verbs: Record<WorkloadChange['action'], string> = dryRun
    ? {
        create: 'would be created',
        replace: 'would be replaced',
        update: 'would be updated',
        unchanged: 'unchanged',
        remove: 'would be removed',
      }
    : { create: 'created', replace: 'replaced', update: 'updated', unchanged: 'unchanged', remove: 'removed' };
  return changes
    .map((c) => `${CHANGE_MARKS[c.action]} ${c.name} ${verbs[c.action]}${c.fields.length > 0 ? ` (${c.fields.join(', ')})` : ''}\n`)
    .join('');
}

function condition(workload: WorkloadInfo, type: 'Ready' | 'Progressing' | 'Degraded') {
  return workload.conditions.find((c) => c.type === type);
}

/** `Ready`, `Ready (rolling)` (serving while its replicas are replaced), `Degraded (crash_loop)`, `Stopped`, `Starting (backoff)`. */
export function workloadStatus(workload: WorkloadInfo): string {
  if (workload.state === 'stopped') return 'Stopped';
  const degraded = condition(workload, 'Degraded');
  if (degraded?.status) return `Degraded (${degraded.reason})`;
  const progressing = condition(workload, 'Progressing');
  if (condition(workload, 'Ready')?.status) return progressing?.status ? `Ready (${progressing.reason})` : 'Ready';
  return `Starting (${progressing?.reason ?? 'pending'})`;
}

export function workloadTable(workloads: readonly WorkloadInfo[], now: number = Date.now()): string {
  return renderTable(
    ['NAME', 'STATUS', 'READY', 'RESTARTS', 'SANDBOXES', 'PORTS', 'AGE'],
    workloads.map((w) => [
      w.name,
      workloadStatus(w),
      `${w.sandboxes.filter((s) => s.ready).length}/${w.replicas}`,
      String(w.restarts),
      w.sandboxes.map((s) => s.id).join(',') || '-',
      w.ports.map((p) => `${p.hostIp ?? '127.0.0.1'}:${p.host}->${p.guest}`).join(',') || '-',
      formatAge(w.createdAt, now),
    ]),
  );
}

/** `sb_… (replica 1: running, ready, 2 restarts)`, `sb_… (replica 0: running, health_pending, older spec)`. */
function describeReplica(sandbox: WorkloadInfo['sandboxes'][number]): string {
  const notes = [sandbox.state, sandbox.phase];
  if (sandbox.restarts > 0) notes.push(`${sandbox.restarts} restart${sandbox.restarts === 1 ? '' : 's'}`);
  if (!sandbox.upToDate) notes.push('older spec');
  return `${sandbox.id} (replica ${sandbox.replica}: ${notes.join(', ')})`;
}

export function describeWorkload(workload: WorkloadInfo, now: number = Date.now()): string {
  const lines = keyValueLines([
    ['Name', workload.name],
    ['Status', workloadStatus(workload)],
    ['Template', workload.template],
    ['State', workload.state],
    ['Restarts', String(workload.restarts)],
    [
      'Last exit',
      workload.lastExit
        ? `${workload.lastExit.reason}${workload.lastExit.exitCode !== undefined ? ` (code ${workload.lastExit.exitCode})` : ''} ${formatAge(workload.lastExit.at, now)} ago${workload.lastExit.message ? `: ${workload.lastExit.message}` : ''}`
        : '-',
    ],
    ['Replicas', `${workload.sandboxes.filter((s) => s.ready).length} of ${workload.replicas} ready`],
    ['Sandboxes', workload.sandboxes.map(describeReplica).join(', ') || '-'],
    ['Ports', workload.ports.map((p) => `${p.hostIp ?? '127.0.0.1'}:${p.host} -> ${p.guest}`).join(', ') || '-'],
    ['Volumes', workload.volumes.map((v) => `${v.name}:${v.mount}${v.readOnly ? ' (ro)' : ''}`).join(', ') || '-'],
    ['Source', workload.source ?? '-'],
    ['Created', `${workload.createdAt} (${formatAge(workload.createdAt, now)} ago)`],
  ]);
  lines.push('Conditions:');
  for (const c of workload.conditions)
    lines.push(
      `  ${c.type.padEnd(12)} ${String(c.status).padEnd(6)} ${c.reason}${c.message ? `: ${c.message}` : ''} (${formatAge(c.since, now)})`,
    );
  return `${lines.join('\n')}\n`;
}

/** Waits until every named workload is Ready and done replacing or scaling, Degraded, or stopped; true when none is Degraded. */
async function waitForWorkloads(client: CapsuleClient, names: string[], timeoutMs: number): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  const interrupts = new Interrupts();
  try {
    for (;;) {
      const workloads = (await client.listWorkloads()).filter((w) => names.includes(w.name));
      const pending = workloads.filter(
        (w) =>
          w.state === 'running' &&
          !condition(w, 'Degraded')?.status &&
          (!condition(w, 'Ready')?.status || condition(w, 'Progressing')?.status),
      );
      if (pending.length === 0) {
        for (const w of workloads) process.stderr.write(`${w.name}: ${workloadStatus(w)}\n`);
        return !workloads.some((w) => condition(w, 'Degraded')?.status);
      }
      if (Date.now() > deadline) {
        throw new CapsuleError(
          'timeout',
          `still not ready after ${Math.round(timeoutMs / 1000)} s: ${pending.map((w) => w.name).join(', ')}`,
          {
            hint: 'see `capsule workload get NAME` and `capsule workload logs NAME`',
          },
        );
      }
      await sleep(POLL_INTERVAL_MS, undefined, { signal: interrupts.signal });
    }
  } finally {
    interrupts.dispose();
  }
}

export function applyCommand(): Command {
  return addGlobalOptions(
    new Command('apply')
      .description('Create, keep or replace the workloads a file declares (YAML or JSON, several documents)')
      .requiredOption('-f, --file <file>', 'the workload file')
      .option('--wait', 'wait until every workload of the file is ready or has failed')
      .option('--timeout <duration>', 'how long --wait waits (10m, 90s)', parseDurationMs, 10 * 60_000)
      .option('--prune', 'remove the workloads applied from this file before that it no longer declares')
      .option('--json', 'print the changes as JSON')
      .action(async (options: { file: string; wait?: boolean; timeout: number; prune?: boolean; json?: boolean }, command: Command) => {
        const documents = readWorkloadFile(options.file);
        const client = await CliContext.of(command).daemonClient();
        const result = await client.applyWorkloads({ documents, source: path.resolve(options.file), prune: options.prune ?? false });
        if (options.json) printJson(result);
        else process.stdout.write(formatChanges(result.changes, false));
        if (!options.wait) return;
        const names = result.changes.filter((c) => c.action !== 'remove').map((c) => c.name);
        if (!(await waitForWorkloads(client, names, options.timeout))) process.exitCode = 1;
      }),
  );
}

export function diffCommand(): Command {
  return addGlobalOptions(
    new Command('diff')
      .description('Show what `capsule apply -f FILE` would change, changing nothing')
      .requiredOption('-f, --file <file>', 'the workload file')
      .option('--prune', 'show the workloads --prune would remove too')
      .option('--json', 'print the changes as JSON')
      .action(async (options: { file: string; prune?: boolean; json?: boolean }, command: Command) => {
        const documents = readWorkloadFile(options.file);
        const client = await CliContext.of(command).daemonClient();
        const result = await client.applyWorkloads({
          documents,
          source: path.resolve(options.file),
          prune: options.prune ?? false,
          dryRun: true,
        });
        if (options.json) printJson(result);
        else process.stdout.write(formatChanges(result.changes, true));
      }),
  );
}

function nameAction(name: string, description: string, act: (client: CapsuleClient, name: string) => Promise<unknown>): Command {
  return addGlobalOptions(
    new Command(name)
      .description(description)
      .argument('<workload...>')
      .action(async (names: string[], _options: unknown, command: Command) => {
        const client = await CliContext.of(command).daemonClient();
        for (const workload of names) {
          await act(client, workload);
          process.stdout.write(`${workload}\n`);
        }
      }),
  );
}

function logsCommand(): Command {
  return addGlobalOptions(
    new Command('logs')
      .description("Print a workload's service output (kept on the daemon host through restarts)")
      .argument('<workload>')
      .option('-f, --follow', 'keep printing new output until Ctrl-C')
      .option('-n, --tail <lines>', 'only the last N lines (then what follows, with -f)', parseLineCount)
      .option('--since <time>', 'only what was written since then: 10m, 1h30m (ago), 2026-12-07T15:00:00Z, Unix seconds', (value) =>
        parseSinceTime(value),
      )
      .action(async (name: string, options: { follow?: boolean; tail?: number; since?: Date }, command: Command) => {
        const client = await CliContext.of(command).daemonClient();
        // The guest wrote this: escape sequences in it must not drive the user's terminal.
        const show = (text: string) => process.stdout.write(escapeTerminalControls(text));
        let { text, next } = await client.workloadLogs(name, {
          ...(options.tail !== undefined ? { tail: options.tail } : {}),
          ...(options.since !== undefined ? { since: options.since } : {}),
        });
        show(text);
        if (!options.follow) return;
        const interrupts = new Interrupts();
        try {
          while (!interrupts.signal.aborted) {
            await sleep(POLL_INTERVAL_MS, undefined, { signal: interrupts.signal }).catch(() => undefined);
            if (interrupts.signal.aborted) break;
            ({ text, next } = await client.workloadLogs(name, { offset: next }));
            show(text);
          }
        } finally {
          interrupts.dispose();
        }
      }),
  );
}

export function workloadCommand(): Command {
  return new Command('workload')
    .description('Manage workloads: services the daemon keeps running (declared with capsule apply -f)')
    .addCommand(
      addGlobalOptions(
        new Command('ls')
          .description('List workloads and their status')
          .option('-q, --quiet', 'print only names')
          .option('--json', 'print the workloads as a JSON array')
          .action(async (options: { quiet?: boolean; json?: boolean }, command: Command) => {
            const workloads = await (await CliContext.of(command).daemonClient()).listWorkloads();
            if (options.json) printJson(workloads);
            else if (options.quiet) process.stdout.write(workloads.map((w) => `${w.name}\n`).join(''));
            else process.stdout.write(workloadTable(workloads));
          }),
      ),
    )
    .addCommand(
      addGlobalOptions(
        new Command('get')
          .description('Show a workload: its conditions, restarts, last exit, sandbox, ports and volumes')
          .argument('<workload>')
          .option('--json', 'print the workload as JSON')
          .action(async (name: string, options: { json?: boolean }, command: Command) => {
            const workload = await (await CliContext.of(command).daemonClient()).getWorkload(name);
            if (options.json) printJson(workload);
            else process.stdout.write(describeWorkload(workload));
          }),
      ),
    )
    .addCommand(nameAction('rm', 'Remove workloads and their sandboxes (their volumes stay)', (c, n) => c.deleteWorkload(n)))
    .addCommand(
      nameAction('restart', 'Restart workloads now (their VM and command), forgetting their failures', (c, n) => c.restartWorkload(n)),
    )
    .addCommand(nameAction('stop', 'Stop workloads and keep them stopped (disks and volumes kept)', (c, n) => c.stopWorkload(n)))
    .addCommand(nameAction('start', 'Start stopped or crash-looped workloads again', (c, n) => c.startWorkload(n)))
    .addCommand(logsCommand());
}
