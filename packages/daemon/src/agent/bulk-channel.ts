// The host end of a VM's bulk port (bulk.sock, the `capsule.bulk`
// virtio-serial port): the bytes of one large /files transfer at a time, while
// the request itself goes over the agent's HTTP/2 session (see
// @capsule/protocol/agent `BULK_PORT_NAME`). Each transfer is one fresh
// connection, closed when it ends, so an aborted transfer resets the channel;
// its header ("CAPSBULK" + a random id) keeps stale bytes of an earlier one
// from being taken for its own. The guest is hostile: never more than the
// announced bytes are forwarded, stale bytes are skipped only up to a bound,
// and a guest that stops moving bytes fails the transfer after a timeout.
import { randomBytes } from 'node:crypto';
import net from 'node:net';
import type { Writable } from 'node:stream';
import { bulkMagic, bulkMaxFrameBytes } from '@capsule/protocol/agent';

const CONNECT_TIMEOUT_MS = 5000;
/** A transfer waiting this long on the guest (not on its client) without a byte moving fails. */
const IDLE_TIMEOUT_MS = 30_000;
/** Bytes skipped before a download's header at most (what an aborted transfer may leave in flight). */
const MAX_STALE_BYTES = 16 * 1024 * 1024;

/** A frame's 4-byte big-endian length. */
function frameLength(length: number): Buffer {
  const head = Buffer.alloc(4);
  head.writeUInt32BE(length);
  return head;
}

export class BulkChannel {
  private busy = false;

  constructor(
    readonly socketPath: string,
    private readonly options: {
      /** Whether the guest takes uploads (its agent speaks @capsule/protocol/agent's bulkProtocolVersion); downloads always. */
      uploads: boolean;
      idleTimeoutMs?: number;
    },
  ) {}

  get uploads(): boolean {
    return this.options.uploads;
  }

  /**
   * Starts a transfer on a fresh connection; undefined while another one runs
   * or when the socket cannot be reached: the caller uses HTTP/2 then. (A
   * transfer lets go of the port before its client has the whole answer, so
   * one client's transfers one after the other all find it free.)
   */
  async open(): Promise<BulkTransfer | undefined> {
    if (this.busy) return undefined;
    this.busy = true;
    try {
      const socket = await connect(this.socketPath);
      return new BulkTransfer(
        socket,
        randomBytes(16).toString('hex'),
        this.options.idleTimeoutMs ?? IDLE_TIMEOUT_MS,
        () => (this.busy = false),
      );
    } catch {
      this.busy = false;
      return undefined;
    }
  }
}

function connect(socketPath: string): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const socket = net.connect(socketPath);
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new Error('connecting to the bulk port timed out'));
    }, CONNECT_TIMEOUT_MS);
    socket.once('connect', () => {
      clearTimeout(timer);
      socket.removeAllListeners('error');
      resolve(socket);
    });
    socket.once('error', (error) => {
      clearTimeout(timer);
      reject(error);
    });
  });
}

export class BulkTransfer {
  private released = false;
  private readonly header: Buffer;

  constructor(
    private readonly socket: net.Socket,
    readonly id: string,
    private readonly idleTimeoutMs: number,
    private readonly onRelease: () => void,
  ) {
    this.header = Buffer.from(`${bulkMagic}${id}`, 'latin1');
    socket.on('error', () => undefined); // failures reach the transfer through 'close'
    socket.setTimeout(idleTimeoutMs);
  }

  /** Ends the transfer: the connection closes (the guest's helper resets on that) and the port is free again. */
  release(): void {
    if (this.released) return;
    this.released = true;
    this.socket.destroy();
    this.onRelease();
  }

