// Reads the virtio port on a worker thread, so that the main thread handles
// many reads at once. The guest's virtio_console driver returns at most one
// 4 KiB receive buffer per read(2): one threadpool round trip and one HTTP/2
// push per 4 KiB cost far more JS time under TCG than the channel itself.
// The worker loops on blocking readSync into a shared ring; the main thread
// takes everything queued in one go. Must never merge or reorder reads: each
// read's bytes, and each read of 0 (EOF), stay a record of their own.

import { Worker } from 'node:worker_threads';

/** What one record's header means: > 0 data bytes, 0 EOF, < 0 an error message of -header bytes. */
const HEADER_BYTES = 4;
/** Int32 slots of the control array. */
const FILLED = 0; // bytes of records in the ring, written by both threads
const STOP = 1; // set by the main thread when the port is closed

const MAX_ERROR_MESSAGE_BYTES = 1024;

export interface PortReaderOptions {
  fd: number;
  /** Ring capacity; the worker reads ahead at most this much. */
  ringBytes?: number;
  /** Largest single read(2) asked for. */
  readBytes?: number;
  /** Pause after a read of 0 before reading again (no host: poll, don't spin). */
  pollIntervalMs?: number;
  /** Pause after a failed read, so a broken port does not spin. */
  errorBackoffMs?: number;
}

interface ReaderThreadData {
  fd: number;
  ring: SharedArrayBuffer;
  control: SharedArrayBuffer;
  readBytes: number;
  pollIntervalMs: number;
  errorBackoffMs: number;
}

// lib ES2023 lacks Atomics.waitAsync (Node 20 has it).
type WaitAsync = (
  array: Int32Array,
  index: number,
  value: number,
) => { async: false; value: 'not-equal' | 'timed-out' } | { async: true; value: Promise<'ok' | 'timed-out'> };
const waitAsync = (Atomics as unknown as { waitAsync: WaitAsync }).waitAsync;

/**
 * The worker's body. It runs from its source text (the agent is bundled into
 * one file, so there is no module to point a Worker at): it may use only
 * `require` and its workerData, nothing from this module's scope.
 */
function readerThreadMain(): void {
  const { readSync } = require('node:fs') as typeof import('node:fs');
  const { workerData } = require('node:worker_threads') as typeof import('node:worker_threads');
  const data = workerData as ReaderThreadData;
  const ring = new Uint8Array(data.ring);
  const control = new Int32Array(data.control);
  const capacity = ring.length;
  const chunk = Buffer.allocUnsafe(data.readBytes);
  const header = Buffer.alloc(4);
  let writeAt = 0;

  const stopped = () => Atomics.load(control, 1) !== 0;
  const pause = (ms: number) => Atomics.wait(control, 1, 0, ms);
  const copyIn = (bytes: Uint8Array) => {
    const first = Math.min(bytes.length, capacity - writeAt);
    ring.set(bytes.subarray(0, first), writeAt);
    ring.set(bytes.subarray(first), 0);
    writeAt = (writeAt + bytes.length) % capacity;
  };
  const waitForSpace = (size: number): boolean => {
    for (;;) {
      if (stopped()) return false;
      const filled = Atomics.load(control, 0);
      if (capacity - filled >= size) return true;
      Atomics.wait(control, 0, filled); // until the main thread takes some
    }
  };
  const publish = (size: number) => {
    Atomics.add(control, 0, size);
    Atomics.notify(control, 0);
  };
  const putRecord = (value: number, body: Uint8Array) => {
    if (!waitForSpace(4 + body.length)) return;
    header.writeInt32LE(value, 0);
    copyIn(header);
    copyIn(body);
    publish(4 + body.length);
  };
  // Copies into shared memory go through a slow element-wise path (very slow
  // under TCG), so reads land in the ring directly unless it is about to wrap.
  const ringBuffer = Buffer.from(data.ring);

  let lastWasEof = false;
  while (waitForSpace(4 + chunk.length)) {
    const direct = writeAt + 4 + chunk.length <= capacity;
    let count: number;
    try {
      count = direct ? readSync(data.fd, ringBuffer, writeAt + 4, chunk.length, null) : readSync(data.fd, chunk, 0, chunk.length, null);
    } catch (error) {
      const message = Buffer.from(String((error as Error | undefined)?.message ?? error).slice(0, 1024) || 'read failed');
      putRecord(-message.length, message);
      lastWasEof = false;
      pause(data.errorBackoffMs);
      continue;
    }
    if (count === 0) {
      // Only the first of a run of EOFs means something (the host left);
      // the rest are polls while no host is there.
      if (!lastWasEof) putRecord(0, chunk.subarray(0, 0));
      lastWasEof = true;
      pause(data.pollIntervalMs);
      continue;
    }
    lastWasEof = false;
    if (!direct) {
      putRecord(count, chunk.subarray(0, count));
      continue;
    }
    header.writeInt32LE(count, 0);
    copyIn(header);
    writeAt = (writeAt + count) % capacity;
    publish(4 + count);
  }
}

