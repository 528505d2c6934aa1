// The high-level handle on one sandbox, shaped like E2B's `Sandbox`: static
// factories that create, connect, list and kill, and an instance whose concerns
// are grouped (`sandbox.commands`, `sandbox.files`, `sandbox.pty`). It holds no state the daemon does not own.
import type {
  CreateSandboxRequest,
  EgressRules,
  PortRequest,
  Sandbox as SandboxInfo,
  SandboxMetricsPoint,
  Template,
  VolumeMountRequest,
} from '@capsule/protocol';
import { CapsuleClient, type ConnectionOptions, type PortRequestInit } from './client.js';
import type { TransportResponse } from './transport.js';
import { SandboxAgent } from './agent-call.js';
import { Commands } from './commands.js';
import { NotFoundError } from './errors.js';
import { Files } from './files.js';
import { Pty } from './pty.js';

export interface SandboxCreateOptions extends ConnectionOptions {
  /** Template to boot from. Default: the daemon's default, `base`. */
  template?: string;
  name?: string;
  vcpus?: number;
  memoryMiB?: number;
  env?: Record<string, string>;
  metadata?: Record<string, string>;
  /** Kill the sandbox this long after it starts; 0 means never. Default: the daemon's, 5 minutes. */
  timeoutMs?: number;
  /** false: no network at all (as E2B's `allowInternetAccess`); `setInternetAccess(true)` switches it on. Default true. */
  allowInternetAccess?: boolean;
  /** Egress allow/deny lists of IPv4 CIDRs (the daemon must use TAP networking). */
  egress?: EgressRules;
  /** Host ports to publish, bound at create: `[{ hostPort: 8080, guestPort: 80 }]` (hostPort 0: any free one). */
  ports?: PortRequest[];
  /** Volumes to mount: `[{ name: 'data', mount: '/data' }]`; one that does not exist is created (10 GiB). The sandbox then boots cold. */
  volumes?: VolumeMountRequest[];
  signal?: AbortSignal;
}

export interface SandboxConnectOptions extends ConnectionOptions {
  signal?: AbortSignal;
}

export interface SandboxListOptions extends ConnectionOptions {
  /** Include killed sandboxes. */
  all?: boolean;
  signal?: AbortSignal;
}

function callOptions(options: { signal?: AbortSignal | undefined }) {
  return options.signal ? { signal: options.signal } : {};
}

export class Sandbox {
  readonly id: string;
  readonly commands: Commands;
  /** The sandbox's filesystem: read, write, list, watch. */
  readonly files: Files;
  /** Interactive terminals: `sandbox.pty.create({cols, rows, onData})`. */
  readonly pty: Pty;
  /** The client this sandbox talks through, for endpoints without a helper here. */
  readonly client: CapsuleClient;
  #info: SandboxInfo;

  private constructor(client: CapsuleClient, info: SandboxInfo) {
    this.client = client;
    this.id = info.id;
    this.#info = info;
    // One agent per sandbox, shared by its concerns (commands, files, and a PTY module next to them).
    const agent = new SandboxAgent(client, info.id);
    this.commands = new Commands(agent);
    this.files = new Files(agent);
    this.pty = new Pty(agent);
  }

  /** What the daemon said about this sandbox when last asked; `getInfo()` asks again. */
  get info(): SandboxInfo {
    return this.#info;
  }

  /**
   * The host name that reaches `port` inside this sandbox through the daemon,
   * `<port>-<id>.<domain>`, as E2B's `getHost` (the domain is the daemon's
   * CAPSULE_DOMAIN). Over TCP send `trafficAccessToken` as the
   * `e2b-traffic-access-token` header, or an API key as X-API-Key.
   */
  getHost(port: number): string {
    return `${port}-${this.id}.${this.#info.domain}`;
  }

  /** The token that opens this sandbox's ports over TCP (E2B's `trafficAccessToken`). */
  get trafficAccessToken(): string {
    return this.#info.trafficAccessToken;
  }

  /**
   * An HTTP request to `port` inside the sandbox through the daemon's path
   * form (`/v1/sandboxes/{id}/ports/{port}/…`), with this sandbox's traffic
   * token: the service's answer, body streamed. Throws when the daemon
   * refuses (e.g. `port_not_listening` when nothing listens there).
   */
  async fetch(port: number, path = '/', init: PortRequestInit = {}): Promise<TransportResponse> {
    return await this.client.fetchPort(this.id, port, path, { trafficAccessToken: this.trafficAccessToken, ...init });
  }

  /** Creates a sandbox and resolves when it runs and its agent answered. */
  static create(options?: SandboxCreateOptions): Promise<Sandbox>;
  static create(template: string, options?: SandboxCreateOptions): Promise<Sandbox>;
  static async create(templateOrOptions?: string | SandboxCreateOptions, maybeOptions: SandboxCreateOptions = {}): Promise<Sandbox> {
    const options = typeof templateOrOptions === 'string' ? { ...maybeOptions, template: templateOrOptions } : (templateOrOptions ?? {});
    const client = new CapsuleClient(options);
    const request: CreateSandboxRequest = {
      ...(options.template !== undefined && { template: options.template }),
      ...(options.name !== undefined && { name: options.name }),
      ...(options.vcpus !== undefined && { vcpus: options.vcpus }),
      ...(options.memoryMiB !== undefined && { memoryMiB: options.memoryMiB }),
      ...(options.env && { env: options.env }),
      ...(options.metadata && { metadata: options.metadata }),
      ...(options.timeoutMs !== undefined && { timeoutMs: options.timeoutMs }),
      ...(options.allowInternetAccess !== undefined && { internet: options.allowInternetAccess }),
      ...(options.egress && { egress: options.egress }),
      ...(options.ports && { ports: options.ports }),
      ...(options.volumes && { volumes: options.volumes }),
    };
    return new Sandbox(client, await client.createSandbox(request, callOptions(options)));
  }

