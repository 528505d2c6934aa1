// Published host ports (`capsule sandbox create -p 8080:80`): a TCP listener
// on the host per port, each accepted connection relayed through a tunnel to
// the guest port. Ports are bound when asked for, so a conflict refuses the
// create (or resume) with a clear error instead of surfacing later. Listeners
// live only while their sandbox runs; the store keeps what was published so
// that a resume or a daemon restart binds the same host ports again.
import net from 'node:net';
import type { PortRequest, PublishedPort } from '@capsule/protocol';
import { CapsuleError, errorMessage } from '../errors.js';
import type { Logger } from '../log.js';
import type { Store } from '../store/store.js';
import { joinToTunnel, type Tunnels } from './tunnels.js';

const DEFAULT_HOST_IP = '127.0.0.1';

export interface Binding {
  port: PublishedPort;
  server: net.Server;
  /** Connections being relayed, ended with the listener. */
  sockets: Set<net.Socket>;
}

/** Listeners bound for a sandbox that is not recorded yet (a create in progress). */
export class PortReservation {
  constructor(
    readonly bindings: Binding[],
    /** The sandbox connections go to; unset until the create has an id for it. */
    readonly owner: { id?: string },
  ) {}

  get ports(): PublishedPort[] {
    return this.bindings.map((b) => b.port);
  }

  /** Closes the listeners (the create failed). */
  async release(): Promise<void> {
    await Promise.all(this.bindings.map(closeBinding));
  }
}

export class PublishedPorts {
  /** What every running or paused sandbox has published, as recorded. */
  private readonly published = new Map<string, PublishedPort[]>();
  private readonly bound = new Map<string, Binding[]>();

  constructor(
    private readonly store: Store,
    private readonly tunnels: Tunnels,
    private readonly log: Logger,
  ) {}

  /** Reads what was published from the store (daemon start). */
  async load(): Promise<void> {
    for (const row of await this.store.portsOfLiveSandboxes()) {
      const list = this.published.get(row.sandbox_id) ?? [];
      list.push({ hostIp: row.host_ip, hostPort: row.host_port, guestPort: row.guest_port });
      this.published.set(row.sandbox_id, list);
    }
  }

  /** The ports sandbox `id` publishes. */
  of(id: string): PublishedPort[] {
    return this.published.get(id) ?? [];
  }

  /** Binds the requested host ports for a sandbox about to be created; any failure releases them all. */
  async reserve(requests: PortRequest[] | undefined): Promise<PortReservation> {
    const reservation = new PortReservation([], {});
    try {
      for (const request of requests ?? []) {
        const hostIp = request.hostIp ?? DEFAULT_HOST_IP;
        if (net.isIP(hostIp) === 0) {
          throw new CapsuleError('invalid_argument', `"${hostIp.slice(0, 64)}" is not an IP address to publish on`, {
            hint: 'use 127.0.0.1 (the default) or 0.0.0.0 for every interface',
          });
        }
        reservation.bindings.push(
          await this.listen({ hostIp, hostPort: request.hostPort ?? 0, guestPort: request.guestPort }, reservation.owner),
        );
      }
    } catch (err) {
      await reservation.release();
      throw err;
    }
    return reservation;
  }

  /** Records a reservation as sandbox `id`'s ports (after its row exists) and starts relaying their connections. */
  async commit(id: string, reservation: PortReservation): Promise<void> {
    const { bindings, owner } = reservation;
    if (bindings.length === 0) return;
    await this.store.insertSandboxPorts(
      bindings.map((b) => ({ sandbox_id: id, host_ip: b.port.hostIp, host_port: b.port.hostPort, guest_port: b.port.guestPort })),
    );
    owner.id = id;
    this.published.set(id, reservation.ports);
    this.bound.set(id, bindings);
  }

  /** Binds sandbox `id`'s recorded ports again (resume, daemon start); a port taken meanwhile throws host_port_unavailable. */
  async bind(id: string): Promise<void> {
    if (this.bound.has(id)) return;
    const owner = { id };
    const bindings: Binding[] = [];
    try {
      for (const port of this.of(id)) bindings.push(await this.listen(port, owner));
    } catch (err) {
      await Promise.all(bindings.map(closeBinding));
      throw err;
    }
    if (bindings.length > 0) this.bound.set(id, bindings);
  }

  /** Closes sandbox `id`'s listeners (pause, stop, crash, daemon shutdown); `forget` for a killed one. */
  async release(id: string, forget = false): Promise<void> {
    const bindings = this.bound.get(id) ?? [];
    this.bound.delete(id);
    if (forget) this.published.delete(id);
    await Promise.all(bindings.map(closeBinding));
  }

  async releaseAll(): Promise<void> {
    await Promise.all([...this.bound.keys()].map((id) => this.release(id)));
  }

  private async listen(port: PublishedPort, owner: { id?: string }): Promise<Binding> {
    const sockets = new Set<net.Socket>();
    // Half-open allowed: a client that finishes sending still gets the whole answer; the socket closes when both sides have ended.
    const server = net.createServer({ pauseOnConnect: true, allowHalfOpen: true }, (socket) => {
      sockets.add(socket);
      socket.once('close', () => sockets.delete(socket));
      this.relay(socket, owner.id, port.guestPort);
    });
    await new Promise<void>((resolve, reject) => {
      server.once('error', (err: NodeJS.ErrnoException) => {
        const where = `${port.hostIp}:${port.hostPort}`;
        const why =
          err.code === 'EADDRINUSE'
            ? 'is already in use'
            : err.code === 'EACCES'
              ? 'may not be bound by capsuled'
              : `cannot be bound (${err.code ?? err.message})`;
        reject(
          new CapsuleError('host_port_unavailable', `host port ${where} ${why}`, {
            hint: 'pick another host port, or leave it out (-p 80) to get a free one',
          }),
        );
      });
      server.listen({ host: port.hostIp, port: port.hostPort, exclusive: true }, () => resolve());
    });
    server.removeAllListeners('error');
    server.on('error', (err) => this.log.warn({ err: errorMessage(err), port }, 'published port listener failed'));
    const address = server.address() as net.AddressInfo;
    return { port: { ...port, hostPort: address.port }, server, sockets };
  }

  /** One accepted connection: a tunnel to the guest port, or closed at once when there is none to be had. */
  private relay(socket: net.Socket, id: string | undefined, guestPort: number): void {
    socket.on('error', () => undefined);
    if (id === undefined) return void socket.destroy();
    this.tunnels.connect(id, guestPort).then(
      ({ stream }) => {
        if (socket.destroyed) return void stream.destroy();
        joinToTunnel(socket, stream);
        socket.resume();
      },
      (err: unknown) => {
        this.log.debug({ sandbox: id, guestPort, err: errorMessage(err) }, 'published port connection refused');
        socket.destroy();
      },
    );
  }
}

function closeBinding({ server, sockets }: Binding): Promise<void> {
  for (const socket of sockets) socket.destroy();
  return new Promise((resolve) => {
    if (!server.listening) return resolve();
    server.close(() => resolve());
  });
}
