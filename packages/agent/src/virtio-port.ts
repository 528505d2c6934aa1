// Finds and opens the guest end of the agent's virtio-serial port
// (/dev/vportNpM, named by QEMU's `virtserialport name=`). Node cannot make a
// socket of a character device, so reads are blocking reads on a worker
// thread (port-reader-thread.ts) and writes blocking writes on libuv's
// threadpool. Must never seek, and never block the event loop.

import { openSync, readdirSync, readFileSync, write } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { createLogger } from './log.js';
import type { BlockingPort } from './port-session-loop.js';
import { PortReaderThread } from './port-reader-thread.js';

const log = createLogger('port');

export const VIRTIO_PORTS_DIR = '/sys/class/virtio-ports';

/** The /dev path of the port called `name`, if the kernel has it yet. */
export function findVirtioPortDevice(name: string, sysDir = VIRTIO_PORTS_DIR): string | undefined {
  let entries: string[];
  try {
    entries = readdirSync(sysDir);
  } catch {
    return undefined;
  }
  for (const entry of entries.sort()) {
    try {
      if (readFileSync(join(sysDir, entry, 'name'), 'utf8').trim() === name) return `/dev/${entry}`;
    } catch {
      // A port without a name file (unnamed port): not ours.
    }
  }
  return undefined;
}

/** Waits for the port to appear (the driver may probe after we start). */
export async function waitForVirtioPortDevice(name: string, sysDir = VIRTIO_PORTS_DIR): Promise<string> {
  const startedAt = Date.now();
  let lastReportAt = startedAt;
  for (;;) {
    const device = findVirtioPortDevice(name, sysDir);
    if (device) return device;
    if (Date.now() - lastReportAt >= 5000) {
      log.warn(`still no virtio port named '${name}' in ${sysDir} after ${Math.round((Date.now() - startedAt) / 1000)} s`);
      lastReportAt = Date.now();
    }
    await sleep(100);
  }
}

export function openVirtioPort(devicePath: string): BlockingPort {
  const fd = openSync(devicePath, 'r+');
  const reader = new PortReaderThread({ fd });
  const writeSome = (data: Uint8Array, offset: number) =>
    new Promise<number>((resolve, reject) =>
      write(fd, data, offset, data.length - offset, null, (error, written) => (error ? reject(error) : resolve(written))),
    );
  return {
    readBatch: () => reader.readBatch(),
    async write(data) {
      let offset = 0;
      while (offset < data.length) {
        const written = await writeSome(data, offset);
        if (written <= 0) throw new Error(`write to ${devicePath} made no progress`);
        offset += written;
      }
    },
  };
}
