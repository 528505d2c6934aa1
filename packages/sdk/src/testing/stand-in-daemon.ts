// A stand-in for capsuled in unit tests: a real node:http server on a temporary
// unix socket whose routes each test scripts. It is not the daemon and must never
// grow daemon logic; tests that use it say so in their names. Not part of the build.
import { mkdtempSync, rmSync } from 'node:fs';
import http from 'node:http';
import { tmpdir } from 'node:os';
import path from 'node:path';

export interface RecordedRequest {
  method: string;
  url: string;
  body: string;
}

export type StandInHandler = (request: RecordedRequest, res: http.ServerResponse, req: http.IncomingMessage) => void | Promise<void>;

export interface StandInDaemon {
  socketPath: string;
  requests: RecordedRequest[];
  /** Replace the routes for the next requests. */
  handle(handler: StandInHandler): void;
  close(): Promise<void>;
}

export function sendJson(res: http.ServerResponse, status: number, body: unknown): void {
  res.writeHead(status, { 'content-type': 'application/json' }).end(JSON.stringify(body));
}

export function sendError(res: http.ServerResponse, status: number, code: string, message: string, hint?: string): void {
  sendJson(res, status, { error: { code, message, ...(hint !== undefined && { hint }) } });
}

export async function startStandInDaemon(handler: StandInHandler): Promise<StandInDaemon> {
  const folder = mkdtempSync(path.join(tmpdir(), 'capsule-stand-in-'));
  const socketPath = path.join(folder, 'capsuled.sock');
  const requests: RecordedRequest[] = [];
  let current = handler;
  const server = http.createServer(async (req, res) => {
    const chunks: Buffer[] = [];
    for await (const chunk of req) chunks.push(chunk as Buffer);
    const recorded = { method: req.method ?? '', url: req.url ?? '', body: Buffer.concat(chunks).toString('utf8') };
    requests.push(recorded);
    try {
      await current(recorded, res, req);
    } catch (error) {
      if (!res.headersSent) sendError(res, 500, 'internal', `stand-in daemon handler failed: ${String(error)}`);
      else res.destroy();
    }
  });
  await new Promise<void>((resolve) => server.listen(socketPath, resolve));
  return {
    socketPath,
    requests,
    handle: (next) => {
      current = next;
    },
    close: async () => {
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
      rmSync(folder, { recursive: true, force: true });
    },
  };
}
