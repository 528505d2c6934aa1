// One health check of a workload's sandbox: an HTTP GET or a TCP connect to a
// port inside it (through the sandbox's port tunnels, so no guest network is
// needed), or a command run in it. Bounded by the check's timeout; it never
// throws: it answers pass or fail with a reason.
import type { Duplex } from 'node:stream';
import type { HealthProbe } from '@capsule/protocol';
import { errorMessage } from '../errors.js';
import type { SandboxManager } from '../sandboxes/manager.js';

export interface ProbeResult {
  ok: boolean;
  /** Why it failed, for the workload's conditions and events. */
  message?: string;
}

/** An answer's status line is read up to this many bytes; a guest that sends more fails the check. */
const MAX_STATUS_LINE_BYTES = 4096;

export async function runHealthProbe(
  manager: SandboxManager,
  sandboxId: string,
  probe: HealthProbe,
  timeoutMs: number,
): Promise<ProbeResult> {
  const signal = AbortSignal.timeout(timeoutMs);
  try {
    if ('exec' in probe) {
      const result = await manager.exec(sandboxId, { cmd: probe.exec, timeoutMs }, signal);
      return result.exitCode === 0 ? { ok: true } : { ok: false, message: `${probe.exec[0]} exited with code ${result.exitCode}` };
    }
    const port = 'http' in probe ? probe.http.port : probe.tcp.port;
    const { stream } = await withTimeout(manager.tunnels.connect(sandboxId, port), signal);
    try {
      if ('tcp' in probe) return { ok: true };
      const status = await withTimeout(httpStatus(stream, probe.http.path, port), signal);
      return status >= 200 && status < 400 ? { ok: true } : { ok: false, message: `GET ${probe.http.path} answered ${status}` };
    } finally {
      stream.destroy();
    }
  } catch (err) {
    return { ok: false, message: signal.aborted ? `no answer within ${timeoutMs} ms` : errorMessage(err) };
  }
}

async function withTimeout<T>(work: Promise<T>, signal: AbortSignal): Promise<T> {
  return await new Promise<T>((resolve, reject) => {
    const onAbort = () => reject(new Error('timed out'));
    signal.addEventListener('abort', onAbort, { once: true });
    work.then(resolve, reject).finally(() => signal.removeEventListener('abort', onAbort));
  });
}

/** Sends a GET over `stream` and reads the answer's status code. */
async function httpStatus(stream: Duplex, path: string, port: number): Promise<number> {
  stream.write(`GET ${path} HTTP/1.0\r\nHost: localhost:${port}\r\nUser-Agent: capsule-health\r\nConnection: close\r\n\r\n`);
  let head = '';
  for await (const chunk of stream) {
    head += Buffer.from(chunk as Uint8Array).toString('latin1');
    const lineEnd = head.indexOf('\r\n');
    if (lineEnd >= 0) {
      const match = /^HTTP\/\d(?:\.\d)? (\d{3})/.exec(head.slice(0, lineEnd));
      if (!match) throw new Error('the answer is not HTTP');
      return Number(match[1]);
    }
    if (head.length > MAX_STATUS_LINE_BYTES) throw new Error('the answer has no HTTP status line');
  }
  throw new Error('the connection closed before an answer');
}
