// `capsule ssh ID [-- CMD]`, `capsule ssh-config` and the hidden `ssh-proxy`:
// the system's ssh, reaching sandboxes through the daemon (a tunnel to the
// guest's port 22 over its agent channel: no routable address needed, and the
// same through a remote context). The proxy starts the sandbox's sshd, pins its
// host keys in Capsule's own known_hosts before ssh sees any, and authorises the
// user's public key; ssh then checks the key strictly. Never writes ~/.ssh.
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { Duplex } from 'node:stream';
import { CapsuleError, InvalidArgumentError, NotFoundError, Sandbox } from '@capsule/sdk';
import { Command, Option } from 'commander';
import { CliContext } from '../cli-context.js';
import { EXIT_CAPSULE_FAILURE } from '../exit-codes.js';
import { knownHostsFile, pinHostKeys, sandboxOfHost, SSH_HOST_SUFFIX } from '../ssh-known-hosts.js';
import { addGlobalOptions } from './global-options.js';

const SSH_PORT = 22;
/** The user the base template's processes run as, and so the one ssh logs in as. */
export const DEFAULT_SSH_USER = 'user';
const PUBLIC_KEY_LINE = /^(ssh-ed25519|ssh-rsa|ecdsa-sha2-nistp(?:256|384|521)|sk-[a-z0-9@.-]+) [A-Za-z0-9+/]+={0,2}(?: .*)?$/;

/** `--identity` names a private key or its `.pub`: both halves, the public one only if it exists. */
export function identityFiles(identity: string | undefined, home = os.homedir()): { privateKey?: string; publicKey?: string } {
  if (identity === undefined) {
    // ssh itself looks in the account's home, not $HOME: the key is named to it either way.
    const privateKey = path.join(home, '.ssh', 'id_ed25519');
    const publicKey = `${privateKey}.pub`;
    if (!fs.existsSync(publicKey)) return {};
    return fs.existsSync(privateKey) ? { privateKey, publicKey } : { publicKey };
  }
  const privateKey = identity.endsWith('.pub') ? identity.slice(0, -'.pub'.length) : identity;
  return { privateKey, publicKey: `${privateKey}.pub` };
}

/** The key line of a `.pub` file, checked: the sandbox's authorized_keys gets nothing else. */
export function readPublicKey(file: string): string {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (error) {
    throw new InvalidArgumentError('invalid_argument', `cannot read the public key ${file}: ${(error as Error).message}`, {
      hint: 'make a key with `ssh-keygen -t ed25519`, or name one with --identity',
    });
  }
  const line = text.split('\n')[0]?.trim() ?? '';
  if (!PUBLIC_KEY_LINE.test(line)) throw new InvalidArgumentError('invalid_argument', `${file} does not hold an SSH public key`);
  return line;
}

/** Whether two authorized_keys lines hold the same key (options and comments aside). */
function holdsKey(line: string, publicKey: string): boolean {
  const [type, blob] = publicKey.split(' ');
  return line.split(/\s+/).some((word, index, words) => word === type && words[index + 1] === blob);
}

/** Adds `publicKey` to `user`'s ~/.ssh/authorized_keys in the sandbox unless it is there (through the agent's file API, as that user). */
export async function authorizeKey(sandbox: Sandbox, user: string, publicKey: string): Promise<void> {
  const file = '.ssh/authorized_keys';
  let current = '';
  try {
    current = await sandbox.files.read(file, { user });
  } catch (error) {
    if (!(error instanceof NotFoundError)) throw error;
  }
  if (current.split('\n').some((line) => holdsKey(line, publicKey))) return;
  const separator = current === '' || current.endsWith('\n') ? '' : '\n';
  await sandbox.files.write(file, `${current}${separator}${publicKey}\n`, { user });
}