  /** Attaches to an existing sandbox by id or name; throws NotFoundError if there is none. */
  static async connect(idOrName: string, options: SandboxConnectOptions = {}): Promise<Sandbox> {
    const client = new CapsuleClient(options);
    return new Sandbox(client, await client.getSandbox(idOrName, callOptions(options)));
  }

  /** Sandboxes that are not killed (with `all`, killed ones too). */
  static async list(options: SandboxListOptions = {}): Promise<SandboxInfo[]> {
    const client = new CapsuleClient(options);
    try {
      return await client.listSandboxes({ all: options.all ?? false }, callOptions(options));
    } finally {
      client.close();
    }
  }

  /** Kills a sandbox by id or name. Resolves false when there was no such sandbox. */
  static async kill(idOrName: string, options: SandboxConnectOptions = {}): Promise<boolean> {
    const client = new CapsuleClient(options);
    try {
      await client.deleteSandbox(idOrName, callOptions(options));
      return true;
    } catch (error) {
      if (error instanceof NotFoundError) return false;
      throw error;
    } finally {
      client.close();
    }
  }

  /** Kills this sandbox; killing one that is already gone is not an error. */
  async kill(options: { signal?: AbortSignal } = {}): Promise<void> {
    try {
      await this.client.deleteSandbox(this.id, callOptions(options));
    } catch (error) {
      if (!(error instanceof NotFoundError)) throw error;
    }
  }

  /** Asks the daemon for this sandbox's current state (with its history) and remembers it. */
  async getInfo(options: { signal?: AbortSignal } = {}): Promise<SandboxInfo> {
    this.#info = await this.client.getSandbox(this.id, callOptions(options));
    return this.#info;
  }

  /** This sandbox's metrics history, oldest first (e2b's `getMetrics`): host CPU, memory and disk, and on some points the guest's own view. */
  async getMetrics(options: { start?: Date; end?: Date; signal?: AbortSignal } = {}): Promise<SandboxMetricsPoint[]> {
    const { start, end } = options;
    return (await this.client.getSandboxMetrics(this.id, { ...(start ? { start } : {}), ...(end ? { end } : {}) }, callOptions(options)))
      .points;
  }

  /** Saves the sandbox's memory and devices and ends its VM; `resume()` continues where it stopped. */
  async pause(options: { signal?: AbortSignal } = {}): Promise<void> {
    this.#info = await this.client.pauseSandbox(this.id, callOptions(options));
  }

  /** Starts `count` sandboxes that each continue from this moment of this one (memory, processes, disk). */
  async fork(count = 1, options: { signal?: AbortSignal } = {}): Promise<Sandbox[]> {
    const forks = await this.client.forkSandbox(this.id, count, callOptions(options));
    return forks.map((info) => new Sandbox(this.client, info));
  }

  /** Makes this moment of the sandbox (memory, processes, disk) the template `name`; it runs on. Create from it with `Sandbox.create({ template: name })`. */
  async snapshot(name: string, options: { signal?: AbortSignal } = {}): Promise<Template> {
    return await this.client.snapshotSandbox(this.id, name, callOptions(options));
  }

  /** Starts the paused sandbox again, its processes and files as they were, its clock corrected. */
  async resume(options: { signal?: AbortSignal } = {}): Promise<void> {
    this.#info = await this.client.resumeSandbox(this.id, callOptions(options));
  }

  /** Ends the sandbox's VM after its guest flushed and powered off; its disk stays, and `start()` boots it again. */
  async stop(options: { signal?: AbortSignal } = {}): Promise<void> {
    this.#info = await this.client.stopSandbox(this.id, callOptions(options));
  }

  /** Boots the stopped sandbox again from its own disk (processes start afresh; files are as they were). */
  async start(options: { signal?: AbortSignal } = {}): Promise<void> {
    this.#info = await this.client.startSandbox(this.id, callOptions(options));
  }

  async restart(options: { signal?: AbortSignal } = {}): Promise<void> {
    this.#info = await this.client.restartSandbox(this.id, callOptions(options));
  }

  /** Switches the sandbox's network on or off, at once (or on resume, if paused). */
  async setInternetAccess(allow: boolean, options: { signal?: AbortSignal } = {}): Promise<void> {
    this.#info = await this.client.setSandboxNetwork(this.id, { internet: allow }, callOptions(options));
  }

  /** Replaces the sandbox's egress allow/deny lists (TAP networking); `{}` empties both. */
  async setEgressRules(egress: EgressRules, options: { signal?: AbortSignal } = {}): Promise<void> {
    this.#info = await this.client.setSandboxNetwork(this.id, { egress }, callOptions(options));
  }

  /** Gives the sandbox a new lifetime counted from now, as E2B's `setTimeout`; 0 removes its timeout. */
  async setTimeout(timeoutMs: number, options: { signal?: AbortSignal } = {}): Promise<void> {
    this.#info = await this.client.setSandboxTimeout(this.id, timeoutMs, callOptions(options));
  }
}
