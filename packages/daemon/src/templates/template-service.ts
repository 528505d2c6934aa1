// A template's service: its START command, started in the background in the
// template's VM, and its READY check, retried until it exits 0, so that the
// warm snapshot (and every sandbox restored from it) has the service already
// running. Never leaves the START command bound to a connection: it outlives
// the call, and its output (with nobody following it) is dropped by the agent.
import { setTimeout as sleep } from 'node:timers/promises';
import type { AgentClient } from '../agent/client.js';
import { CapsuleError, errorMessage } from '../errors.js';
import { basicAuthForUser, collectExec, execEvents } from '../agent/exec.js';

/** The tag of the START process in every sandbox of the template (`commands.connect` by tag follows it). */
export const START_PROCESS_TAG = 'capsule-start';
/** Output of START and of READY's last attempt quoted in an error. */
const OUTPUT_TAIL_BYTES = 2048;
const READY_RETRY_MS = 250;
/** One READY attempt may take this long, even past READY's timeout: a slow guest must not turn a passing check into a killed one. */
const READY_ATTEMPT_MS = 10_000;

export interface TemplateService {
  /** argv of START. */
  start: string[];
  /** argv of READY and how long it is retried; without it the service counts as ready once started. */
  ready?: { cmd: string[]; timeoutMs: number } | undefined;
  /** The template's defaults, which START and READY run with. */
  user: string | undefined;
  cwd: string | undefined;
  env: Record<string, string>;
}

function tail(text: string): string {
  return text.length > OUTPUT_TAIL_BYTES ? `…${text.slice(-OUTPUT_TAIL_BYTES)}` : text;
}

function quote(argv: string[]): string {
  return argv[0] === '/bin/sh' && argv[1] === '-c' && argv.length === 3 ? argv[2]! : JSON.stringify(argv);
}

/**
 * Starts the service in the VM behind `agent` and waits until READY passes.
 * Throws `template_start_failed` with START's output and READY's last output
 * when START fails or READY never passes in time.
 */
export async function startTemplateService(agent: AgentClient, service: TemplateService, signal?: AbortSignal): Promise<void> {
  const [cmd, ...args] = service.start;
  if (!cmd) throw new CapsuleError('invalid_argument', 'the START command is empty');
  const following = new AbortController();
  const stopFollowing = () => following.abort(new Error('the START command is left running'));
  signal?.addEventListener('abort', stopFollowing, { once: true });
  let startOutput = '';
  let started: (pid: number) => void = () => {};
  const startedPid = new Promise<number>((resolve) => (started = resolve));
  let ended: { exitCode: number; status: string } | undefined;
  // Followed in the background: the output goes into errors, the end tells a START that failed.
  const follow = (async () => {
    const stream = agent.process.start(
      {
        process: { cmd, args, envs: service.env, ...(service.cwd ? { cwd: service.cwd } : {}) },
        stdin: false,
        tag: START_PROCESS_TAG,
      },
      { signal: following.signal, headers: service.user ? { authorization: basicAuthForUser(service.user) } : {} },
    );
    for await (const response of stream) {
      const event = response.event?.event;
      if (event?.case === 'start') started(event.value.pid);
      else if (event?.case === 'data' && event.value.output.case !== undefined)
        startOutput = tail(startOutput + Buffer.from(event.value.output.value).toString('utf8'));
      else if (event?.case === 'end') ended = { exitCode: event.value.exitCode, status: event.value.status };
    }
  })();
  const failedToStart = follow.then(
    () => undefined,
    (err: unknown) => (following.signal.aborted ? undefined : err),
  );
  const startFailure = (what: string) =>
    new CapsuleError(
      'template_start_failed',
      `the START command (${quote(service.start)}) ${what}${startOutput.trim() ? `; its output:\n${startOutput.trimEnd()}` : ''}`,
      {
        hint: 'fix START in the Capsulefile (or --start), then build the template again',
      },
    );
  try {
    const first = await Promise.race([
      startedPid.then(() => undefined),
      failedToStart.then((err) => err ?? new Error('the agent ended the START stream')),
    ]);
    if (first !== undefined) throw startFailure(`could not start: ${errorMessage(first)}`);
    if (!service.ready) return;
    const deadline = Date.now() + service.ready.timeoutMs;
    let attempts = 0;
    let last = '';
    for (;;) {
      if (signal?.aborted) throw new CapsuleError('timeout', 'cancelled while waiting for READY');
      if (ended && ended.exitCode !== 0) throw startFailure(`exited with code ${ended.exitCode} (${ended.status}) before READY passed`);
      attempts++;
      try {
        const result = await collectExec(
          execEvents(
            agent,
            {
              cmd: service.ready.cmd,
              env: service.env,
              timeoutMs: READY_ATTEMPT_MS,
              ...(service.user ? { user: service.user } : {}),
              ...(service.cwd ? { cwd: service.cwd } : {}),
            },
            signal ?? new AbortController().signal,
          ),
          OUTPUT_TAIL_BYTES * 4,
        );
        if (result.exitCode === 0) return;
        last = `exited with code ${result.exitCode}${result.stdout + result.stderr ? `:\n${tail(result.stdout + result.stderr).trimEnd()}` : ''}`;
      } catch (err) {
        last = `failed: ${errorMessage(err)}`;
      }
      if (Date.now() >= deadline) {
        throw new CapsuleError(
          'template_start_failed',
          `READY (${quote(service.ready.cmd)}) did not pass within ${Math.round(service.ready.timeoutMs / 1000)} s (${attempts} attempts); the last one ${last}${
            startOutput.trim() ? `\nSTART (${quote(service.start)}) output:\n${startOutput.trimEnd()}` : ''
          }`,
          { hint: 'check that START starts the service and READY checks it; READY --timeout=DURATION allows more time' },
        );
      }
      await sleep(READY_RETRY_MS);
    }
  } finally {
    signal?.removeEventListener('abort', stopFollowing);
    stopFollowing();
    await follow.catch(() => undefined);
  }
}
