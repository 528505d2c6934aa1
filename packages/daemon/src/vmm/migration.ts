// Snapshots through QEMU's migration stream, which always passes through the
// daemon over unix sockets in the VM's runtime folder: QEMU's seccomp filter
// forbids it to spawn (so no `exec:` URIs) and a jailed QEMU sees no host path
// outside that folder. The daemon writes and reads the state files itself and
// never holds a whole stream in memory. With x-ignore-shared, RAM that lives
// in a shared memory file is not copied: a template's snapshot is then only its
// device state (tens of KiB), and a restore maps the memory file.
import { once } from 'node:events';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { pipeline } from 'node:stream/promises';
import { CapsuleError, errorMessage } from '../errors.js';
import type { VmRuntimePaths } from './qemu.js';
import type { QmpClient, QmpEvent } from './qmp.js';

const MIGRATION_TIMEOUT_MS = 120_000;
/**
 * QEMU throttles migration to 32 MiB/s by default, for live migration over a
 * network. Every migration here is of a stopped VM to a local file or
 * process, where the throttle only makes the guest wait: 365 MiB took 2.9 s
 * with it and 0.4 s without.
 */
const UNTHROTTLED = { 'max-bandwidth': 64 * 1024 * 1024 * 1024, 'downtime-limit': 60_000 };
/**
 * How many bytes of a stream the daemon lets wait between a socket and a file
 * (or two sockets). With the streams' 16 KiB default, reading stopped at each
 * 64 KiB chunk until its write was done: relaying a 300 MiB save took 0.8 s
 * instead of 0.4 s (exec:cat: 0.5 s), a load 0.5 s instead of 0.25 s.
 */
const RELAY_BUFFER_BYTES = 4 * 1024 * 1024;
/** A unix socket's path fits in sun_path's 108 bytes with its terminating NUL. */
const MAX_SOCKET_PATH_BYTES = 107;

async function enableCapabilities(qmp: QmpClient, ignoreShared: boolean): Promise<void> {
  await qmp.execute('migrate-set-capabilities', {
    capabilities: [
      { capability: 'x-ignore-shared', state: ignoreShared },
      { capability: 'events', state: true },
    ],
  });
  await qmp.execute('migrate-set-parameters', UNTHROTTLED);
}

const finished = (event: QmpEvent) =>
  event.event === 'MIGRATION' && (event.data?.status === 'completed' || event.data?.status === 'failed');

/** Starts a migration (errors of the command itself are thrown here); the result waits for its end. */
async function startMigration(qmp: QmpClient, start: () => Promise<unknown>): Promise<(what: string) => Promise<void>> {
  const done = qmp.waitForEvent(finished, MIGRATION_TIMEOUT_MS);
  done.catch(() => undefined);
  await start();
  return async (what) => {
    const event = await done;
    if (event.data?.status !== 'completed') {
      const info = await qmp.execute<{ 'error-desc'?: string }>('query-migrate').catch(() => ({}) as { 'error-desc'?: string });
      throw new Error(`${what} failed${info['error-desc'] ? `: ${info['error-desc']}` : ''}`);
    }
  };
}

function unixUri(socketPath: string): string {
  if (Buffer.byteLength(socketPath) > MAX_SOCKET_PATH_BYTES)
    throw new CapsuleError(
      'internal',
      `the migration socket ${socketPath} is longer than the ${MAX_SOCKET_PATH_BYTES} bytes a unix socket path can have`,
      { hint: 'set CAPSULE_RUNTIME_DIR to a shorter folder' },
    );
  return `unix:${socketPath}`;
}

/**
 * An error on a relay's socket fails the relay's pipeline while it runs; once
 * it has ended (QEMU dropping the connection as it exits after a load that
 * failed, say), the migration's own outcome is what counts.
 */
function outcomeComesFromQemu(): void {}

/**
 * A socket the daemon listens on for the one connection a QEMU makes to send
 * its stream. It belongs to the owner of its folder (a jailed QEMU's uid),
 * owner-only. A socket left by a daemon killed mid-save is replaced.
 */
