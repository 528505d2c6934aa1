// The guest end of the `capsule.bulk` virtio-serial port: large /files bodies
// move over it, copied by capsule-guest-helper (bulk-recv / bulk-send) between
// the port and a file the agent opened, so that the agent's JS pays nothing
// per byte. One transfer at a time; a transfer whose request goes away is
// killed, and the next helper discards its stale bytes (see the helper).

import { spawn } from 'node:child_process';
import { openSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import { bulkHeaders, bulkIdPattern } from '@capsule/protocol/agent';
import type { IncomingHttpHeaders } from 'node:http2';
import { createLogger, describeError } from './log.js';
import { HttpError } from './plain-http.js';
import { findVirtioPortDevice } from './virtio-port.js';

const log = createLogger('bulk');

/** capsule-guest-helper's exit status when the file's disk is full. */
const HELPER_DISK_FULL = 5;
/** How long a transfer waits for a killed predecessor to be gone. */
const PREDECESSOR_EXIT_MS = 5000;

/** The daemon's offer of the bulk port on a request (its transfer id), if it made one; 400 when malformed. */
export function bulkIdOf(headers: IncomingHttpHeaders): string | undefined {
  const id = headers[bulkHeaders.id];
  if (id === undefined) return undefined;
  if (typeof id !== 'string' || !bulkIdPattern.test(id)) throw new HttpError(400, `malformed ${bulkHeaders.id} header`);
  return id;
}

export class BulkPort {
  private fd: number | undefined;
  private current: Promise<void> | undefined;

  constructor(
    private readonly helperPath: string,
    private readonly portName: string,
  ) {}

  /**
   * Opens the port, if this VM has one. Done at start: the guest driver drops
   * what the host sends to a port nobody holds open.
   */
  open(): boolean {
    if (this.fd !== undefined) return true;
    const device = findVirtioPortDevice(this.portName);
    if (!device) return false;
    try {
      this.fd = openSync(device, 'r+');
      log.info(`bulk transfers on virtio port ${device} (${this.portName})`);
    } catch (error) {
      log.warn(`cannot open the bulk port ${device}: ${describeError(error)}`);
    }
    return this.fd !== undefined;
  }

  /** Writes the framed upload `id` from the port to `fileFd`; rejects if the helper fails or `signal` aborts. */
  receive(id: string, fileFd: number, signal: AbortSignal): Promise<void> {
    return this.run('bulk-recv', [id], fileFd, signal);
  }

  /** Sends `size` bytes of `fileFd` to the port as the download `id`; rejects if the helper fails or `signal` aborts. */
  send(id: string, size: number, fileFd: number, signal: AbortSignal): Promise<void> {
    return this.run('bulk-send', [id, String(size)], fileFd, signal);
  }

  private async run(command: 'bulk-recv' | 'bulk-send', args: string[], fileFd: number, signal: AbortSignal): Promise<void> {
    if (!this.open() || this.fd === undefined) throw new Error('this VM has no bulk port');
    // The daemon runs one transfer at a time; a killed one may still be exiting.
    if (this.current) await Promise.race([this.current, sleep(PREDECESSOR_EXIT_MS)]);
    if (this.current) throw new Error('the bulk port is busy');
    const run = this.spawnHelper(command, args, fileFd, this.fd, signal);
    const settled = run.then(
      () => undefined,
      () => undefined,
    );
    this.current = settled;
    void settled.then(() => {
      if (this.current === settled) this.current = undefined;
    });
    return await run;
  }

  private spawnHelper(
    command: 'bulk-recv' | 'bulk-send',
    args: string[],
    fileFd: number,
    portFd: number,
    signal: AbortSignal,
  ): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      if (signal.aborted) return reject(new Error('the request went away'));
      const stdio: [number, number, 'pipe'] = command === 'bulk-recv' ? [portFd, fileFd, 'pipe'] : [fileFd, portFd, 'pipe'];
      // An empty environment: the helper needs none, and the agent's must not leak into it.
      const child = spawn(this.helperPath, [command, ...args], { env: {}, stdio });
      let stderrTail = '';
      child.stderr?.setEncoding('utf8');
      child.stderr?.on('data', (chunk: string) => (stderrTail = (stderrTail + chunk).slice(-500)));
      const kill = () => child.kill('SIGKILL');
      signal.addEventListener('abort', kill, { once: true });
      child.once('error', (error) => {
        signal.removeEventListener('abort', kill);
        reject(new Error(`capsule-guest-helper could not start: ${describeError(error)}`));
      });
      child.once('close', (code, killedBy) => {
        signal.removeEventListener('abort', kill);
        if (code === 0) return resolve();
        const detail = stderrTail.trim().split('\n').slice(-2).join('; ');
        const error: NodeJS.ErrnoException = new Error(
          `${command} ${killedBy ? `was killed by ${killedBy}` : `failed (status ${code})`}${detail ? `: ${detail}` : ''}`,
        );
        if (code === HELPER_DISK_FULL) error.code = 'ENOSPC'; // the upload's 507, as on the HTTP/2 path
        reject(error);
      });
    });
  }
}
