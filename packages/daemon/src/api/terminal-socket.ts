// The dashboard's terminal: a WebSocket (`/v1/sandboxes/{id}/terminal`) joined
// to a login shell on a PTY in the sandbox, through its agent's process
// service. Bytes cross as binary frames both ways, a resize as a JSON text
// frame. Output goes to the socket one frame at a time, so a slow browser
// slows the guest's shell down (HTTP/2 flow control) instead of growing the
// daemon; the shell dies with the socket, and the socket with the shell.
import type { IncomingMessage } from 'node:http';
import type { Duplex } from 'node:stream';
import { type TerminalResize, httpStatusOf } from '@capsule/protocol';
import { Signal } from '@capsule/protocol/agent';
import { WebSocketServer, type RawData, type WebSocket } from 'ws';
import type { AgentClient } from '../agent/client.js';
import { CapsuleError, errorMessage } from '../errors.js';
import type { Logger } from '../log.js';
import { decodePathSegment, isValidSandboxId } from './agent-proxy.js';

const TERMINAL_FORM = /^\/v1\/sandboxes\/([^/?#]{1,128})\/terminal\/?(\?.*)?$/;
const SHELL = ['/bin/bash', '-i', '-l'];
const DEFAULT_SIZE = { cols: 80, rows: 24 };
/** Keystrokes and resizes are small; a bigger frame is a misbehaving page. */
const MAX_FRAME_BYTES = 64 * 1024;

export interface TerminalContext {
  agentOf(idOrName: string): Promise<{ agent: AgentClient }>;
  /** Throws unless the request may use the API (server.ts's one check of credentials). */
  authorize(req: IncomingMessage): Promise<void>;
  log: Logger;
}

/** Whether an upgrade is for a terminal (its URL is parsed, and may be refused, by upgradeToTerminal). */
export function isTerminalUpgrade(url: string): boolean {
  return TERMINAL_FORM.test(url);
}

/** The sandbox a terminal upgrade is for and the terminal's first size. */
function terminalTarget(url: string): { sandboxId: string; size: { cols: number; rows: number } } {
  const match = TERMINAL_FORM.exec(url);
  const sandboxId = decodePathSegment(match?.[1] ?? '');
  if (!isValidSandboxId(sandboxId)) throw new CapsuleError('invalid_argument', 'the sandbox id is malformed');
  const query = new URLSearchParams(match?.[2]?.slice(1) ?? '');
  return {
    sandboxId,
    size: { cols: dimension(query.get('cols'), DEFAULT_SIZE.cols), rows: dimension(query.get('rows'), DEFAULT_SIZE.rows) },
  };
}

const sockets = new WebSocketServer({ noServer: true, maxPayload: MAX_FRAME_BYTES });

/** Answers a terminal upgrade: checks the caller, finds the running sandbox, then joins the socket to a new shell. */
export async function upgradeToTerminal(ctx: TerminalContext, req: IncomingMessage, socket: Duplex, head: Buffer): Promise<void> {
  socket.on('error', () => undefined);
  let agent: AgentClient;
  let size: { cols: number; rows: number };
  try {
    const target = terminalTarget(req.url ?? '/');
    size = target.size;
    // A browser sends the session cookie with any page's WebSocket: only the daemon's own pages may open one.
    if (req.headers.origin !== undefined && !sameOrigin(req.headers.origin, req.headers.host))
      throw new CapsuleError('permission_denied', 'a terminal may be opened only from the dashboard');
    await ctx.authorize(req);
    agent = (await ctx.agentOf(target.sandboxId)).agent;
  } catch (err) {
    return refuseUpgrade(socket, err);
  }
  sockets.handleUpgrade(req, socket, head, (ws) => {
    runShell(agent, ws, size).catch((err: unknown) => {
      ctx.log.warn({ err: errorMessage(err) }, 'a dashboard terminal failed');
      ws.close(1011, 'the terminal failed');
    });
  });
}

async function runShell(agent: AgentClient, ws: WebSocket, size: { cols: number; rows: number }): Promise<void> {
  const stop = new AbortController();
  let pid: number | undefined;
  const byPid = () => ({ selector: { case: 'pid' as const, value: pid ?? 0 } });
  // Input and resizes go one at a time, in order; those that come before the shell runs wait for it.
  let pending = Promise.resolve();
  let started: () => void = () => undefined;
  const running = new Promise<void>((resolve) => (started = resolve));
  const inOrder = (send: () => Promise<unknown>) => {
    pending = pending
      .then(() => running)
      .then(send)
      .then(
        () => undefined,
        () => undefined,
      );
  };
  ws.on('message', (data: RawData, isBinary: boolean) => {
    const bytes = Buffer.isBuffer(data) ? data : Buffer.concat(Array.isArray(data) ? data : [Buffer.from(data)]);
    if (isBinary) {
      inOrder(() => agent.process.sendInput({ process: byPid(), input: { input: { case: 'pty', value: bytes } } }));
      return;
    }
    const resize = parseResize(bytes);
    if (resize) inOrder(() => agent.process.update({ process: byPid(), pty: { size: { cols: resize.cols, rows: resize.rows } } }));
  });
  ws.once('close', () => {
    if (pid !== undefined) agent.process.sendSignal({ process: byPid(), signal: Signal.SIGKILL }).catch(() => undefined);
    stop.abort();
  });
  const events = agent.process.start(
    { process: { cmd: SHELL[0] ?? '/bin/sh', args: SHELL.slice(1), envs: { TERM: 'xterm-256color' } }, pty: { size } },
    { signal: stop.signal },
  );
  let exitCode: number | undefined;
  try {
    for await (const response of events) {
      const event = response.event?.event;
      if (event?.case === 'start') {
        pid = event.value.pid;
        started();
      } else if (event?.case === 'data' && event.value.output.case === 'pty') {
        const chunk = event.value.output.value;
        // The next chunk is read only once this one is handed to the socket.
        await new Promise<void>((resolve) => ws.send(chunk, { binary: true }, () => resolve()));
      } else if (event?.case === 'end') {
        exitCode = event.value.exitCode;
      }
    }
  } catch (err) {
    if (stop.signal.aborted) return;
    throw err;
  }
  ws.close(1000, `exit ${exitCode ?? -1}`);
}

function parseResize(bytes: Buffer): TerminalResize | undefined {
  try {
    const message = JSON.parse(bytes.toString('utf8')) as Partial<TerminalResize>;
    if (message.type !== 'resize') return undefined;
    const cols = dimension(String(message.cols), 0);
    const rows = dimension(String(message.rows), 0);
    return cols > 0 && rows > 0 ? { type: 'resize', cols, rows } : undefined;
  } catch {
    return undefined;
  }
}

/** A terminal dimension within what a PTY takes, else `fallback`. */
function dimension(value: string | null, fallback: number): number {
  const n = Number(value);
  return Number.isInteger(n) && n >= 1 && n <= 1000 ? n : fallback;
}

function sameOrigin(origin: string, host: string | undefined): boolean {
  try {
    return host !== undefined && new URL(origin).host === host;
  } catch {
    return false;
  }
}

function refuseUpgrade(socket: Duplex, err: unknown): void {
  const known = err instanceof CapsuleError ? err : new CapsuleError('internal', errorMessage(err));
  const body = JSON.stringify({ error: { code: known.code, message: known.message, ...(known.hint ? { hint: known.hint } : {}) } });
  const status = httpStatusOf(known.code);
  socket.end(
    `HTTP/1.1 ${status} Error\r\ncontent-type: application/json\r\ncontent-length: ${Buffer.byteLength(body)}\r\nconnection: close\r\n\r\n${body}`,
  );
}
