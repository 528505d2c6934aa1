// CapsuleClient: one method per endpoint of capsuled's REST API, typed with the
// protocol's schemas. Every call takes an AbortSignal and a request timeout that
// bounds waiting for the daemon, never the operation itself; bodies read are bounded.
import {
  PORT_ERROR_HEADER,
  TRAFFIC_TOKEN_HEADER,
  defaultSocketPath as protocolDefaultSocketPath,
  type ApiKey,
  type ApiKeyList,
  type CapsuleEvent,
  type CreatedApiKey,
  type SignInToken,
  type CreatedWebhook,
  type CreateWebhookRequest,
  EVENT_STREAM_OVERFLOW,
  type CreateSandboxRequest,
  type BuildEvent,
  type BuildTemplateRequest,
  type CreateTemplateRequest,
  type DaemonInfo,
  type DaemonSettingsReport,
  type DiskUsage,
  type Image,
  type ImageEvent,
  type ImageList,
  type PruneResult,
  type ExecEvent,
  type ExecRequest,
  type ExecResult,
  type Sandbox as SandboxInfo,
  type SandboxList,
  type SandboxMetrics,
  type SetNetworkRequest,
  type SetResourcesRequest,
  type SshServer,
  type Template,
  type TemplateDetails,
  type TemplateList,
  type Volume,
  type VolumeList,
  type VolumeSnapshot,
  type VolumeSnapshotList,
  type Webhook,
  type WebhookDelivery,
  type WebhookDeliveryList,
  type WebhookList,
  type ApplyWorkloadsRequest,
  type ApplyWorkloadsResult,
  type Workload,
  type WorkloadList,
  WORKLOAD_LOG_OFFSET_HEADER,
} from '@capsule/protocol';
import { debugLog } from './debug-log.js';
import { type Deadline, startDeadline } from './deadline.js';
import { CapsuleError, ConnectionError, InvalidArgumentError, errorFromWire } from './errors.js';
import { parseEventData, parseServerSentEvents } from './event-stream.js';
import { toExecEvent } from './exec-event.js';
import { DEFAULT_MAX_NDJSON_LINE_BYTES, parseNdjson } from './ndjson.js';
import { AgentConnection } from './agent-connection.js';
import { daemonAddressOf } from './daemon-address.js';
import type { DaemonAddress, TlsTrust } from './daemon-tls.js';
import { HttpTransport, type Transport, type TransportRequest, type TransportResponse } from './transport.js';
import { checkGuestPort, openPortTunnel, type PortTunnelOptions } from './port-tunnel.js';
import type { Duplex } from 'node:stream';

export const DEFAULT_REQUEST_TIMEOUT_MS = 60_000;
/**
 * createSandbox answers only once the guest's agent does, which the daemon
 * bounds itself (2 minutes by default, more under TCG on a busy host), so its
 * default wait is longer than other requests'.
 */
export const DEFAULT_CREATE_TIMEOUT_MS = 300_000;

/**
 * Where capsuled is. Without socketPath or host: $CAPSULE_HOST when set
 * (`https://host:port`, or `http://host:port` for a daemon serving plain HTTP on
 * purpose), else the unix socket (see defaultSocketPath()). Over TCP, apiKey
 * defaults to $CAPSULE_API_KEY and tls to $CAPSULE_TLS_FINGERPRINT or the PEM
 * file named by $CAPSULE_TLS_CA.
 */
export interface ConnectionOptions {
  /** Unix socket of capsuled. Default: see defaultSocketPath(). */
  socketPath?: string;
  /** TCP instead of the unix socket: capsuled started with CAPSULE_LISTEN. */
  host?: string;
  /** Default 443 (80 with `tls: false`). */
  port?: number;
  /**
   * TLS on TCP, which capsuled serves unless started with CAPSULE_LISTEN=http://….
   * true (default): verified by the system's CAs; `{ fingerprintSha256 }`: pinned to
   * the certificate `capsule daemon status` shows; `{ ca }`: trusting that PEM; false: plain HTTP.
   */
  tls?: boolean | TlsTrust;
  /** The API key for TCP (`capsule apikey create`); the unix socket needs none. */
  apiKey?: string;
  /** Any other way to reach the daemon; overrides socketPath/host/port. */
  transport?: Transport;
  /** How long to wait for the daemon to answer a request; 0 means forever. Default 60 s (createSandbox: 5 min). */
  requestTimeoutMs?: number;
  /** Longest NDJSON line accepted from a streaming response. Default 8 MiB. */
  maxStreamLineBytes?: number;
  /** Largest non-streaming response body accepted. Default 128 MiB. */
  maxResponseBytes?: number;
}

export interface CallOptions {
  signal?: AbortSignal;
  /** Overrides the client's requestTimeoutMs for this call. */
  requestTimeoutMs?: number;
}

export interface ImageCallOptions extends CallOptions {
  /** Called for each `resolved`, `progress` and `unpacked` event of a pull or import (for a progress bar). */
  onEvent?: (event: Exclude<ImageEvent, { type: 'done' | 'error' }>) => void;
}

/** A request to a port inside a sandbox (see `fetchPort`). */
export interface PortRequestInit extends CallOptions {
  method?: TransportRequest['method'];
  headers?: Record<string, string>;
  body?: TransportRequest['body'];
  /** The sandbox's token: what opens its ports over TCP without an API key. */
  trafficAccessToken?: string;
}

