// The agent inside one running VM as the daemon talks to it: its HTTP/2 client,
// the bulk port when the machine has one, and the waits a fresh or restored
// guest needs (health, /init) retried until a deadline. It never starts, stops
// or inspects the VM itself: `isAlive` is all it knows of it.
import { bulkProtocolVersion } from '@capsule/protocol/agent';
import { errorMessage } from '../errors.js';
import { BulkChannel } from './bulk-channel.js';
import { AgentClient, type AgentInitRequest } from './client.js';

const INIT_TIMEOUT_MS = 10_000;
const FIRST_INIT_ATTEMPT_MS = 1000;
const MAX_INIT_ATTEMPT_MS = 5000;

/** Where the VM's agent ports come out on the host (the VMM handle's `guestPorts`). */
export interface AgentPorts {
  agentSocket: string;
  bulk: { socket: string; version: number } | undefined;
}

export class GuestAgent {
  readonly client: AgentClient;
  /** The bulk port for large /files transfers, when the machine has one. */
  readonly bulk: BulkChannel | undefined;

  constructor(
    ports: AgentPorts,
    private readonly isAlive: () => boolean,
  ) {
    this.client = new AgentClient(ports.agentSocket);
    // A machine launched before framed uploads (version 1) gets downloads only.
    this.bulk = ports.bulk ? new BulkChannel(ports.bulk.socket, { uploads: ports.bulk.version === bulkProtocolVersion }) : undefined;
  }

  /**
   * Retries the agent's health check until `deadline`. A retry matters after a
   * reconnect too: a write the guest had in flight when the previous host side
   * left may arrive first on the new connection and break that HTTP/2 session.
   */
  async waitUntilHealthy(deadline: number): Promise<void> {
    for (;;) {
      try {
        await this.client.health(Math.max(1, Math.min(5000, deadline - Date.now())));
        return;
      } catch (err) {
        if (Date.now() >= deadline || !this.isAlive()) throw new Error(`the guest agent did not answer: ${errorMessage(err)}`);
        await new Promise((r) => setTimeout(r, 20));
      }
    }
  }

  /**
   * Tells a restored guest who it is now: time, entropy, hostname, env; retried
   * until `deadline`, each try on a fresh session. Right after a restore this
   * is the agent's first request, and it can fail or hang: bytes the guest was
   * writing when it was saved may reach the new connection first and break its
   * session. /init is safe to repeat.
   */
  async init(request: AgentInitRequest, deadline = Date.now() + INIT_TIMEOUT_MS): Promise<void> {
    // Under TCG a restored guest's first answer takes a few hundred ms (it translates its code anew):
    // a first try is given a second, and each retry twice as long, so a lost request costs one second, not the deadline.
    for (let attemptMs = FIRST_INIT_ATTEMPT_MS; ; attemptMs = Math.min(2 * attemptMs, MAX_INIT_ATTEMPT_MS)) {
      try {
        // Stamped at each try: a retry must not set the guest's clock to when the first one was sent.
        const stamped = request.timestamp === undefined ? request : { ...request, timestamp: new Date().toISOString() };
        await this.client.init(stamped, Math.max(1, Math.min(attemptMs, deadline - Date.now())));
        return;
      } catch (err) {
        if (Date.now() >= deadline || !this.isAlive()) throw new Error(`the guest agent did not take /init: ${errorMessage(err)}`);
        this.client.close();
        await new Promise((r) => setTimeout(r, 20));
      }
    }
  }

  /** Closes the agent's sessions; the next request connects afresh. */
  close(): void {
    this.client.close();
  }
}
