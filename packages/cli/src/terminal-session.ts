// `capsule exec -it` and `capsule shell`: a process on a terminal in a sandbox,
// attached to this terminal. Keystrokes go over raw (Ctrl-C reaches the remote
// process, not capsule), window size changes follow, and capsule exits with
// the remote exit code. The local terminal is restored on every way out:
// the end, an error, SIGTERM/SIGHUP (which also kill the remote process) and
// process exit.
import type { CapsuleClient } from '@capsule/sdk';
import { CommandExitError, Pty, SandboxAgent, type PtyHandle } from '@capsule/sdk';
import { exitCodeOfCommand, exitCodeOfInterruption } from './exit-codes.js';

export interface TerminalSessionOptions {
  /** argv; default the sandbox's interactive login shell. */
  cmd?: string[];
  env?: Record<string, string>;
  cwd?: string;
  user?: string;
  /** Forward this process's stdin (-i); without it only the output is shown. */
  forwardInput: boolean;
  /** Ends the session as SIGINT would when aborted (`run -t` catches Ctrl-C to remove its sandbox after). */
  signal?: AbortSignal;
  stdin?: NodeJS.ReadStream;
  stdout?: NodeJS.WriteStream;
}

const FALLBACK_SIZE = { cols: 80, rows: 24 };
const ENDING_SIGNALS: NodeJS.Signals[] = ['SIGTERM', 'SIGHUP'];

function terminalSize(stdout: NodeJS.WriteStream): { cols: number; rows: number } {
  return stdout.isTTY && stdout.columns > 0 && stdout.rows > 0 ? { cols: stdout.columns, rows: stdout.rows } : FALLBACK_SIZE;
}

/** Runs the session and resolves with the exit code capsule should end with. */
export async function runTerminalSession(client: CapsuleClient, idOrName: string, options: TerminalSessionOptions): Promise<number> {
  const stdin = options.stdin ?? process.stdin;
  const stdout = options.stdout ?? process.stdout;
  // The agent API is addressed by id; this also says "not found" before anything changes here.
  const sandbox = await client.getSandbox(idOrName);
  const pty = new Pty(new SandboxAgent(client, sandbox.id));
  const handle: PtyHandle = await pty.create({
    ...terminalSize(stdout),
    ...(options.cmd && { cmd: options.cmd }),
    envs: { TERM: process.env.TERM || 'xterm-256color', ...options.env },
    ...(options.cwd !== undefined && { cwd: options.cwd }),
    ...(options.user !== undefined && { user: options.user }),
    // An interactive session lasts as long as its user wants.
    timeoutMs: 0,
    onData: (data) => stdout.write(data),
  });

  const rawMode = options.forwardInput && stdin.isTTY === true;
  const restoreTerminal = () => {
    if (rawMode && stdin.isRaw) stdin.setRawMode(false);
  };
  // The last resort: whatever ends this process, the terminal is left cooked.
  process.once('exit', restoreTerminal);

  // Keystrokes and resizes go one at a time, in the order they happened: a
  // key typed after a resize must find the new size.
  let requests = Promise.resolve();
  const inOrder = (send: () => Promise<unknown>) => {
    requests = requests.then(send).then(
      () => undefined,
      () => undefined,
    );
  };
  const onInput = (chunk: Buffer) => inOrder(() => handle.sendInput(chunk));
  const onResize = () => inOrder(() => handle.resize(terminalSize(stdout)));
  let endedBy: NodeJS.Signals | undefined;
  const onEndingSignal = (signal: NodeJS.Signals) => {
    endedBy = signal;
    handle.kill().catch(() => undefined);
  };
  const onAbort = () => onEndingSignal('SIGINT');

  try {
    if (rawMode) stdin.setRawMode(true);
    if (options.forwardInput) {
      stdin.on('data', onInput);
      stdin.resume();
    }
    process.on('SIGWINCH', onResize);
    for (const signal of ENDING_SIGNALS) process.on(signal, onEndingSignal);
    options.signal?.addEventListener('abort', onAbort, { once: true });
    try {
      await handle.wait();
      return endedBy ? exitCodeOfInterruption(endedBy) : 0;
    } catch (error) {
      if (!(error instanceof CommandExitError)) throw error;
      return endedBy ? exitCodeOfInterruption(endedBy) : exitCodeOfCommand(error);
    }
  } finally {
    options.signal?.removeEventListener('abort', onAbort);
    process.off('SIGWINCH', onResize);
    for (const signal of ENDING_SIGNALS) process.off(signal, onEndingSignal);
    stdin.off('data', onInput);
    stdin.pause();
    restoreTerminal();
    process.off('exit', restoreTerminal);
    handle.disconnect();
  }
}