/** What `execStream` yields: every ExecEvent except `error`, which it throws as a CapsuleError. */
export type ExecStreamEvent = Exclude<ExecEvent, { type: 'error' }>;

/** What `events()` streams: each filter a list (any of them matches), empty for all. */
export interface EventStreamOptions extends CallOptions {
  sandboxes?: string[];
  templates?: string[];
  /** Event types (`sandbox.killed`) or families (`sandbox`, `template`, `image`). */
  types?: string[];
  /** An event id (the events after it) or an RFC 3339 time; without it, new events only. */
  since?: string;
}

const MAX_ERROR_BODY_BYTES = 1024 * 1024;
const DEFAULT_MAX_RESPONSE_BYTES = 128 * 1024 * 1024;
const SDK_USER_AGENT = 'capsule-sdk/0.1.0';
const trace = debugLog('capsule:http');

/** Where capsuled listens, by the rule in @capsule/protocol; reads this process's environment by default. */
export function defaultSocketPath(env: NodeJS.ProcessEnv = process.env): string {
  return protocolDefaultSocketPath(env);
}

/** Fallback codes for error responses that lack a JSON error body (e.g. a proxy or an old daemon). */
const fallbackCodeByStatus: Record<number, string> = { 400: 'invalid_argument', 401: 'unauthenticated', 404: 'not_found', 504: 'timeout' };

/** Request bodies as traced: env values and stdin are secrets as often as not. */
function redactedForTrace(body: unknown): string {
  return JSON.stringify(body, (key, value: unknown) => {
    if (key === 'env' && typeof value === 'object' && value !== null)
      return Object.fromEntries(Object.keys(value).map((name) => [name, '<redacted>']));
    if (key === 'stdin' && typeof value === 'string') return `<${value.length} chars>`;
    return value;
  });
}

/** Reads a whole response body, refusing more than `limit` bytes. */
export async function readBody(response: TransportResponse, limit: number): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let total = 0;
  for await (const chunk of response.body) {
    total += chunk.byteLength;
    if (total > limit) {
      response.cancel();
      throw new CapsuleError('protocol_error', `capsuled sent a response larger than ${limit} bytes`);
    }
    chunks.push(Buffer.from(chunk));
  }
  return Buffer.concat(chunks);
}

function sandboxPath(idOrName: string, suffix = ''): string {
  if (typeof idOrName !== 'string' || idOrName === '') {
    throw new InvalidArgumentError('invalid_argument', 'A sandbox id or name is required');
  }
  return `/v1/sandboxes/${encodeURIComponent(idOrName)}${suffix}`;
}

/** A request body sent as it is, with its own content type, not as JSON. */
class RawBody {
  constructor(
    readonly contentType: string,
    readonly bytes: Uint8Array | AsyncIterable<Uint8Array>,
  ) {}
}

/** How long an upload (a build folder, a volume image) may take before the daemon's answer begins; an export, before its image begins. */
const UPLOAD_TIMEOUT_MS = 15 * 60_000;

export class CapsuleClient {
  readonly transport: Transport;
  readonly requestTimeoutMs: number;
  readonly #createTimeoutMs: number;
  readonly #maxStreamLineBytes: number;
  /** Largest non-streaming response body accepted (also for a file read as text or bytes). */
  readonly maxResponseBytes: number;
  /** Where the daemon is, for connections to agents; unknown with a custom transport. */
  readonly #address: DaemonAddress | undefined;
  readonly #agents = new Map<string, AgentConnection>();

