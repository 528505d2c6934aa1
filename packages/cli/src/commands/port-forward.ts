// `capsule port-forward ID [LOCAL:]REMOTE`: listens on the host's loopback and
// relays each connection to REMOTE inside the sandbox through a tunnel of its
// own (the daemon's agent channel; no guest network needed). Runs until
// Ctrl-C, which closes the listener and every open connection.
import net from 'node:net';
import { CapsuleError } from '@capsule/sdk';
import { Command } from 'commander';
import { CliContext } from '../cli-context.js';
import { formatError } from '../error-report.js';
import { Interrupts } from '../interrupts.js';
import { parseForwardSpec } from '../option-parsers.js';
import { addGlobalOptions } from './global-options.js';

interface PortForwardOptions {
  address: string;
}

export function portForwardCommand(): Command {
  return addGlobalOptions(
    new Command('port-forward')
      .description('Forward a local TCP port to a port inside a sandbox, until Ctrl-C')
      .argument('<sandbox>', 'sandbox id or name')
      .argument('<[local:]remote>', 'e.g. 8080:80, or 80 (local 80); local 0 picks a free port', parseForwardSpec)
      .option('--address <ip>', 'local address to listen on', '127.0.0.1')
      .action(async (idOrName: string, spec: { localPort: number; remotePort: number }, options: PortForwardOptions, command: Command) => {
        const context = CliContext.of(command);
        const client = await context.daemonClient();
        // Fails now, with the daemon's words, if there is no such sandbox or it does not run.
        const sandbox = await client.getSandbox(idOrName);
        if (sandbox.state !== 'running') {
          throw new CapsuleError('sandbox_not_running', `sandbox ${sandbox.id} is ${sandbox.state}, not running`, {
            hint: sandbox.state === 'paused' ? `resume it first: capsule resume ${sandbox.id}` : 'create a new sandbox',
          });
        }
        const sockets = new Set<net.Socket>();
        // Half-open allowed, so a client that finishes sending still gets the whole answer.
        const server = net.createServer({ pauseOnConnect: true, allowHalfOpen: true }, (socket) => {
          sockets.add(socket);
          socket.once('close', () => sockets.delete(socket));
          socket.on('error', () => undefined);
          client.openPortTunnel(sandbox.id, spec.remotePort).then(
            (tunnel) => {
              if (socket.destroyed) return void tunnel.destroy();
              tunnel.on('error', () => socket.destroy());
              tunnel.once('close', () => socket.destroy());
              socket.once('close', () => tunnel.destroy());
              socket.pipe(tunnel);
              tunnel.pipe(socket);
              socket.resume();
            },
            (error: unknown) => {
              process.stderr.write(formatError(error, { subject: `a connection to port ${spec.remotePort}` }));
              socket.destroy();
            },
          );
        });
        await new Promise<void>((resolve, reject) => {
          server.once('error', reject);
          server.listen(spec.localPort, options.address, () => resolve());
        });
        const { port } = server.address() as net.AddressInfo;
        const interrupts = new Interrupts();
        // The address alone on stdout, for scripts (useful with local port 0).
        process.stdout.write(`${options.address}:${port}\n`);
        process.stderr.write(`Forwarding ${options.address}:${port} -> ${sandbox.id}:${spec.remotePort} (Ctrl-C to stop)\n`);
        await new Promise<void>((resolve) => interrupts.signal.addEventListener('abort', () => resolve(), { once: true }));
        interrupts.dispose();
        for (const socket of sockets) socket.destroy();
        await new Promise((resolve) => server.close(resolve));
        client.close();
      }),
  );
}
