// A stand-in for a virtio-serial port with the guest driver's semantics, for
// tests that cannot boot a VM: while no host is connected, reads return 0 at
// once; when the host disconnects, a pending read returns 0. Writes while no
// host is connected either fail (ENODEV) or, as Linux's virtio_console does
// for blocking fds, wait for the next host. The host side is a Duplex, as the
// unix socket QEMU offers would be.

import { Duplex } from 'node:stream';
import type { BlockingPort } from '../src/port-session-loop.js';

export class FakeVirtioPort implements BlockingPort {
  private host: Duplex | undefined;
  /** After forgetHostWithoutEof: the guest still believes a host is there. */
  private phantomHost = false;
  private hostWaiters: Array<() => void> = [];
  private readonly toGuest: Buffer[] = [];
  private wakeReader: (() => void) | undefined;
  reads = 0;
  emptyReads = 0;
  /** Everything the guest wrote, per host connection (index 0 = first host). */
  readonly writtenPerHost: Buffer[][] = [];
  failedWrites = 0;

  constructor(private readonly writesWithoutHost: 'fail' | 'block' = 'fail') {}

  get hostConnected(): boolean {
    return this.host !== undefined;
  }

  /** Connects a host; the returned Duplex is the host's end of the port. */
  connectHost(): Duplex {
    if (this.host) throw new Error('a host is already connected');
    const written: Buffer[] = [];
    this.writtenPerHost.push(written);
    const port = this;
    const host = new Duplex({
      read() {},
      write(chunk: Buffer, _encoding, callback) {
        if (port.host === host) {
          port.toGuest.push(Buffer.from(chunk));
          port.wakeReader?.();
        }
        callback();
      },
      destroy(error, callback) {
        if (port.host === host) {
          port.host = undefined;
          port.wakeReader?.();
        }
        callback(error);
      },
    });
    this.host = host;
    this.phantomHost = false;
    for (const wake of this.hostWaiters.splice(0)) wake();
    return host;
  }

  disconnectHost(): void {
    this.host?.destroy();
  }

  /**
   * What a restore from a snapshot taken while a host was connected looks
   * like to the guest: the old host is simply gone (QEMU's new chardev never
   * had it), no EOF is delivered, and the next bytes come from a new host.
   */
  forgetHostWithoutEof(): void {
    const old = this.host;
    this.host = undefined;
    this.phantomHost = true;
    this.toGuest.length = 0;
    old?.destroy();
  }

  /** One read per batch, of at most what one host write delivered (and at most 64 KiB). */
  async readBatch(): Promise<Buffer[]> {
    this.reads += 1;
    for (;;) {
      if (!this.host && !this.phantomHost) {
        this.toGuest.length = 0; // bytes of a gone host are lost with it
        this.emptyReads += 1;
        await new Promise((resolve) => setImmediate(resolve));
        return [Buffer.alloc(0)];
      }
      const next = this.toGuest.shift();
      if (next) {
        const count = Math.min(next.length, 64 * 1024);
        if (count < next.length) this.toGuest.unshift(next.subarray(count));
        return [Buffer.from(next.subarray(0, count))];
      }
      await new Promise<void>((resolve) => (this.wakeReader = resolve));
      this.wakeReader = undefined;
    }
  }

  async write(data: Uint8Array): Promise<void> {
    await new Promise((resolve) => setImmediate(resolve));
    if (!this.host && !this.phantomHost && this.writesWithoutHost === 'block') {
      await new Promise<void>((resolve) => this.hostWaiters.push(resolve));
    }
    const host = this.host;
    // QEMU drops what the guest writes to a chardev nobody is connected to.
    if (!host && this.phantomHost) return;
    if (!host) {
      this.failedWrites += 1;
      throw Object.assign(new Error('write ENODEV (no host connected)'), { code: 'ENODEV' });
    }
    const copy = Buffer.from(data);
    this.writtenPerHost.at(-1)?.push(copy);
    host.push(copy);
  }
}