/** The main thread's end: batches of reads, in order. */
export class PortReaderThread {
  private readonly ring: Uint8Array;
  private readonly control: Int32Array;
  private readonly worker: Worker;
  private readAt = 0;
  private readonly header = Buffer.alloc(HEADER_BYTES);
  private pendingError: Error | undefined;
  private workerFailure: Error | undefined;

  constructor(options: PortReaderOptions) {
    const ringBytes = options.ringBytes ?? 1024 * 1024;
    const readBytes = options.readBytes ?? 64 * 1024;
    if (readBytes + HEADER_BYTES > ringBytes) throw new Error('the ring must hold at least one full read');
    const ring = new SharedArrayBuffer(ringBytes);
    const control = new SharedArrayBuffer(2 * Int32Array.BYTES_PER_ELEMENT);
    this.ring = new Uint8Array(ring);
    this.control = new Int32Array(control);
    const workerData: ReaderThreadData = {
      fd: options.fd,
      ring,
      control,
      readBytes,
      pollIntervalMs: options.pollIntervalMs ?? 10,
      errorBackoffMs: options.errorBackoffMs ?? 100,
    };
    this.worker = new Worker(`(${readerThreadMain.toString()})()`, { eval: true, workerData, name: 'virtio-port-reader' });
    this.worker.on('error', (error) => {
      this.workerFailure = error;
      Atomics.notify(this.control, FILLED); // wakes a readBatch waiting for data that will never come
    });
  }

  /**
   * Resolves with every read queued since the last call (at least one): each
   * non-empty Buffer is one read(2), an empty one a read of 0. A failed read
   * rejects, after the reads queued before it were returned.
   */
  async readBatch(): Promise<Buffer[]> {
    for (;;) {
      if (this.pendingError) {
        const error = this.pendingError;
        this.pendingError = undefined;
        throw error;
      }
      if (this.workerFailure) throw new Error(`the port reader thread failed: ${this.workerFailure.message}`);
      const filled = Atomics.load(this.control, FILLED);
      if (filled > 0) return this.takeRecords(filled);
      const wait = waitAsync(this.control, FILLED, 0);
      if (wait.async) await wait.value;
    }
  }

  /**
   * Copies the records out of the ring: all data into one new buffer (one
   * allocation, one copy per read), each read returned as a view of it, so
   * that consecutive reads are contiguous and can be pushed as one.
   */
  private takeRecords(filled: number): Buffer[] {
    const batch = Buffer.allocUnsafe(filled);
    const reads: Buffer[] = [];
    let consumed = 0;
    let batchBytes = 0;
    while (consumed < filled) {
      this.copyOut(this.header, 0, HEADER_BYTES);
      const value = this.header.readInt32LE(0);
      const length = Math.abs(value);
      consumed += HEADER_BYTES + length;
      if (value >= 0) {
        this.copyOut(batch, batchBytes, length);
        reads.push(batch.subarray(batchBytes, batchBytes + length));
        batchBytes += length;
        continue;
      }
      const message = Buffer.allocUnsafe(length);
      this.copyOut(message, 0, length);
      const error = new Error(message.toString('utf8', 0, Math.min(length, MAX_ERROR_MESSAGE_BYTES)));
      if (reads.length === 0) {
        this.release(consumed);
        throw error;
      }
      this.pendingError = error;
      break;
    }
    this.release(consumed);
    return reads;
  }

  private copyOut(target: Buffer, at: number, length: number): void {
    const first = Math.min(length, this.ring.length - this.readAt);
    target.set(this.ring.subarray(this.readAt, this.readAt + first), at);
    target.set(this.ring.subarray(0, length - first), at + first);
    this.readAt = (this.readAt + length) % this.ring.length;
  }

  private release(bytes: number): void {
    Atomics.sub(this.control, FILLED, bytes);
    Atomics.notify(this.control, FILLED);
  }

  /**
   * Stops the worker; resolves when it has exited, which is once its read in
   * progress returns (a read(2) blocked on the port cannot be interrupted).
   */
  async stop(): Promise<void> {
    Atomics.store(this.control, STOP, 1);
    Atomics.notify(this.control, STOP);
    Atomics.notify(this.control, FILLED);
    if (this.worker.threadId === -1) return; // already exited
    await new Promise((resolve) => this.worker.once('exit', resolve));
  }
}
