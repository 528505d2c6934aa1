// `capsule context add|use|ls|rm`: daemons on other hosts by name. `add`
// pins the certificate the daemon shows right then (trust on first use, as
// ssh does; `--fingerprint` pins one known ahead), so that a later daemon
// showing another is refused as a possible impersonation.
import {
  CapsuleClient,
  ConnectionError,
  fetchDaemonCertificate,
  InvalidArgumentError,
  normalizeFingerprint,
  parseDaemonUrl,
} from '@capsule/sdk';
import { Command } from 'commander';
import { checkContextName, LOCAL_CONTEXT, readContexts, writeContexts, type DaemonContext } from '../contexts.js';
import { addGlobalOptions } from './global-options.js';
import { addOutputOptions, printOutput, type OutputOptions } from '../output-format.js';

interface AddOptions {
  host: string;
  key?: string;
  fingerprint?: string;
}

async function addAction(name: string, options: AddOptions): Promise<void> {
  checkContextName(name);
  const { host, port, tls } = parseDaemonUrl(options.host);
  const context: DaemonContext = { host: `${tls ? 'https' : 'http'}://${host.includes(':') ? `[${host}]` : host}:${port}` };
  if (options.key !== undefined) context.apiKey = options.key;
  if (tls) {
    // Pinned ahead, or as shown now; either way checked by a handshake that sends nothing, then by a real call.
    const shown = (await fetchDaemonCertificate(host, port)).fingerprint256;
    if (options.fingerprint !== undefined && normalizeFingerprint(options.fingerprint) !== normalizeFingerprint(shown)) {
      throw new ConnectionError(
        'tls_untrusted',
        `possible impersonation: capsuled at ${context.host} shows a certificate with SHA-256 ${shown}, not ${options.fingerprint}`,
        { hint: 'check the fingerprint `capsule daemon status` prints on that host' },
      );
    }
    context.fingerprintSha256 = shown;
    if (options.fingerprint === undefined)
      process.stderr.write(
        `The daemon at ${context.host} shows a certificate with SHA-256 fingerprint\n  ${shown}\npinned for context ${name}: compare it with what \`capsule daemon status\` prints on that host.\n`,
      );
  }
  const client = new CapsuleClient({
    host,
    port,
    tls: context.fingerprintSha256 ? { fingerprintSha256: context.fingerprintSha256 } : false,
    ...(context.apiKey !== undefined && { apiKey: context.apiKey }),
  });
  try {
    await client.info();
  } finally {
    client.close();
  }
  const file = readContexts();
  file.contexts[name] = context;
  writeContexts(file);
  process.stdout.write(`${name}\n`);
}

function noSuchContext(name: string): InvalidArgumentError {
  return new InvalidArgumentError('invalid_argument', `there is no context "${name}"`, { hint: 'list them with `capsule context ls`' });
}

export function contextCommand(): Command {
  const group = new Command('context').description('Reach daemons on other hosts by name (their address, API key and pinned certificate)');
  group.addCommand(
    addGlobalOptions(
      new Command('add')
        .description("Add a daemon by name; its certificate's fingerprint is pinned now (or checked against --fingerprint)")
        .argument('<name>', 'a name for it (lower-case letters, digits, _ . -)')
        .requiredOption('--host <url>', 'https://HOST:PORT (the daemon runs with CAPSULE_LISTEN)')
        .option('--key <key>', 'an API key of that daemon (`capsule apikey create` there)')
        .option('--fingerprint <sha256>', 'the SHA-256 fingerprint `capsule daemon status` prints there, to pin ahead')
        .action(addAction),
    ),
  );
  group.addCommand(
    addGlobalOptions(
      new Command('use')
        .description(`Make a context the one commands use (\`${LOCAL_CONTEXT}\`: this host's daemon)`)
        .argument('<name>', 'a context, or default')
        .action((name: string) => {
          const file = readContexts();
          if (name === LOCAL_CONTEXT) delete file.current;
          else if (!file.contexts[checkContextName(name)]) throw noSuchContext(name);
          else file.current = name;
          writeContexts(file);
          process.stdout.write(`${name}\n`);
        }),
    ),
  );
  group.addCommand(
    addGlobalOptions(
      addOutputOptions(new Command('ls'))
        .description('List contexts; * marks the current one (-o json|yaml leaves API keys out)')
        .action((options: OutputOptions) => {
          const file = readContexts();
          const rows = [
            { name: LOCAL_CONTEXT, host: "this host's socket", fingerprintSha256: '-', current: file.current === undefined },
            ...Object.entries(file.contexts).map(([name, c]) => ({
              name,
              host: c.host,
              fingerprintSha256: c.fingerprintSha256 ?? '-',
              current: file.current === name,
            })),
          ];
          printOutput(rows, options, {
            table: () => rows.map((row) => `${row.current ? '*' : ' '} ${row.name}\t${row.host}\t${row.fingerprintSha256}\n`).join(''),
          });
        }),
    ),
  );
  group.addCommand(
    addGlobalOptions(
      new Command('rm')
        .description('Remove contexts (their API keys with them)')
        .argument('<name...>', 'contexts')
        .action((names: string[]) => {
          const file = readContexts();
          for (const name of names) {
            if (!file.contexts[name]) throw noSuchContext(name);
            delete file.contexts[name];
            if (file.current === name) delete file.current;
          }
          writeContexts(file);
          process.stdout.write(names.map((name) => `${name}\n`).join(''));
        }),
    ),
  );
  return group;
}