/** The sandbox's SSH server, started if need be, with its keys pinned for `host`; then a tunnel to it. */
async function connectToSshServer(sandbox: Sandbox, host: string): Promise<Duplex> {
  const pinned = knownHostsFile();
  const start = async () => {
    const { hostKeys } = await sandbox.client.startSshServer(sandbox.id);
    pinHostKeys(pinned, host, sandbox.id, hostKeys);
  };
  // Keys the record holds come from a server that ran: pinned at once, and a tunnel tried before any start.
  const known = sandbox.info.sshHostKeys;
  if (known && known.length > 0) pinHostKeys(pinned, host, sandbox.id, known);
  else await start();
  try {
    return await sandbox.client.openPortTunnel(sandbox.id, SSH_PORT);
  } catch (error) {
    // Not running (a restart, or it was ended inside): started again, and its keys checked again.
    if (!(error instanceof CapsuleError && error.code === 'port_not_listening')) throw error;
    await start();
    return await sandbox.client.openPortTunnel(sandbox.id, SSH_PORT);
  }
}

interface ProxyOptions {
  user: string;
  identity?: string;
}

/** `capsule ssh-proxy HOST`: ssh's ProxyCommand; stdin and stdout carry the SSH connection. */
async function proxyAction(host: string, options: ProxyOptions, command: Command): Promise<void> {
  const context = CliContext.of(command);
  await context.daemonClient();
  const sandbox = await Sandbox.connect(sandboxOfHost(host), context.connection);
  try {
    if (sandbox.info.state !== 'running') {
      throw new CapsuleError('sandbox_not_running', `sandbox ${sandbox.id} is ${sandbox.info.state}, not running`, {
        hint: `start it first: capsule ${sandbox.info.state === 'paused' ? 'resume' : 'start'} ${sandbox.id}`,
      });
    }
    const tunnel = await connectToSshServer(sandbox, host);
    const { publicKey } = identityFiles(options.identity);
    if (publicKey !== undefined) await authorizeKey(sandbox, options.user, readPublicKey(publicKey));
    tunnel.on('error', () => tunnel.destroy());
    process.stdin.pipe(tunnel);
    tunnel.pipe(process.stdout);
    await new Promise((resolve) => tunnel.once('close', resolve));
  } finally {
    process.stdin.unpipe();
    process.stdin.destroy();
    sandbox.client.close();
  }
}

/** Quoted for the shell ssh runs a ProxyCommand with, and with ssh's own `%` escaped. */
function shellWord(word: string): string {
  return `'${word.replaceAll("'", "'\\''").replaceAll('%', '%%')}'`;
}

/** The ProxyCommand: this very CLI (node and its script), with the flags that chose the daemon. */
function proxyCommandLine(context: CliContext, extra: string[]): string {
  const script = fs.realpathSync(process.argv[1] ?? '');
  const flags = [
    ...(context.flags.socket !== undefined ? ['--socket', context.flags.socket] : []),
    ...(context.flags.context !== undefined ? ['--context', context.flags.context] : []),
    ...extra,
  ];
  return `${[process.execPath, script, 'ssh-proxy', ...flags].map(shellWord).join(' ')} --user %r %h`;
}

/** ssh options that make Capsule's known_hosts the only one, checked strictly. */
function hostKeyOptions(): string[][] {
  return [
    ['UserKnownHostsFile', knownHostsFile()],
    ['GlobalKnownHostsFile', '/dev/null'],
    ['StrictHostKeyChecking', 'yes'],
    ['CheckHostIP', 'no'],
    ['UpdateHostKeys', 'no'],
  ];
}

interface SshOptions {
  user: string;
  identity?: string;
}

