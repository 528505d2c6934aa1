// A volume's export format, a compressed qcow2 image of its disk file, made
// with qemu-img and read back from a client's upload as hostile input: the
// upload is bounded while it arrives, qemu-img is always told the format
// (never probes it) and runs confined, and an image that names another file
// (a backing file, an external data file) is refused before any of its
// clusters are read. Nothing here touches the store.
import fs from 'node:fs';
import { limits } from '@capsule/protocol';
import { freeDiskMiB } from '../disk-admission.js';
import { CapsuleError } from '../errors.js';
import { LaunchError, runCommand } from '../launcher.js';
import { runConfined } from './confined.js';

const MIB = 1024 * 1024;
const QCOW2_MAGIC = Buffer.from('QFI\xfb', 'latin1');
/** The header's fields an upload is judged by before it is stored: magic (0), version (4), virtual size (24). */
const HEADER_BYTES = 32;
/** How often, in bytes received, the free disk is looked at again. */
const DISK_CHECK_BYTES = 64 * MIB;
/** How often the free disk is looked at while an image is unpacked. */
const DISK_CHECK_MS = 250;

function refused(message: string): CapsuleError {
  return new CapsuleError('invalid_argument', `not a volume image: ${message}`, {
    hint: 'import what `capsule volume export` wrote (a qcow2 image of an ext4 filesystem, without a backing file)',
  });
}

/**
 * Writes the compressed qcow2 image of the raw volume file `volume` to
 * `image` (an empty file). The volume is read as raw bytes (`-f raw`, never
 * probed): a guest's disk may hold any header, and is parsed here by nothing.
 */
export async function writeVolumeImage(volume: string, image: string): Promise<void> {
  await runCommand('qemu-img', ['convert', '-f', 'raw', '-O', 'qcow2', '-c', '-o', 'compression_type=zstd', volume, image]);
}

/** The largest upload a header claiming `virtualBytes` may take: every cluster stored whole, and metadata of the smallest clusters. */
function maxImageBytes(virtualBytes: number): number {
  return virtualBytes + Math.ceil(virtualBytes / 8) + 64 * MIB;
}

/**
 * Stores an upload in `image` (created here, 0600), refusing it as soon as
 * it shows it is no qcow2 image of a volume's size, grows past what such an
 * image can take, or leaves less free disk than `reserveMiB`. A stream that
 * ends early stores a truncated image, which qemu-img refuses later.
 */
export async function receiveVolumeImage(upload: AsyncIterable<Buffer>, image: string, reserveMiB: number): Promise<void> {
  const fd = fs.openSync(image, fs.constants.O_WRONLY | fs.constants.O_CREAT | fs.constants.O_EXCL | fs.constants.O_NOFOLLOW, 0o600);
  try {
    let received = 0;
    let header = Buffer.alloc(0);
    let bound = Number.POSITIVE_INFINITY;
    let nextDiskCheck = DISK_CHECK_BYTES;
    for await (const chunk of upload) {
      if (header.length < HEADER_BYTES) {
        header = Buffer.concat([header, chunk.subarray(0, HEADER_BYTES - header.length)]);
        if (!header.subarray(0, 4).equals(QCOW2_MAGIC.subarray(0, Math.min(4, header.length))))
          throw refused('it does not start as a qcow2 image');
        if (header.length === HEADER_BYTES) {
          const virtualBytes = Number(header.readBigUInt64BE(24));
          assertVolumeBytes(virtualBytes);
          bound = maxImageBytes(virtualBytes);
        }
      }
      received += chunk.length;
      if (received > bound) throw refused(`it is larger than a qcow2 image of its size can be (${Math.round(bound / MIB)} MiB)`);
      if (received >= nextDiskCheck) {
        nextDiskCheck += DISK_CHECK_BYTES;
        if (reserveMiB > 0 && freeDiskMiB(image) < reserveMiB) throw outOfDisk(reserveMiB, 'receiving the image');
      }
      fs.writeSync(fd, chunk);
    }
    if (header.length < HEADER_BYTES) throw refused('it ended before its header did');
  } finally {
    fs.closeSync(fd);
  }
}