class StreamListener {
  private readonly server = net.createServer();
  private connection: net.Socket | undefined;
  /** The connection QEMU made; rejects if the listener is closed first. */
  readonly accepted: Promise<net.Socket>;
  private refuse: (err: Error) => void = () => undefined;

  private constructor(private readonly socketPath: string) {
    this.accepted = new Promise((resolve, reject) => {
      this.refuse = reject;
      this.server.once('connection', (socket) => {
        socket.on('error', outcomeComesFromQemu);
        this.connection = socket;
        this.server.close();
        resolve(socket);
      });
    });
    this.accepted.catch(() => undefined);
  }

  static async listen(socketPath: string): Promise<StreamListener> {
    const listener = new StreamListener(socketPath);
    fs.rmSync(socketPath, { force: true });
    await new Promise<void>((resolve, reject) => {
      listener.server.once('error', reject);
      listener.server.listen(socketPath, () => {
        listener.server.off('error', reject);
        resolve();
      });
    });
    try {
      const folder = fs.statSync(path.dirname(socketPath));
      fs.chownSync(socketPath, folder.uid, folder.gid);
      fs.chmodSync(socketPath, 0o600);
    } catch (err) {
      listener.close();
      throw err;
    }
    return listener;
  }

  /** Stops listening, ends the connection if any and removes the socket. */
  close(): void {
    this.refuse(new Error('QEMU did not connect'));
    this.server.close();
    this.connection?.destroy();
    fs.rmSync(this.socketPath, { force: true });
  }
}

/** Ends a file stream and waits until its file descriptor is closed. */
async function closeStream(stream: fs.ReadStream | fs.WriteStream): Promise<void> {
  if (stream.closed) return;
  const closed = once(stream, 'close').catch(() => undefined);
  stream.destroy();
  await closed;
}

/**
 * Connects to the socket a QEMU listens on after `migrate-incoming`. Half
 * open: QEMU closes its end as soon as it has loaded the last byte, which
 * otherwise raced the end of our writes ("Premature close" on 300 MiB).
 */
async function connectTo(socketPath: string): Promise<net.Socket> {
  // Node takes writableHighWaterMark here, though its types leave it out.
  const options = { path: socketPath, allowHalfOpen: true, writableHighWaterMark: RELAY_BUFFER_BYTES } as net.NetConnectOpts;
  return await new Promise((resolve, reject) => {
    const socket = net.connect(options);
    socket.once('error', reject);
    socket.once('connect', () => {
      socket.off('error', reject);
      socket.on('error', outcomeComesFromQemu);
      resolve(socket);
    });
  });
}

/**
 * Waits for both the migration (`migrated`) and the daemon's relay of its
 * stream (`relayed`). Either failing ends the other through `abort`, and this
 * rejects only once both have ended, so nothing still writes when the caller
 * goes on. QEMU's reason comes first: a relay cut short is usually its effect.
 */
async function migrationAndRelay(what: string, migrated: Promise<void>, relayed: Promise<void>, abort: () => void): Promise<void> {
  const [migration, relay] = await Promise.allSettled([migrated.catch(failWith(abort)), relayed.catch(failWith(abort))]);
  if (migration.status === 'rejected') throw migration.reason;
  if (relay.status === 'rejected') throw new Error(`${what} failed: ${errorMessage(relay.reason)}`);
}

const failWith = (abort: () => void) => (err: unknown) => {
  abort();
  throw err;
};

/**
 * Pauses the VM and writes its state to `stateFile`, fsynced and owner-only;
 * RAM in a shared memory file is left out when `ignoreShared`. The stream
 * comes through a socket in the VM's runtime folder (`paths`).
 */
