// `capsule version`: this client's version, then the daemon's (GET /v1/info)
// when one answers, like `docker version`. It never starts a daemon; when none
// answers it prints the client's and fails with the reason (exit 125).
import type { DaemonInfo } from '@capsule/sdk';
import { Command } from 'commander';
import { CliContext } from '../cli-context.js';
import { clientVersion } from '../client-version.js';
import { addGlobalOptions } from './global-options.js';
import { printJson } from './print-json.js';

export function versionCommand(): Command {
  return addGlobalOptions(
    new Command('version')
      .description("Show the version of this client and of the daemon it reaches (--version: the client's alone)")
      .option('--json', 'print {"client": {"version"}, "server": the daemon\'s /v1/info or null} as JSON')
      .action(async (options: { json?: boolean }, command: Command) => {
        const client = { version: clientVersion, node: process.version };
        let server: DaemonInfo | undefined;
        let failure: unknown;
        try {
          server = await CliContext.of(command).client().info({ requestTimeoutMs: 10_000 });
        } catch (error) {
          failure = error;
        }
        if (options.json) printJson({ client, server: server ?? null });
        else {
          process.stdout.write(`Client: ${client.version} (node ${client.node})\n`);
          if (server) process.stdout.write(`Server: ${server.version} (capsuled pid ${server.pid}, ${server.accel})\n`);
        }
        if (failure !== undefined) throw failure;
      }),
  );
}