function outOfDisk(reserveMiB: number, doing: string): CapsuleError {
  return new CapsuleError(
    'insufficient_storage',
    `cannot import a volume: less than the ${reserveMiB} MiB capsuled keeps free was left while ${doing}`,
    { hint: 'free disk space on the daemon host, or import a volume holding less data' },
  );
}

function assertVolumeBytes(bytes: number): void {
  if (!Number.isSafeInteger(bytes) || bytes % MIB !== 0 || bytes < limits.minVolumeMiB * MIB || bytes > limits.maxVolumeMiB * MIB)
    throw refused(
      `its size (${bytes} bytes) is no volume size: whole MiB, from ${limits.minVolumeMiB} MiB to ${limits.maxVolumeMiB / MIB} TiB`,
    );
}

/** What `qemu-img info --output=json` says of an image, as far as it is judged here. */
interface ImageInfo {
  format?: unknown;
  'virtual-size'?: unknown;
  'backing-filename'?: unknown;
  'full-backing-filename'?: unknown;
  encrypted?: unknown;
  'format-specific'?: { data?: { 'data-file'?: unknown } };
}

/**
 * Checks the stored upload with qemu-img (format given, confined; info never
 * opens a backing file) and resolves with its size in bytes. Refused: any
 * other format, a backing file or an external data file (either would copy a
 * host file into the volume), encryption, a size no volume has.
 */
export async function checkVolumeImage(image: string, confine: boolean): Promise<number> {
  let info: ImageInfo;
  try {
    const { stdout } = await runConfined(
      [{ path: image, inside: 'image.qcow2', writable: false }],
      ([inside = '']) => ['qemu-img', 'info', '-f', 'qcow2', '--output=json', inside],
      confine,
    );
    info = JSON.parse(stdout) as ImageInfo;
  } catch (err) {
    throw refused(`qemu-img cannot read it as qcow2 (${firstLine(err)})`);
  }
  if (info.format !== 'qcow2') throw refused(`it is ${String(info.format)}, not qcow2`);
  if (info['backing-filename'] !== undefined || info['full-backing-filename'] !== undefined)
    throw refused('it has a backing file; an exported volume stands alone');
  if (info['format-specific']?.data?.['data-file'] !== undefined) throw refused('it keeps its data in another file');
  if (info.encrypted === true) throw refused('it is encrypted');
  const bytes = info['virtual-size'];
  if (typeof bytes !== 'number') throw refused('qemu-img gave it no size');
  assertVolumeBytes(bytes);
  return bytes;
}

/**
 * Writes the checked image's disk to `volume` (an empty file) as a sparse raw
 * file, confined. A small image may hold far more data than it takes (its
 * clusters compressed), so the free disk is watched while it is written, and
 * the write stopped when it falls below `reserveMiB`.
 */
export async function unpackVolumeImage(image: string, volume: string, confine: boolean, reserveMiB: number): Promise<void> {
  const stop = new AbortController();
  const watch = setInterval(() => {
    if (reserveMiB > 0 && freeDiskMiB(volume) < reserveMiB) stop.abort();
  }, DISK_CHECK_MS);
  try {
    await runConfined(
      [
        { path: image, inside: 'image.qcow2', writable: false },
        { path: volume, inside: 'volume.ext4', writable: true },
      ],
      ([from = '', to = '']) => ['qemu-img', 'convert', '-f', 'qcow2', '-O', 'raw', from, to],
      confine,
      { signal: stop.signal },
    );
  } catch (err) {
    if (stop.signal.aborted) throw outOfDisk(reserveMiB, 'unpacking the image');
    throw refused(`its clusters cannot be read, it may be truncated (${firstLine(err)})`);
  } finally {
    clearInterval(watch);
  }
}

function firstLine(err: unknown): string {
  if (err instanceof LaunchError) return err.recentOutput.at(-1)?.slice(0, 300) ?? err.message.split('\n')[0] ?? '';
  return (err instanceof Error ? err.message : String(err)).split('\n')[0]?.slice(0, 300) ?? '';
}
