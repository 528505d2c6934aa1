// `capsule version`: this client's version, then the daemon's (GET /v1/info)
// when one answers, like `docker version`. It never starts a daemon; when none
// answers it prints the client's and fails with the reason (exit 125).
import type { DaemonInfo } from '@capsule/sdk';
import { Command } from 'commander';
import { CliContext } from '../cli-context.js';
import { clientVersion } from '../client-version.js';
import { addGlobalOptions } from './global-options.js';
import { addOutputOptions, printOutput, type OutputOptions } from '../output-format.js';

export function versionCommand(): Command {
  return addGlobalOptions(
    addOutputOptions(new Command('version'))
      .description("Show the version of this client and of the daemon it reaches (--version: the client's alone)")
      .action(async (options: OutputOptions, command: Command) => {
        const client = { version: clientVersion, node: process.version };
        let server: DaemonInfo | undefined;
        let failure: unknown;
        try {
          server = await CliContext.of(command).client().info({ requestTimeoutMs: 10_000 });
        } catch (error) {
          failure = error;
        }
        printOutput({ client, server: server ?? null }, options, {
          table: () =>
            `Client: ${client.version} (node ${client.node})\n` +
            (server ? `Server: ${server.version} (capsuled pid ${server.pid}, ${server.accel})\n` : ''),
        });
        if (failure !== undefined) throw failure;
      }),
  );
}
