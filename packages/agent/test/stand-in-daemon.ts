// A STAND-IN for capsuled, for client tests that need the real agent but not
// a VM: an HTTP/1.1 server on a unix socket that answers /health and
// GET /v1/sandboxes/{id} itself and forwards /v1/sandboxes/{id}/envd/<path> to
// a real agent over HTTP/2, as the daemon's proxy does. Errors come back in the
// daemon's shape for the path form: its own and Connect's fields together.
import { mkdtempSync, rmSync } from 'node:fs';
import http from 'node:http';
import type http2 from 'node:http2';
import { tmpdir } from 'node:os';
import path from 'node:path';

const HOP_BY_HOP = ['host', 'connection', 'content-length', 'transfer-encoding', 'keep-alive'];

export interface StandInDaemon {
  socketPath: string;
  close(): Promise<void>;
}

export async function startStandInDaemon(agentSession: http2.ClientHttp2Session, sandboxId: string): Promise<StandInDaemon> {
  const prefix = `/v1/sandboxes/${sandboxId}/envd`;
  const folder = mkdtempSync(path.join(tmpdir(), 'capsule-stand-in-'));
  const socketPath = path.join(folder, 'capsuled.sock');
  const server = http.createServer((req, res) => {
    const url = req.url ?? '/';
    const json = (status: number, body: unknown) => res.writeHead(status, { 'content-type': 'application/json' }).end(JSON.stringify(body));
    if (url === '/health') return json(200, { status: 'ok' });
    if (url === `/v1/sandboxes/${sandboxId}`) return json(200, { id: sandboxId, state: 'running' });
    if (!url.startsWith(`${prefix}/`)) {
      const message = `no sandbox for ${url}`;
      return json(404, { error: { code: 'sandbox_not_found', message }, code: 'not_found', message });
    }
    const headers: http2.OutgoingHttpHeaders = { ':method': req.method ?? 'POST', ':path': url.slice(prefix.length) };
    for (const [name, value] of Object.entries(req.headers)) {
      if (!HOP_BY_HOP.includes(name)) headers[name] = value;
    }
    const upstream = agentSession.request(headers);
    req.pipe(upstream);
    upstream.on('response', (responseHeaders) => {
      const { ':status': status, ...rest } = responseHeaders;
      res.writeHead(Number(status), rest as http.OutgoingHttpHeaders);
      upstream.pipe(res);
    });
    upstream.on('error', () => res.destroy());
    res.on('close', () => upstream.close());
  });
  await new Promise<void>((resolve) => server.listen(socketPath, resolve));
  return {
    socketPath,
    async close() {
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
      rmSync(folder, { recursive: true, force: true });
    },
  };
}

/** Terminal output collected as it comes, and a way to wait for text in it. */
export function screen() {
  let text = '';
  const waiters: Array<{ needle: string; resolve: () => void }> = [];
  return {
    add(data: Uint8Array | string) {
      text += typeof data === 'string' ? data : Buffer.from(data).toString();
      for (const waiter of [...waiters]) {
        if (text.includes(waiter.needle)) {
          waiters.splice(waiters.indexOf(waiter), 1);
          waiter.resolve();
        }
      }
    },
    text: () => text,
    waitFor: (needle: string) =>
      text.includes(needle) ? Promise.resolve() : new Promise<void>((resolve) => waiters.push({ needle, resolve })),
  };
}
