// How the SDK reaches a sandbox's agent's Connect services (envd's process and
// filesystem), through capsuled's proxy at /v1/sandboxes/{id}/envd, over the
// same unix socket or TCP address as the REST calls. HTTP/1.1, so that the
// daemon's one listener serves both. Plain HTTP (/files) goes through the
// client's Transport, like every other request.
import type http from 'node:http';
import { createClient, type Client, type Interceptor } from '@connectrpc/connect';
import { createConnectTransport } from '@connectrpc/connect-node';
import { Filesystem, Process } from '@capsule/protocol/agent';
import { agentFor, originOf, type DaemonAddress } from './daemon-tls.js';
import { InvalidArgumentError } from './errors.js';

export type { DaemonAddress } from './daemon-tls.js';

/** The largest single message accepted from an agent. */
const MAX_AGENT_MESSAGE_BYTES = 8 * 1024 * 1024;

export class AgentConnection {
  readonly process: Client<typeof Process>;
  readonly filesystem: Client<typeof Filesystem>;
  /** Base URL of the agent API through the daemon, e.g. `http://capsuled/v1/sandboxes/sb_x/envd`. */
  readonly baseUrl: string;
  readonly #agent: http.Agent;

  constructor(address: DaemonAddress, sandboxId: string) {
    if (sandboxId === '') throw new InvalidArgumentError('invalid_argument', 'A sandbox id is required');
    this.#agent = agentFor(address, { keepAlive: true });
    this.baseUrl = `${originOf(address)}/v1/sandboxes/${encodeURIComponent(sandboxId)}/envd`;
    const apiKey = address.apiKey;
    const withApiKey: Interceptor = (next) => async (request) => {
      if (apiKey !== undefined) request.header.set('x-api-key', apiKey);
      return await next(request);
    };
    const transport = createConnectTransport({
      baseUrl: this.baseUrl,
      httpVersion: '1.1',
      nodeOptions: { agent: this.#agent, ...('socketPath' in address ? { socketPath: address.socketPath } : {}) },
      interceptors: [withApiKey],
      readMaxBytes: MAX_AGENT_MESSAGE_BYTES,
      useBinaryFormat: true,
    });
    this.process = createClient(Process, transport);
    this.filesystem = createClient(Filesystem, transport);
  }

  close(): void {
    this.#agent.destroy();
  }
}
