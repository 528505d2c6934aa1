// capsule-agent's command line and environment, parsed into one options
// object. Must never touch the system (no files opened, nothing resolved):
// main.ts acts on what this returns.

import { readFileSync } from 'node:fs';
import { AGENT_PORT_NAME } from '@capsule/protocol/agent';
import { DEFAULT_GUEST_HELPER_PATH } from './guest-helper.js';
import { DEFAULT_HOSTNAME_FILE } from './init-route.js';

export type AgentTransport = { kind: 'unix'; path: string } | { kind: 'virtio-port'; portName: string; devicePath: string | undefined };

export interface AgentOptions {
  transport: AgentTransport;
  /** Who runs commands whose request names no user; undefined: decide at start. */
  defaultUser: string | undefined;
  /** capsule-guest-helper, for POST /init's clock and entropy ($CAPSULE_GUEST_HELPER). */
  guestHelperPath: string;
  /** Where POST /init writes the hostname ($CAPSULE_HOSTNAME_FILE; tests point it at a temp file). */
  hostnameFile: string;
}

export const usage = `Usage: capsule-agent [options]

Serves the envd-compatible agent API (Connect over HTTP/2).

  --listen unix:PATH     serve on a unix socket instead of the virtio port (for tests)
  --port-path DEVICE     use this virtio-serial device (e.g. /dev/vport0p1)
  --port-name NAME       find the virtio-serial port by name
                         (default: $CAPSULE_AGENT_PORT, then CAPSULE_AGENT_PORT= on
                         the kernel command line, then ${AGENT_PORT_NAME})
  --default-user NAME    user for requests that name none (default:
                         $CAPSULE_AGENT_DEFAULT_USER, else root, else the agent's own user)
  -h, --help             show this help

Environment: CAPSULE_GUEST_HELPER (default ${DEFAULT_GUEST_HELPER_PATH}),
CAPSULE_HOSTNAME_FILE (default ${DEFAULT_HOSTNAME_FILE}), DEBUG=capsule:agent:*
`;

export class UsageError extends Error {}

/** `CAPSULE_AGENT_PORT=name` from a kernel command line, if present. */
export function portNameFromKernelCommandLine(cmdline: string): string | undefined {
  for (const word of cmdline.trim().split(/\s+/)) {
    if (word.startsWith('CAPSULE_AGENT_PORT=')) return word.slice('CAPSULE_AGENT_PORT='.length) || undefined;
  }
  return undefined;
}

function readKernelCommandLine(): string {
  try {
    return readFileSync('/proc/cmdline', 'utf8');
  } catch {
    return '';
  }
}

export function parseAgentOptions(
  argv: string[],
  env: NodeJS.ProcessEnv,
  kernelCommandLine: () => string = readKernelCommandLine,
): AgentOptions | 'help' {
  let listen: string | undefined;
  let portPath: string | undefined;
  let portName: string | undefined;
  let defaultUser = env.CAPSULE_AGENT_DEFAULT_USER || undefined;
  const guestHelperPath = env.CAPSULE_GUEST_HELPER || DEFAULT_GUEST_HELPER_PATH;
  const hostnameFile = env.CAPSULE_HOSTNAME_FILE || DEFAULT_HOSTNAME_FILE;

  for (let index = 0; index < argv.length; index += 1) {
    const arg = argv[index] ?? '';
    const [flag, inlineValue] = arg.startsWith('--') && arg.includes('=') ? arg.split(/=(.*)/s, 2) : [arg, undefined];
    const value = (): string => {
      const next = inlineValue ?? argv[++index];
      if (next === undefined || next === '') throw new UsageError(`${flag} needs a value`);
      return next;
    };
    switch (flag) {
      case '-h':
      case '--help':
        return 'help';
      case '--listen':
        listen = value();
        break;
      case '--port-path':
        portPath = value();
        break;
      case '--port-name':
        portName = value();
        break;
      case '--default-user':
        defaultUser = value();
        break;
      default:
        throw new UsageError(`unknown argument: ${arg}`);
    }
  }

  if (listen !== undefined) {
    if (portPath !== undefined || portName !== undefined) {
      throw new UsageError('--listen cannot be combined with --port-path or --port-name');
    }
    if (!listen.startsWith('unix:') || listen.length === 'unix:'.length) {
      throw new UsageError(`--listen takes unix:PATH, got '${listen}'`);
    }
    return { transport: { kind: 'unix', path: listen.slice('unix:'.length) }, defaultUser, guestHelperPath, hostnameFile };
  }
  const name = portName ?? (env.CAPSULE_AGENT_PORT || portNameFromKernelCommandLine(kernelCommandLine()) || AGENT_PORT_NAME);
  return { transport: { kind: 'virtio-port', portName: name, devicePath: portPath }, defaultUser, guestHelperPath, hostnameFile };
}