export async function saveVmState(qmp: QmpClient, paths: VmRuntimePaths, stateFile: string, ignoreShared: boolean): Promise<void> {
  const socketPath = paths.migrationOutSocket;
  const uri = unixUri(socketPath);
  const listener = await StreamListener.listen(socketPath);
  let output: fs.WriteStream | undefined;
  try {
    // Opened here, so that a file that cannot be written fails before the VM stops. Pause and
    // snapshots rename or record the file next: `flush` has it on disk before its stream ends.
    output = fs.createWriteStream('', { fd: fs.openSync(stateFile, 'w', 0o600), flush: true, highWaterMark: RELAY_BUFFER_BYTES });
    const file = output;
    await qmp.execute('stop');
    await enableCapabilities(qmp, ignoreShared);
    const written = listener.accepted.then((socket) => pipeline(socket, file));
    const saved = startMigration(qmp, () => qmp.execute('migrate', { uri })).then((done) => done('saving the VM state'));
    await migrationAndRelay('saving the VM state', saved, written, () => listener.close());
  } finally {
    listener.close();
    if (output) await closeStream(output);
  }
}

/**
 * Loads a VM started with `-incoming defer` from `stateFile`; a state saved of
 * a stopped VM leaves it stopped. QEMU listens on a socket in its runtime
 * folder (`paths`), and the daemon sends the file into it.
 */
export async function loadVmState(qmp: QmpClient, paths: VmRuntimePaths, stateFile: string, ignoreShared: boolean): Promise<void> {
  const socketPath = paths.migrationInSocket;
  const uri = unixUri(socketPath);
  const file = fs.createReadStream('', { fd: fs.openSync(stateFile, 'r'), highWaterMark: RELAY_BUFFER_BYTES });
  let socket: net.Socket | undefined;
  try {
    await enableCapabilities(qmp, ignoreShared);
    fs.rmSync(socketPath, { force: true });
    const loaded = await startMigration(qmp, () => qmp.execute('migrate-incoming', { uri }));
    // QEMU listens once migrate-incoming has answered.
    const input = await connectTo(socketPath);
    socket = input;
    const sent = pipeline(file, input);
    await migrationAndRelay('restoring the VM state', loaded('restoring the VM state'), sent, () => input.destroy());
  } finally {
    socket?.destroy();
    await closeStream(file);
    fs.rmSync(socketPath, { force: true });
  }
}

/**
 * Loads a VM started with `-incoming defer` from `stateFile`, then lets it
 * run; `beforeRun` sees the loaded VM before the guest executes anything.
 */
export async function restoreVmState(
  qmp: QmpClient,
  paths: VmRuntimePaths,
  stateFile: string,
  ignoreShared: boolean,
  beforeRun?: () => Promise<void>,
): Promise<void> {
  await loadVmState(qmp, paths, stateFile, ignoreShared);
  await beforeRun?.();
  // A snapshot taken of a stopped VM restores stopped; the guest must run for its fix-ups.
  await qmp.execute('cont');
}

/**
 * Moves the whole state of a VM into another QEMU started with `-incoming
 * defer`: the source sends to a socket in its runtime folder, the daemon
 * relays to the target listening in its own. The source is stopped first and
 * stays stopped (its caller continues or ends it); the target ends up loaded
 * and paused.
 */
export async function migrateBetween(
  source: QmpClient,
  sourcePaths: VmRuntimePaths,
  target: QmpClient,
  targetPaths: VmRuntimePaths,
): Promise<void> {
  const sourceSocket = sourcePaths.migrationOutSocket;
  const targetSocket = targetPaths.migrationInSocket;
  const sourceUri = unixUri(sourceSocket);
  const targetUri = unixUri(targetSocket);
  const listener = await StreamListener.listen(sourceSocket);
  let toTarget: net.Socket | undefined;
  try {
    await enableCapabilities(target, false);
    fs.rmSync(targetSocket, { force: true });
    const loaded = await startMigration(target, () => target.execute('migrate-incoming', { uri: targetUri }));
    toTarget = await connectTo(targetSocket);
    const output = toTarget;
    await source.execute('stop');
    await enableCapabilities(source, false);
    const relayed = listener.accepted.then((fromSource) => pipeline(fromSource, output));
    const sent = startMigration(source, () => source.execute('migrate', { uri: sourceUri })).then((done) => done('sending the VM state'));
    const both = Promise.all([sent, loaded('loading the VM state')]).then(() => undefined);
    await migrationAndRelay('moving the VM state', both, relayed, () => {
      listener.close();
      output.destroy();
    });
  } finally {
    listener.close();
    toTarget?.destroy();
    fs.rmSync(targetSocket, { force: true });
  }
}