  /**
   * Sends the header, `source`'s chunks as frames, and the end frame once
   * `source` is done, at the pace the guest takes them (the frames are
   * described with @capsule/protocol/agent's `BULK_PORT_NAME`). Resolves with
   * the bytes sent once all are handed to the socket; rejects if the source
   * fails (the end frame is then never sent: the guest drops the file), or the
   * guest stalls.
   */
  upload(source: AsyncIterable<Buffer>): Promise<number> {
    const socket = this.socket;
    return new Promise<number>((resolve, reject) => {
      let sent = 0;
      let settled = false;
      let wake: (() => void) | undefined;
      const finish = (error?: Error) => {
        if (settled) return;
        settled = true;
        socket.off('drain', onDrain).off('timeout', onTimeout).off('close', onSocketClose);
        wake?.();
        if (error) reject(error);
        else resolve(sent);
      };
      const onDrain = () => wake?.();
      // Idle while the client is slow is fine; idle with bytes queued for the guest is not.
      const onTimeout = () => {
        if (socket.writableLength > 0) finish(new Error(`the guest took no upload bytes for ${this.idleTimeoutMs} ms`));
      };
      const onSocketClose = () => finish(new Error('the bulk port closed mid-upload'));
      socket.on('drain', onDrain).on('timeout', onTimeout).once('close', onSocketClose);
      const pump = async () => {
        socket.write(this.header);
        for await (const chunk of source) {
          if (settled) return;
          sent += chunk.length;
          for (let at = 0; at < chunk.length; at += bulkMaxFrameBytes) {
            const part = chunk.subarray(at, at + bulkMaxFrameBytes);
            socket.write(frameLength(part.length));
            socket.write(part);
          }
          if (socket.writableNeedDrain) await new Promise<void>((resume) => (wake = resume));
          wake = undefined;
          if (settled) return;
        }
        if (!settled) socket.write(frameLength(0), () => finish());
      };
      pump().catch((error: unknown) => finish(error instanceof Error ? error : new Error(String(error))));
    });
  }

  /**
   * Reads the guest's header, then writes exactly `size` bytes to `sink` at
   * the pace it takes them; whatever the guest sends past that is dropped.
   * Rejects if the header does not come within the stale-byte bound, the
   * guest stalls or closes early, or the sink goes away.
   */
  download(sink: Writable, size: number): Promise<void> {
    const socket = this.socket;
    const header = this.header;
    return new Promise<void>((resolve, reject) => {
      let synced = false;
      let tail = Buffer.alloc(0); // the end of the unsynced bytes, which may hold the header's start
      let skipped = 0;
      let left = size;
      let settled = false;
      const finish = (error?: Error) => {
        if (settled) return;
        settled = true;
        socket.pause();
        socket.off('data', onData).off('timeout', onTimeout).off('close', onSocketClose);
        sink.off('drain', onDrain).off('close', onSinkClose);
        if (error) reject(error);
        else resolve();
      };
      const forward = (bytes: Buffer) => {
        const part = bytes.length > left ? bytes.subarray(0, left) : bytes;
        left -= part.length;
        const more = part.length === 0 || sink.write(part);
        if (left === 0) return finish();
        if (!more) socket.pause();
      };
      const onData = (chunk: Buffer) => {
        if (synced) return forward(chunk);
        const seen = tail.length > 0 ? Buffer.concat([tail, chunk]) : chunk;
        const at = seen.indexOf(header);
        if (at !== -1) {
          synced = true;
          tail = Buffer.alloc(0);
          return forward(seen.subarray(at + header.length));
        }
        const keep = Math.min(seen.length, header.length - 1);
        skipped += seen.length - keep;
        if (skipped > MAX_STALE_BYTES) return finish(new Error(`the guest sent ${skipped} bytes without the transfer's header`));
        tail = Buffer.from(seen.subarray(seen.length - keep));
      };
      const onDrain = () => socket.resume();
      const onTimeout = () => {
        if (!socket.isPaused()) finish(new Error(`the guest sent no download bytes for ${this.idleTimeoutMs} ms`));
      };
      const onSocketClose = () => finish(new Error(`the bulk port closed with ${left} of ${size} bytes to go`));
      const onSinkClose = () => finish(new Error('the client went away mid-download'));
      socket.on('data', onData).on('timeout', onTimeout).once('close', onSocketClose);
      sink.on('drain', onDrain).once('close', onSinkClose);
      socket.resume();
    });
  }
}