async function sshAction(idOrName: string, rawCmd: string[], options: SshOptions, command: Command): Promise<void> {
  const cmd = rawCmd[0] === '--' ? rawCmd.slice(1) : rawCmd;
  const context = CliContext.of(command);
  const { privateKey, publicKey } = identityFiles(options.identity);
  if (publicKey === undefined) {
    throw new InvalidArgumentError(
      'invalid_argument',
      `no SSH key to log in with: ${path.join(os.homedir(), '.ssh', 'id_ed25519.pub')} does not exist`,
      {
        hint: 'make one with `ssh-keygen -t ed25519`, or name yours with --identity FILE',
      },
    );
  }
  readPublicKey(publicKey);
  // Fails now, with the daemon's words (or a key that is not the pinned one), rather than as a ProxyCommand failure inside ssh.
  const sandbox = await (await context.daemonClient()).getSandbox(idOrName);
  if (sandbox.sshHostKeys) pinHostKeys(knownHostsFile(), `${idOrName}${SSH_HOST_SUFFIX}`, sandbox.id, sandbox.sshHostKeys);
  const proxy = proxyCommandLine(context, options.identity !== undefined ? ['--identity', options.identity] : []);
  const args = [
    ...[['ProxyCommand', proxy], ...hostKeyOptions()].flatMap(([name, value]) => ['-o', `${name}=${value}`]),
    ...(privateKey !== undefined ? ['-i', privateKey] : []),
    ...(options.identity !== undefined ? ['-o', 'IdentitiesOnly=yes'] : []),
    '-l',
    options.user,
    `${idOrName}${SSH_HOST_SUFFIX}`,
    ...(cmd.length > 0 ? ['--', ...cmd] : []),
  ];
  const child = spawn('ssh', args, { stdio: 'inherit' });
  // The terminal's Ctrl-C goes to ssh (our process group); this process only waits for it.
  const ignore = () => undefined;
  process.on('SIGINT', ignore);
  try {
    process.exitCode = await new Promise<number>((resolve, reject) => {
      child.once('error', (error: NodeJS.ErrnoException) =>
        reject(
          error.code === 'ENOENT'
            ? new CapsuleError('ssh_not_installed', 'the ssh client is not installed', {
                hint: 'install OpenSSH: apt-get install openssh-client',
              })
            : error,
        ),
      );
      child.once('close', (code, signal) => resolve(code ?? (signal ? 128 + (os.constants.signals[signal] ?? 0) : EXIT_CAPSULE_FAILURE)));
    });
  } finally {
    process.off('SIGINT', ignore);
  }
}

/** The `Host *.capsule` block: `ssh NAME.capsule`, scp, rsync -e ssh and editors' remote-SSH reach sandboxes by name. */
export function sshConfigBlock(proxyCommand: string, options: string[][]): string {
  return [
    '# Capsule sandboxes by id or name: ssh NAME.capsule (add to ~/.ssh/config, or use with ssh -F)',
    `Host *${SSH_HOST_SUFFIX}`,
    `  User ${DEFAULT_SSH_USER}`,
    `  ProxyCommand ${proxyCommand}`,
    ...options.map(([name, value]) => `  ${name} "${value}"`),
    '',
  ].join('\n');
}

export function sshCommand(): Command {
  return addGlobalOptions(
    new Command('ssh')
      .description("Log in to a sandbox with the system's ssh (or run CMD), its host key pinned; your public key is authorised")
      .argument('<sandbox>', 'sandbox id or name')
      .argument('[cmd...]', 'a command to run instead of a login shell (put it after --)')
      .option('-l, --user <user>', 'the sandbox user to log in as', DEFAULT_SSH_USER)
      .option('-i, --identity <file>', 'your key (private, or its .pub) (default: ~/.ssh/id_ed25519)')
      .passThroughOptions()
      .action(sshAction),
  );
}

export function sshProxyCommand(): Command {
  return addGlobalOptions(
    new Command('ssh-proxy')
      .description("ssh's ProxyCommand for sandboxes: carries one SSH connection on stdin and stdout")
      .argument('<host>', 'ID.capsule or NAME.capsule')
      .addOption(new Option('--user <user>', 'the user whose authorized_keys gets your key').default(DEFAULT_SSH_USER))
      .option('-i, --identity <file>', 'your key (private, or its .pub) (default: ~/.ssh/id_ed25519)')
      .action(proxyAction),
  );
}

export function sshConfigCommand(): Command {
  return addGlobalOptions(
    new Command('ssh-config')
      .description('Print a `Host *.capsule` block for ~/.ssh/config: ssh, scp, rsync and editors then reach sandboxes by name')
      .action((_options: object, command: Command) => {
        process.stdout.write(sshConfigBlock(proxyCommandLine(CliContext.of(command), []), hostKeyOptions()));
      }),
  );
}