  constructor(options: ConnectionOptions = {}) {
    this.#address = options.transport !== undefined ? undefined : daemonAddressOf(options);
    this.transport = options.transport ?? new HttpTransport(this.#address ?? { socketPath: defaultSocketPath() });
    this.requestTimeoutMs = options.requestTimeoutMs ?? DEFAULT_REQUEST_TIMEOUT_MS;
    this.#createTimeoutMs = options.requestTimeoutMs ?? DEFAULT_CREATE_TIMEOUT_MS;
    this.#maxStreamLineBytes = options.maxStreamLineBytes ?? DEFAULT_MAX_NDJSON_LINE_BYTES;
    this.maxResponseBytes = options.maxResponseBytes ?? DEFAULT_MAX_RESPONSE_BYTES;
  }

  /** The connection to a sandbox's agent through the daemon (process and filesystem services, /files). */
  agent(sandboxId: string): AgentConnection {
    if (!this.#address) {
      throw new InvalidArgumentError('invalid_argument', "a custom transport cannot reach sandboxes' agents", {
        hint: 'connect with socketPath or host and port',
      });
    }
    let connection = this.#agents.get(sandboxId);
    if (!connection) {
      connection = new AgentConnection(this.#address, sandboxId);
      this.#agents.set(sandboxId, connection);
    }
    return connection;
  }

  async health(options?: CallOptions): Promise<{ status: string }> {
    return this.#json('GET', '/health', undefined, options);
  }

  async info(options?: CallOptions): Promise<DaemonInfo> {
    return this.#json('GET', '/v1/info', undefined, options);
  }

  /** Disk space the daemon's data takes: sandboxes, templates, images, volumes, build cache. */
  async diskUsage(options?: CallOptions): Promise<DiskUsage> {
    return this.#json('GET', '/v1/system/df', undefined, options);
  }

  /** Each setting as the running daemon took it (value, source, what it resolved to): `capsule daemon config`. */
  async daemonSettings(options?: CallOptions): Promise<DaemonSettingsReport> {
    return this.#json('GET', '/v1/system/config', undefined, options);
  }

  async listTemplates(options?: CallOptions): Promise<Template[]> {
    return (await this.#json<TemplateList>('GET', '/v1/templates', undefined, options)).templates;
  }

  /** Resolves once the sandbox runs and its agent answered. */
  async createSandbox(request: CreateSandboxRequest, options: CallOptions = {}): Promise<SandboxInfo> {
    return this.#json('POST', '/v1/sandboxes', request, {
      ...options,
      requestTimeoutMs: options.requestTimeoutMs ?? this.#createTimeoutMs,
    });
  }

  /** Sandboxes that are not killed; with `all`, killed ones too. */
  async listSandboxes(filter: { all?: boolean } = {}, options?: CallOptions): Promise<SandboxInfo[]> {
    const route = filter.all ? '/v1/sandboxes?all=true' : '/v1/sandboxes';
    return (await this.#json<SandboxList>('GET', route, undefined, options)).sandboxes;
  }

  async getSandbox(idOrName: string, options?: CallOptions): Promise<SandboxInfo> {
    return this.#json('GET', sandboxPath(idOrName), undefined, options);
  }

  /**
   * A sandbox's metrics history, oldest first: a point every few seconds while
   * it runs, kept for 30 minutes. `start` and `end` bound it (default: all of it).
   */
  async getSandboxMetrics(idOrName: string, range: { start?: Date; end?: Date } = {}, options?: CallOptions): Promise<SandboxMetrics> {
    const query = new URLSearchParams();
    if (range.start) query.set('start', range.start.toISOString());
    if (range.end) query.set('end', range.end.toISOString());
    const search = query.size > 0 ? `?${query}` : '';
    return this.#json('GET', sandboxPath(idOrName, `/metrics${search}`), undefined, options);
  }

  async deleteSandbox(idOrName: string, options?: CallOptions): Promise<void> {
    await this.#json('DELETE', sandboxPath(idOrName), undefined, options);
  }

  /** Gives a running sandbox a new lifetime counted from now; 0 removes its timeout. */
  async setSandboxTimeout(idOrName: string, timeoutMs: number, options?: CallOptions): Promise<SandboxInfo> {
    return this.#json('POST', `${sandboxPath(idOrName)}/timeout`, { timeoutMs }, options);
  }

  /** Switches a running or paused sandbox's network on or off, or replaces its egress lists (TAP networking). */
  async setSandboxNetwork(idOrName: string, request: SetNetworkRequest, options?: CallOptions): Promise<SandboxInfo> {
    return this.#json('POST', `${sandboxPath(idOrName)}/network`, request, options);
  }

  /** Saves a running sandbox's memory and devices and ends its VM; it uses no RAM until resumed. */
  async pauseSandbox(idOrName: string, options?: CallOptions): Promise<SandboxInfo> {
    return this.#json('POST', `${sandboxPath(idOrName)}/pause`, undefined, {
      ...options,
      requestTimeoutMs: options?.requestTimeoutMs ?? this.#createTimeoutMs,
    });
  }

  /** Starts `count` sandboxes that each continue from this moment of a running sandbox. */
  async forkSandbox(idOrName: string, count = 1, options?: CallOptions): Promise<SandboxInfo[]> {
    const body = await this.#json<SandboxList>(
      'POST',
      `${sandboxPath(idOrName)}/fork`,
      { count },
      { ...options, requestTimeoutMs: options?.requestTimeoutMs ?? this.#createTimeoutMs },
    );
    return body.sandboxes;
  }

  /**
   * Makes a running sandbox's current state (memory, processes, disk) the new
   * template `template`; sandboxes created from it continue from this moment,
   * each with its own identity. The sandbox runs on.
   */
  async snapshotSandbox(idOrName: string, template: string, options?: CallOptions): Promise<Template> {
    return this.#json(
      'POST',
      `${sandboxPath(idOrName)}/snapshot`,
      { template },
      { ...options, requestTimeoutMs: options?.requestTimeoutMs ?? this.#createTimeoutMs },
    );
  }

  /** Starts a paused sandbox again where it stopped. */
  /** Stops a running or paused sandbox: its VM ends (the guest flushes and powers off first), its disk stays. */
  async stopSandbox(idOrName: string, options?: CallOptions): Promise<SandboxInfo> {
    return this.#lifecycle(idOrName, 'stop', options);
  }

  /** Boots a stopped sandbox again from its own disk. */
  async startSandbox(idOrName: string, options?: CallOptions): Promise<SandboxInfo> {
    return this.#lifecycle(idOrName, 'start', options);
  }

  async restartSandbox(idOrName: string, options?: CallOptions): Promise<SandboxInfo> {
    return this.#lifecycle(idOrName, 'restart', options);
  }

  /** A stopped sandbox's vCPUs, memory or disk size (grow only) from its next start. */
  async setSandboxResources(idOrName: string, request: SetResourcesRequest, options?: CallOptions): Promise<SandboxInfo> {
    return this.#json('PATCH', `${sandboxPath(idOrName)}/resources`, request, options);
  }

