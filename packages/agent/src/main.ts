// capsule-agent's entry point: parses options, builds the server and serves
// it on the virtio-serial port (in a VM) or a unix socket (tests). Runs as
// root under tini. Must never exit because of a client or the host: only
// SIGTERM/SIGINT or a bad command line end it.
import './threadpool-size.js';

import { lstatSync, readFileSync, unlinkSync } from 'node:fs';
import net from 'node:net';
import type http2 from 'node:http2';
import { agentHttpPaths, BULK_PORT_NAME } from '@capsule/protocol/agent';
import { BulkPort } from './bulk-port.js';
import { AgentDefaults } from './agent-defaults.js';
import { createFilesRoute } from './files-route.js';
import { createFilesystemService } from './filesystem-service.js';
import { GuestHelper } from './guest-helper.js';
import { createInitRoute } from './init-route.js';
import { GUEST_SSH_IDENTITY } from './ssh-identity.js';
import { createLogger } from './log.js';
import { createMetricsRoute } from './metrics-route.js';
import { parseAgentOptions, usage, UsageError, type AgentOptions } from './options.js';
import { runPortSessions } from './port-session-loop.js';
import { createProcessService, ProcessTable } from './process-service.js';
import { createAgentServer } from './server.js';
import { createTunnelRoute } from './tunnel-route.js';
import { lookupUser, parsePasswd, PASSWD_PATH } from './users.js';
import { openVirtioPort, waitForVirtioPortDevice } from './virtio-port.js';
import { WatcherRegistry } from './watcher-registry.js';

const log = createLogger('main');

function installCrashGuards(): void {
  // Last line of defence: an agent that dies takes the sandbox with it, so a
  // bug reached by one request is logged and the rest keep being served.
  process.on('uncaughtException', (error) => log.error('uncaught exception (agent keeps running)', error));
  process.on('unhandledRejection', (reason) => {
    if (!isUndiciWithoutWasm(reason)) log.error('unhandled rejection (agent keeps running)', reason);
  });
  // Load Node's fetch classes now (the RPC layer builds a Headers per request):
  // at start-up, before a warm snapshot is taken, rather than in a sandbox's first exec.
  void globalThis.Headers;
}

/**
 * Under --jitless (TCG guests) V8 has no WebAssembly, and the first touch of
 * Node's fetch classes loads its bundled undici, which starts compiling a wasm
 * HTTP parser and leaves that promise's rejection unhandled. The agent makes no
 * HTTP client requests, so it never needs that parser: this one known rejection
 * is not an error, every other one is.
 */
function isUndiciWithoutWasm(reason: unknown): boolean {
  return !('WebAssembly' in globalThis) && reason instanceof ReferenceError && reason.message === 'WebAssembly is not defined';
}

/** root when it exists and we are root, else whoever the agent runs as. */
function chooseDefaultUser(configured: string | undefined): string {
  if (configured) return configured;
  const uid = process.getuid?.() ?? 0;
  if (uid === 0 && lookupUser('root')) return 'root';
  try {
    const own = parsePasswd(readFileSync(PASSWD_PATH, 'utf8')).find((user) => user.uid === uid);
    if (own) return own.name;
  } catch {
    // No passwd: fall through to root, which fails per request with a clear error.
  }
  return 'root';
}

function listenOnUnixSocket(server: http2.Http2Server, path: string): void {
  try {
    if (lstatSync(path).isSocket()) unlinkSync(path); // left over from an earlier run
  } catch {
    // Nothing there.
  }
  const listener = net.createServer((socket) => {
    socket.on('error', (error) => log.debug(`unix socket connection error: ${error.message}`));
    server.emit('connection', socket);
  });
  listener.on('error', (error) => {
    log.error(`cannot listen on unix:${path}`, error);
    process.exit(1);
  });
  listener.listen(path, () => log.info(`listening on unix:${path}`));
}

async function serveVirtioPort(
  server: http2.Http2Server,
  transport: Extract<AgentOptions['transport'], { kind: 'virtio-port' }>,
  bulkPort: BulkPort | undefined,
): Promise<void> {
  const device = transport.devicePath ?? (await waitForVirtioPortDevice(transport.portName));
  const port = openVirtioPort(device);
  // Held open from now on, as the guest driver drops what the host sends to a
  // port nobody holds open. It shows up with the agent port, or not at all
  // (a VM from before it, restored from its snapshot, never has it).
  bulkPort?.open();
  log.info(`serving on virtio port ${device} (${transport.portName})`);
  await runPortSessions({ port, onSession: (stream) => server.emit('connection', stream) });
}

async function main(): Promise<void> {
  let options: AgentOptions | 'help';
  try {
    options = parseAgentOptions(process.argv.slice(2), process.env);
  } catch (error) {
    if (!(error instanceof UsageError)) throw error;
    process.stderr.write(`capsule-agent: ${error.message}\n\n${usage}`);
    process.exit(2);
  }
  if (options === 'help') {
    process.stdout.write(usage);
    return;
  }
  installCrashGuards();

  const defaults = new AgentDefaults(chooseDefaultUser(options.defaultUser));
  // Started now, so that it already runs in a warm snapshot (see guest-helper.ts).
  const guestHelper = new GuestHelper(options.guestHelperPath);
  guestHelper.start();
  // Only a VM has one (opened in serveVirtioPort); a unix-socket agent has none.
  const bulkPort = options.transport.kind === 'virtio-port' ? new BulkPort(options.guestHelperPath, BULK_PORT_NAME) : undefined;
  const processes = new ProcessTable();
  const server = createAgentServer({
    processService: createProcessService(processes, { defaults }),
    filesystemService: createFilesystemService({ defaults, watchers: new WatcherRegistry() }),
    routes: {
      [agentHttpPaths.init]: createInitRoute({
        defaults,
        guestHelper,
        hostnameFile: options.hostnameFile,
        sshIdentity: options.transport.kind === 'virtio-port' ? GUEST_SSH_IDENTITY : undefined,
      }),
      [agentHttpPaths.files]: createFilesRoute({ defaults, bulkPort }),
      [agentHttpPaths.metrics]: createMetricsRoute(),
      [agentHttpPaths.tunnel]: createTunnelRoute(),
    },
  });

  for (const signal of ['SIGTERM', 'SIGINT'] as const) {
    process.on(signal, () => {
      log.info(`${signal} received: killing started processes and exiting`);
      processes.signalAll('SIGKILL');
      process.exit(0);
    });
  }

  log.info(`capsule-agent starting (pid ${process.pid}, node ${process.version}, default user ${defaults.user})`);
  if (options.transport.kind === 'unix') listenOnUnixSocket(server, options.transport.path);
  else await serveVirtioPort(server, options.transport, bulkPort);
}

main().catch((error: unknown) => {
  log.error('capsule-agent failed to start', error);
  process.exit(1);
});
