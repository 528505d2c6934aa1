// What every command action shares: the global flags, a client for the daemon
// (its socket, a context's host, or $CAPSULE_HOST over TLS), the progress reporter, and
// `daemonClient()`, which starts a local capsuled when a command needs it and none answers.
import { CapsuleClient, HOST_ENV, defaultSocketPath, parseDaemonUrl, type ConnectionOptions } from '@capsule/sdk';
import type { Command } from 'commander';
import { selectedContext, type DaemonContext } from './contexts.js';
import { isDaemonDown, startDaemon } from './daemon-process.js';
import { Progress } from './progress.js';

export interface GlobalFlags {
  debug: boolean;
  verbose: boolean;
  socket: string | undefined;
  context: string | undefined;
}

/** The flags of the command line being run, kept for the error reporter in cli.ts. */
export const lastSeenFlags: GlobalFlags = { debug: false, verbose: false, socket: undefined, context: undefined };

export class CliContext {
  readonly flags: GlobalFlags;
  readonly progress: Progress;
  #client: CapsuleClient | undefined;
  /** The context as the contexts file gave it at the first question: read once per command. */
  #context: { value: DaemonContext | undefined } | undefined;

  constructor(flags: GlobalFlags) {
    this.flags = flags;
    this.progress = new Progress({ verbose: flags.verbose });
  }

  static of(command: Command): CliContext {
    const options = command.optsWithGlobals<{ debug?: boolean; verbose?: boolean; socket?: string; context?: string }>();
    const flags = { debug: options.debug === true, verbose: options.verbose === true, socket: options.socket, context: options.context };
    Object.assign(lastSeenFlags, flags);
    return new CliContext(flags);
  }

  get socketPath(): string {
    return this.flags.socket ?? defaultSocketPath();
  }

  /** A daemon on another host (a context, or $CAPSULE_HOST, unless --socket names a local one): never started or stopped from here. */
  get remote(): boolean {
    return this.flags.socket === undefined && (this.daemonContext !== undefined || Boolean(process.env[HOST_ENV]));
  }

  /** The context in use: `--context`, else (without $CAPSULE_HOST) $CAPSULE_CONTEXT or the current one. Read once. */
  get daemonContext(): DaemonContext | undefined {
    if (this.flags.socket !== undefined) return undefined;
    if (this.flags.context === undefined && process.env[HOST_ENV]) return undefined;
    this.#context ??= { value: selectedContext(this.flags.context)?.context };
    return this.#context.value;
  }

  /** Where the daemon is, for the SDK: --socket, else a context, else what the SDK reads from the environment. */
  get connection(): ConnectionOptions {
    if (this.flags.socket !== undefined) return { socketPath: this.flags.socket };
    const context = this.daemonContext;
    if (context === undefined) return {};
    const { host, port, tls } = parseDaemonUrl(context.host);
    return {
      host,
      port,
      tls: tls && (context.fingerprintSha256 ? { fingerprintSha256: context.fingerprintSha256 } : true),
      ...(context.apiKey !== undefined && { apiKey: context.apiKey }),
    };
  }

  /** A client that does not start the daemon (for status, doctor). */
  client(): CapsuleClient {
    this.#client ??= new CapsuleClient(this.connection);
    return this.#client;
  }

  /** A client of this host's daemon, on its socket (for start and stop, which act on local processes). */
  localClient(): CapsuleClient {
    return this.remote ? new CapsuleClient({ socketPath: this.socketPath }) : this.client();
  }

  /** A client whose daemon answers, starting a local capsuled first when none does. */
  async daemonClient(): Promise<CapsuleClient> {
    const client = this.client();
    if (this.remote) return client;
    try {
      await client.health({ requestTimeoutMs: 10_000 });
    } catch (error) {
      if (!isDaemonDown(error)) throw error;
      await startDaemon(client, {
        socketPath: this.flags.socket,
        onLaunch: () => process.stderr.write('Starting capsuled…\n'),
        onWaitForOther: () => process.stderr.write('capsuled is starting (another one holds its state folder); waiting for it…\n'),
      });
    }
    return client;
  }
}