  #lifecycle(idOrName: string, action: 'stop' | 'start' | 'restart', options?: CallOptions): Promise<SandboxInfo> {
    return this.#json('POST', `${sandboxPath(idOrName)}/${action}`, undefined, {
      ...options,
      requestTimeoutMs: options?.requestTimeoutMs ?? this.#createTimeoutMs,
    });
  }

  async resumeSandbox(idOrName: string, options?: CallOptions): Promise<SandboxInfo> {
    return this.#json('POST', `${sandboxPath(idOrName)}/resume`, undefined, {
      ...options,
      requestTimeoutMs: options?.requestTimeoutMs ?? this.#createTimeoutMs,
    });
  }

  /** API keys for TCP clients (unix socket only). */
  async listApiKeys(options?: CallOptions): Promise<ApiKey[]> {
    return (await this.#json<ApiKeyList>('GET', '/v1/api-keys', undefined, options)).keys;
  }

  /** Creates an API key (or registers `key`, an existing `e2b_…` key); the answer is the only place the key is shown. */
  async createApiKey(name: string, key?: string, options?: CallOptions): Promise<CreatedApiKey> {
    return this.#json('POST', '/v1/api-keys', { name, ...(key !== undefined && { key }) }, options);
  }

  async deleteApiKey(id: string, options?: CallOptions): Promise<void> {
    await this.#json('DELETE', `/v1/api-keys/${encodeURIComponent(id)}`, undefined, options);
  }

  /** A one-time link path that signs a browser into the dashboard within a minute (the unix socket only). */
  async createDashboardSignInToken(options?: CallOptions): Promise<SignInToken> {
    return this.#json('POST', '/v1/dashboard/sign-in-tokens', undefined, options);
  }

  /** Restarts a running sandbox's timeout from now, keeping its length. */
  async keepSandboxAlive(idOrName: string, options?: CallOptions): Promise<SandboxInfo> {
    return this.#json('POST', `${sandboxPath(idOrName)}/keepalive`, undefined, options);
  }

  /**
   * Starts a running sandbox's SSH server unless it runs, and returns the host
   * keys it presents (made in the guest for this sandbox alone). Connect to it
   * with `openPortTunnel(id, 22)`.
   */
  async startSshServer(idOrName: string, options?: CallOptions): Promise<SshServer> {
    return this.#json('POST', `${sandboxPath(idOrName)}/ssh`, undefined, options);
  }

  /**
   * Runs a command to completion and returns its output (each stream cut at
   * limits.execOutputLimitBytes). The daemon answers only when the command ends, so
   * the request timeout is added to `request.timeoutMs`, and without one it does not apply.
   */
  async exec(idOrName: string, request: ExecRequest, options: CallOptions = {}): Promise<ExecResult> {
    const commandTimeoutMs = request.timeoutMs ?? 0;
    const requestTimeoutMs = commandTimeoutMs > 0 ? commandTimeoutMs + (options.requestTimeoutMs ?? this.requestTimeoutMs) : 0;
    return this.#json('POST', sandboxPath(idOrName, '/exec'), request, { ...options, requestTimeoutMs });
  }

  /**
   * Runs a command and yields its events as they arrive; output data is base64.
   * The last event is `exit`; an `error` event is thrown as a CapsuleError. The
   * request timeout covers only the wait for the stream to begin. Stopping the
   * iteration early (break, abort) closes the connection.
   */
  async *execStream(idOrName: string, request: ExecRequest, options: CallOptions = {}): AsyncGenerator<ExecStreamEvent, void, undefined> {
    const route = sandboxPath(idOrName, '/exec/stream');
    const { response, deadline } = await this.#send('POST', route, request, options, 'application/x-ndjson');
    try {
      deadline.stopTimer();
      if (response.status >= 300) throw await this.#errorFrom(response, 'POST', route);
      for await (const value of parseNdjson(response.body, { maxLineBytes: this.#maxStreamLineBytes })) {
        const event = toExecEvent(value);
        if (event === undefined) continue;
        if (event.type === 'error') throw errorFromWire(event);
        yield event;
        if (event.type === 'exit') return;
      }
      throw new ConnectionError('connection_lost', 'The exec stream ended before the command exited', {
        hint: 'Check that capsuled is still running with `capsule daemon status`',
      });
    } finally {
      response.cancel();
      deadline.dispose();
    }
  }

  /**
   * Sandbox transitions, template and image events as they happen, after the
   * history asked for with `since`; runs until the signal aborts or the
   * iteration stops. When the daemon cuts a client that reads too slowly it
   * resumes from the last event; a lost connection throws ConnectionError
   * (call again with `since` set to the last event's id).
   */
  async *events(options: EventStreamOptions = {}): AsyncGenerator<CapsuleEvent, void, undefined> {
    let since = options.since;
    for (;;) {
      const query = new URLSearchParams();
      for (const [key, list] of [
        ['sandbox', options.sandboxes],
        ['template', options.templates],
        ['type', options.types],
      ] as const) {
        if (list && list.length > 0) query.set(key, list.join(','));
      }
      if (since !== undefined) query.set('since', since);
      const route = `/v1/events${query.size > 0 ? `?${query}` : ''}`;
      const { response, deadline } = await this.#send('GET', route, undefined, options, 'text/event-stream');
      let resume = false;
      try {
        deadline.stopTimer();
        if (response.status >= 300) throw await this.#errorFrom(response, 'GET', route);
        for await (const message of parseServerSentEvents(response.body)) {
          if (message.event === EVENT_STREAM_OVERFLOW) {
            since = message.id ?? since;
            resume = true;
            break;
          }
          if (message.event === 'error') throw errorFromWire(parseEventData(message.data) as { code: string; message: string });
          const event = parseEventData(message.data) as CapsuleEvent;
          since = event.id;
          yield event;
        }
      } finally {
        response.cancel();
        deadline.dispose();
      }
      if (!resume) {
        throw new ConnectionError('connection_lost', 'The event stream ended', {
          hint: 'capsuled may have stopped; call events() again with `since` set to the last event id',
        });
      }
    }
  }

  async listWebhooks(options?: CallOptions): Promise<Webhook[]> {
    return (await this.#json<WebhookList>('GET', '/v1/webhooks', undefined, options)).webhooks;
  }

  /** Registers a webhook; the answer is the only place its signing secret is shown. */
  async createWebhook(request: CreateWebhookRequest, options?: CallOptions): Promise<CreatedWebhook> {
    return this.#json('POST', '/v1/webhooks', request, options);
  }

  async deleteWebhook(id: string, options?: CallOptions): Promise<void> {
    await this.#json('DELETE', `/v1/webhooks/${encodeURIComponent(id)}`, undefined, options);
  }

  /** A webhook's newest deliveries, newest first. */
  async webhookDeliveries(id: string, options?: CallOptions): Promise<WebhookDelivery[]> {
    return (await this.#json<WebhookDeliveryList>('GET', `/v1/webhooks/${encodeURIComponent(id)}/deliveries`, undefined, options))
      .deliveries;
  }

  /** Images in the daemon's store, newest first. */
  async listImages(options?: CallOptions): Promise<Image[]> {
    return (await this.#json<ImageList>('GET', '/v1/images', undefined, options)).images;
  }

  /** One image by reference (`localhost:5000/app:1`) or digest. */
  async getImage(refOrDigest: string, options?: CallOptions): Promise<Image> {
    return this.#json('GET', `/v1/images/${encodeURIComponent(refOrDigest)}`, undefined, options);
  }

  /** Pulls an image from its registry; resolves with the stored image once every layer is cached and verified. */
  async pullImage(ref: string, credentials: { username?: string; password?: string } = {}, options: ImageCallOptions = {}): Promise<Image> {
    return this.#imageStream('/v1/images/pull', { ref, ...credentials }, options);
  }

  /** Imports a `docker save` tarball, an OCI archive or an OCI layout folder that is on the daemon's host. */
  async importImage(path: string, tag?: string, options: ImageCallOptions = {}): Promise<Image> {
    return this.#imageStream('/v1/images/import', { path, ...(tag !== undefined ? { tag } : {}) }, options);
  }

  /** Removes a reference (or by digest the image); blobs no image uses any more are deleted. */
  async deleteImage(refOrDigest: string, options?: CallOptions): Promise<void> {
    await this.#json('DELETE', `/v1/images/${encodeURIComponent(refOrDigest)}`, undefined, options);
  }

  /**
   * Garbage collection of the image store: images no reference names and no
   * template uses, blobs and root filesystems nothing stored uses, and every
   * cached build step.
   */
  async pruneImages(options?: CallOptions): Promise<PruneResult> {
    return this.#json('POST', '/v1/images/prune', undefined, options);
  }

  /** Creates an empty volume; `size` as `10G`, `512M` (default 10G). */
  async createVolume(name: string, size?: string, options?: CallOptions): Promise<Volume> {
    return this.#json('POST', '/v1/volumes', { name, ...(size !== undefined && { size }) }, options);
  }

  async listVolumes(options?: CallOptions): Promise<Volume[]> {
    return (await this.#json<VolumeList>('GET', '/v1/volumes', undefined, options)).volumes;
  }

  /** One volume, with the sandboxes that hold it. */
  async getVolume(name: string, options?: CallOptions): Promise<Volume> {
    return this.#json('GET', `/v1/volumes/${encodeURIComponent(name)}`, undefined, options);
  }

  /** Deletes a volume and its data; refused (`volume_in_use`) while a running, paused or stopped sandbox holds it. */
  async deleteVolume(name: string, options?: CallOptions): Promise<void> {
    await this.#json('DELETE', `/v1/volumes/${encodeURIComponent(name)}`, undefined, options);
  }

  /** Grows a volume and its filesystem to `size`; only while no sandbox holds it. */
  async resizeVolume(name: string, size: string, options?: CallOptions): Promise<Volume> {
    return this.#json('POST', `/v1/volumes/${encodeURIComponent(name)}/resize`, { size }, options);
  }

  /** Copies a volume as it is now (name default: the time); refused while a sandbox holds it read-write. */
  async snapshotVolume(name: string, snapshot?: string, options?: CallOptions): Promise<VolumeSnapshot> {
    return this.#json(
      'POST',
      `/v1/volumes/${encodeURIComponent(name)}/snapshots`,
      snapshot !== undefined ? { name: snapshot } : {},
      options,
    );
  }

  async listVolumeSnapshots(name: string, options?: CallOptions): Promise<VolumeSnapshot[]> {
    return (await this.#json<VolumeSnapshotList>('GET', `/v1/volumes/${encodeURIComponent(name)}/snapshots`, undefined, options)).snapshots;
  }

  async deleteVolumeSnapshot(name: string, snapshot: string, options?: CallOptions): Promise<void> {
    await this.#json('DELETE', `/v1/volumes/${encodeURIComponent(name)}/snapshots/${encodeURIComponent(snapshot)}`, undefined, options);
  }

  /**
   * The volume as a compressed qcow2 image, streamed (refused while a sandbox
   * holds it read-write); `sizeBytes` is known before the first byte. The
   * request timeout covers the daemon making the image; reading `image` to
   * its end (or breaking off) releases the connection.
   */
  async exportVolume(
    name: string,
    options: CallOptions = {},
  ): Promise<{ sizeBytes: number | undefined; image: AsyncIterable<Uint8Array> }> {
    const route = `/v1/volumes/${encodeURIComponent(name)}/export`;
    const { response, deadline } = await this.#send(
      'GET',
      route,
      undefined,
      { ...options, requestTimeoutMs: options.requestTimeoutMs ?? UPLOAD_TIMEOUT_MS },
      'application/octet-stream',
    );
    if (response.status >= 300) {
      try {
        throw await this.#errorFrom(response, 'GET', route);
      } finally {
        deadline.dispose();
      }
    }
    deadline.stopTimer();
    const length = Number(response.headers['content-length']);
    async function* image(): AsyncGenerator<Uint8Array> {
      try {
        yield* response.body;
      } finally {
        response.cancel();
        deadline.dispose();
      }
    }
    return { sizeBytes: Number.isSafeInteger(length) ? length : undefined, image: image() };
  }

  /** Makes the volume `name` from an image `exportVolume` gave (bytes or a stream); the daemon checks it before it makes anything. */
  async importVolume(name: string, image: Uint8Array | AsyncIterable<Uint8Array>, options: CallOptions = {}): Promise<Volume> {
    return this.#json('POST', `/v1/volumes/${encodeURIComponent(name)}/import`, new RawBody('application/octet-stream', image), {
      ...options,
      // The answer begins only once the daemon has the whole image and has checked it.
      requestTimeoutMs: options.requestTimeoutMs ?? UPLOAD_TIMEOUT_MS,
    });
  }

  /** Makes the new volume `target` from a snapshot of volume `name`. */
  async restoreVolumeSnapshot(name: string, snapshot: string, target: string, options?: CallOptions): Promise<Volume> {
    return this.#json(
      'POST',
      `/v1/volumes/${encodeURIComponent(name)}/snapshots/${encodeURIComponent(snapshot)}/restore`,
      { volume: target },
      options,
    );
  }

  /**
   * Applies a workload file's parsed documents: every document is checked
   * first (any problem refuses all, naming the document and field); `dryRun`
   * only answers what would change; `prune` removes workloads of `source`
   * that the documents no longer hold.
   */
  async applyWorkloads(request: ApplyWorkloadsRequest, options?: CallOptions): Promise<ApplyWorkloadsResult> {
    return this.#json('POST', '/v1/workloads/apply', request, options);
  }

  async listWorkloads(options?: CallOptions): Promise<Workload[]> {
    return (await this.#json<WorkloadList>('GET', '/v1/workloads', undefined, options)).workloads;
  }

  /** One workload with its conditions, restarts, last exit and sandbox. */
  async getWorkload(name: string, options?: CallOptions): Promise<Workload> {
    return this.#json('GET', workloadPath(name), undefined, options);
  }

  /** Removes a workload and its sandbox; its volumes stay. */
  async deleteWorkload(name: string, options?: CallOptions): Promise<void> {
    await this.#json('DELETE', workloadPath(name), undefined, options);
  }

  /** Stops its VM and keeps it stopped (disk and volumes kept). */
  async stopWorkload(name: string, options?: CallOptions): Promise<Workload> {
    return this.#json('POST', workloadPath(name, '/stop'), undefined, options);
  }

  /** Starts a stopped or crash-looped workload again. */
  async startWorkload(name: string, options?: CallOptions): Promise<Workload> {
    return this.#json('POST', workloadPath(name, '/start'), undefined, options);
  }

  async restartWorkload(name: string, options?: CallOptions): Promise<Workload> {
    return this.#json('POST', workloadPath(name, '/restart'), undefined, options);
  }

  /**
   * A workload's service output as kept on the host: what was written since
   * `since` (to the second), its last `tail` lines, or what follows byte
   * `offset` (pass the previous answer's `next` to follow it).
   */
  async workloadLogs(
    name: string,
    query: { tail?: number; offset?: number; since?: Date | string } = {},
    options?: CallOptions,
  ): Promise<{ text: string; next: number }> {
    const search = new URLSearchParams();
    if (query.since !== undefined) search.set('since', query.since instanceof Date ? query.since.toISOString() : query.since);
    if (query.tail !== undefined) search.set('tail', String(query.tail));
    if (query.offset !== undefined) search.set('offset', String(query.offset));
    const route = `${workloadPath(name, '/logs')}${search.size > 0 ? `?${search}` : ''}`;
    const { response, deadline } = await this.#send('GET', route, undefined, options, 'text/plain');
    try {
      if (response.status >= 300) throw await this.#errorFrom(response, 'GET', route);
      const text = (await readBody(response, this.maxResponseBytes)).toString('utf8');
      return { text, next: Number(response.headers[WORKLOAD_LOG_OFFSET_HEADER] ?? 0) };
    } finally {
      deadline.dispose();
    }
  }

  /** One template: its source, image digest, start and ready commands, warm snapshot state (and why it failed) and sizes. */
  async getTemplate(name: string, options?: CallOptions): Promise<TemplateDetails> {
    return this.#json('GET', `/v1/templates/${encodeURIComponent(name)}`, undefined, options);
  }

  /**
   * Builds a template from an image in the store; its warm snapshot follows
   * in the background. `start` (argv, or `'image'` for the image's
   * Entrypoint + Cmd) runs before the snapshot, once `ready` passes.
   */
  async createTemplate(request: CreateTemplateRequest, options: CallOptions = {}): Promise<Template> {
    return this.#json('POST', '/v1/templates', request, {
      ...options,
      requestTimeoutMs: options.requestTimeoutMs ?? this.#createTimeoutMs,
    });
  }

  /**
   * Builds a template from a Capsulefile's text; `contextDir` (on the
   * daemon's host, through the unix socket only) is where COPY reads from;
   * over TCP, see buildTemplateFromContext. Resolves with the template once
   * its root filesystem is built; a failing step throws `build_step_failed`.
   */
  async buildTemplate(
    request: BuildTemplateRequest,
    options: CallOptions & { onEvent?: (event: Exclude<BuildEvent, { type: 'done' | 'error' }>) => void } = {},
  ): Promise<Template> {
    return this.#eventStream<BuildEvent, Template>(
      '/v1/templates/build',
      request,
      options,
      (event) => (event.type === 'done' ? event.template : undefined),
      options.onEvent,
    );
  }

  /**
   * Builds a template from a build folder sent as a tar stream (plain files
   * and folders, the Capsulefile inside at `capsulefile`, default
   * `Capsulefile`): the way to build over TCP, where the daemon reads no
   * folder of its host. E.g. the stdout of `tar -C DIR -c .`.
   */
  async buildTemplateFromContext(
    name: string,
    context: Uint8Array | AsyncIterable<Uint8Array>,
    options: CallOptions & { capsulefile?: string; onEvent?: (event: Exclude<BuildEvent, { type: 'done' | 'error' }>) => void } = {},
  ): Promise<Template> {
    const query = new URLSearchParams({ name, ...(options.capsulefile !== undefined ? { capsulefile: options.capsulefile } : {}) });
    return this.#eventStream<BuildEvent, Template>(
      `/v1/templates/build?${query.toString()}`,
      new RawBody('application/x-tar', context),
      // The answer begins only once the daemon has the whole folder.
      { ...options, requestTimeoutMs: options.requestTimeoutMs ?? UPLOAD_TIMEOUT_MS },
      (event) => (event.type === 'done' ? event.template : undefined),
      options.onEvent,
    );
  }

  /** Removes a template built from an image. */
  async deleteTemplate(name: string, options?: CallOptions): Promise<void> {
    await this.#json('DELETE', `/v1/templates/${encodeURIComponent(name)}`, undefined, options);
  }

  async #imageStream(route: string, body: unknown, options: ImageCallOptions): Promise<Image> {
    return this.#eventStream<ImageEvent, Image>(
      route,
      body,
      options,
      (event) => (event.type === 'done' ? event.image : undefined),
      options.onEvent,
    );
  }

  /** Reads NDJSON events: `error` thrown, `done` turned into the result by `result`, the rest to `onEvent`. */
  async #eventStream<E extends { type: string }, R>(
    route: string,
    body: unknown,
    options: CallOptions,
    result: (event: E) => R | undefined,
    onEvent?: (event: Exclude<E, { type: 'done' | 'error' }>) => void,
  ): Promise<R> {
    const { response, deadline } = await this.#send('POST', route, body, options, 'application/x-ndjson');
    try {
      deadline.stopTimer();
      if (response.status >= 300) throw await this.#errorFrom(response, 'POST', route);
      for await (const value of parseNdjson(response.body, { maxLineBytes: this.#maxStreamLineBytes })) {
        if (typeof value !== 'object' || value === null || typeof (value as { type?: unknown }).type !== 'string') continue;
        const event = value as E;
        if (event.type === 'error') throw errorFromWire(event as unknown as { code: string; message: string; hint?: string });
        const done = result(event);
        if (done !== undefined) return done;
        onEvent?.(event as Exclude<E, { type: 'done' | 'error' }>);
      }
      throw new ConnectionError('connection_lost', `The ${route} stream ended before it finished`, {
        hint: 'Check that capsuled is still running with `capsule daemon status`',
      });
    } finally {
      response.cancel();
      deadline.dispose();
    }
  }

  /**
   * An HTTP request to `port` inside a sandbox, through the daemon's proxy
   * (`/v1/sandboxes/{id}/ports/{port}/…`): the service's answer, whatever its
   * status, with its body streamed. The daemon's own refusals (nothing
   * listens: `port_not_listening`, no access, no sandbox) are thrown. The
   * request timeout covers the wait for the answer to begin.
   */
  async fetchPort(idOrName: string, port: number, path = '/', init: PortRequestInit = {}): Promise<TransportResponse> {
    checkGuestPort(port);
    const route = sandboxPath(idOrName, `/ports/${port}${path.startsWith('/') ? path : `/${path}`}`);
    const deadline = startDeadline(init.signal, init.requestTimeoutMs ?? this.requestTimeoutMs, `${init.method ?? 'GET'} ${route}`);
    try {
      const headers = {
        ...init.headers,
        ...(init.trafficAccessToken !== undefined ? { [TRAFFIC_TOKEN_HEADER]: init.trafficAccessToken } : {}),
      };
      const response = await this.transport.request({
        method: init.method ?? 'GET',
        path: route,
        headers,
        body: init.body,
        signal: deadline.signal,
      });
      if (response.headers[PORT_ERROR_HEADER] !== undefined) throw await this.#errorFrom(response, init.method ?? 'GET', route);
      return response;
    } finally {
      deadline.stopTimer();
    }
  }

  /**
   * A raw TCP connection to `port` inside a sandbox (what `capsule
   * port-forward` relays): resolves once connected there; throws
   * `port_not_listening` when nothing listens.
   */
  async openPortTunnel(idOrName: string, port: number, options: PortTunnelOptions = {}): Promise<Duplex> {
    if (!this.#address) {
      throw new InvalidArgumentError('invalid_argument', 'a custom transport cannot open tunnels', {
        hint: 'connect with socketPath or host and port',
      });
    }
    return await openPortTunnel(this.#address, idOrName, port, options);
  }

  /** The sandbox's serial console log (bounded by the daemon). */
  /** The sandbox's serial console; `since`: only what the guest wrote from then on (to the second). */
  async logs(idOrName: string, options?: CallOptions & { since?: Date }): Promise<string> {
    const route = `${sandboxPath(idOrName, '/logs')}${options?.since ? `?since=${encodeURIComponent(options.since.toISOString())}` : ''}`;
    const { response, deadline } = await this.#send('GET', route, undefined, options, 'text/plain');
    try {
      if (response.status >= 300) throw await this.#errorFrom(response, 'GET', route);
      return (await readBody(response, this.maxResponseBytes)).toString('utf8');
    } finally {
      deadline.dispose();
    }
  }

  async openapi(options?: CallOptions): Promise<unknown> {
    return this.#json('GET', '/openapi.json', undefined, options);
  }

  close(): void {
    for (const connection of this.#agents.values()) connection.close();
    this.#agents.clear();
    this.transport.close();
  }

  async #json<T>(method: TransportRequest['method'], route: string, body: unknown, options: CallOptions = {}): Promise<T> {
    const { response, deadline } = await this.#send(method, route, body, options, 'application/json');
    try {
      if (response.status >= 300) throw await this.#errorFrom(response, method, route);
      const bytes = await readBody(response, this.maxResponseBytes);
      if (response.status === 204 || bytes.length === 0) return undefined as T;
      try {
        return JSON.parse(bytes.toString('utf8')) as T;
      } catch {
        throw new CapsuleError('protocol_error', `capsuled answered ${method} ${route} with a body that is not JSON`, {
          status: response.status,
        });
      }
    } finally {
      deadline.dispose();
    }
  }

  async #send(
    method: TransportRequest['method'],
    route: string,
    body: unknown,
    options: CallOptions = {},
    accept: string,
  ): Promise<{ response: TransportResponse; deadline: Deadline }> {
    const timeoutMs = options.requestTimeoutMs ?? this.requestTimeoutMs;
    const deadline = startDeadline(options.signal, timeoutMs, `${method} ${route}`);
    const payload = body instanceof RawBody ? body.bytes : body === undefined ? undefined : JSON.stringify(body);
    const headers: Record<string, string> = { accept, 'user-agent': SDK_USER_AGENT };
    if (payload !== undefined) headers['content-type'] = body instanceof RawBody ? body.contentType : 'application/json';
    const startedAt = Date.now();
    if (trace.enabled)
      trace(
        `→ ${method} ${route}${body === undefined ? '' : body instanceof RawBody ? ` (${body.contentType})` : ` ${redactedForTrace(body).slice(0, 500)}`}`,
      );
    try {
      const response = await this.transport.request({ method, path: route, headers, body: payload, signal: deadline.signal });
      trace(`← ${response.status} ${method} ${route} (${Date.now() - startedAt} ms)`);
      return { response, deadline };
    } catch (error) {
      deadline.dispose();
      trace(`✗ ${method} ${route}: ${String(error)}`);
      throw error;
    }
  }

  async #errorFrom(response: TransportResponse, method: string, route: string): Promise<CapsuleError> {
    const text = (await readBody(response, MAX_ERROR_BODY_BYTES)).toString('utf8');
    trace(`← error body ${text.slice(0, 500)}`);
    let wire: unknown;
    try {
      wire = (JSON.parse(text) as { error?: unknown }).error;
    } catch {
      wire = undefined;
    }
    if (
      typeof wire === 'object' &&
      wire !== null &&
      typeof (wire as { code?: unknown }).code === 'string' &&
      typeof (wire as { message?: unknown }).message === 'string'
    ) {
      const { code, message, hint } = wire as { code: string; message: string; hint?: unknown };
      return errorFromWire({ code, message, hint: typeof hint === 'string' ? hint : undefined }, response.status);
    }
    const code = fallbackCodeByStatus[response.status] ?? 'internal';
    const snippet = text.trim().slice(0, 200);
    return errorFromWire(
      { code, message: `capsuled answered ${method} ${route} with HTTP ${response.status}${snippet ? `: ${snippet}` : ''}` },
      response.status,
    );
  }
}

function workloadPath(name: string, rest = ''): string {
  return `/v1/workloads/${encodeURIComponent(name)}${rest}`;
}
