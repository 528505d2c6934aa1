// Which daemon a client talks to, from its options and the environment: the
// unix socket, or TCP (TLS unless asked for plain) with an API key. The one
// place CAPSULE_HOST and its companions are read, so the SDK and CLI agree.
import fs from 'node:fs';
import { defaultSocketPath } from '@capsule/protocol';
import type { DaemonAddress, TlsTrust } from './daemon-tls.js';
import { InvalidArgumentError } from './errors.js';

export const HOST_ENV = 'CAPSULE_HOST';

export interface AddressOptions {
  socketPath?: string | undefined;
  host?: string | undefined;
  port?: number | undefined;
  tls?: boolean | TlsTrust | undefined;
  apiKey?: string | undefined;
}

/** `https://host:port`, `host:port` (https) or `http://host:port` (plain): what CAPSULE_HOST holds. */
export function parseDaemonUrl(value: string): { host: string; port: number; tls: boolean } {
  const scheme = /^(https?):\/\//.exec(value)?.[1];
  const rest = (scheme ? value.slice(scheme.length + 3) : value).replace(/\/$/, '');
  const match = /^(?:\[([^\]]+)\]|([^:[\]/]+))(?::(\d{1,5}))?$/.exec(rest);
  const tls = scheme !== 'http';
  const port = match?.[3] === undefined ? (tls ? 443 : 80) : Number(match[3]);
  const host = match?.[1] ?? match?.[2];
  if (host === undefined || port < 1 || port > 65535) {
    throw new InvalidArgumentError(
      'invalid_argument',
      `${HOST_ENV} must be https://host:port (or http://host:port for a daemon serving plain HTTP), not "${value}"`,
    );
  }
  return { host, port, tls };
}

/** The daemon's address from explicit options first, then the environment. */
export function daemonAddressOf(options: AddressOptions, env: NodeJS.ProcessEnv = process.env): DaemonAddress {
  if (options.socketPath !== undefined) return { socketPath: options.socketPath, apiKey: options.apiKey };
  const fromEnv = options.host === undefined && env[HOST_ENV] ? parseDaemonUrl(env[HOST_ENV]) : undefined;
  if (options.host === undefined && fromEnv === undefined) return { socketPath: defaultSocketPath(env), apiKey: options.apiKey };
  const wantsTls = options.tls !== undefined ? options.tls !== false : (fromEnv?.tls ?? true);
  const apiKey = options.apiKey ?? (env.CAPSULE_API_KEY || undefined);
  const host = options.host ?? fromEnv?.host ?? '';
  const port = options.port ?? fromEnv?.port ?? (wantsTls ? 443 : 80);
  if (!wantsTls) return { host, port, apiKey, tls: false };
  const trust: TlsTrust = typeof options.tls === 'object' ? options.tls : trustFromEnv(env);
  return { host, port, apiKey, tls: trust };
}

function trustFromEnv(env: NodeJS.ProcessEnv): TlsTrust {
  const fingerprintSha256 = env.CAPSULE_TLS_FINGERPRINT || undefined;
  const caFile = env.CAPSULE_TLS_CA || undefined;
  return { ...(fingerprintSha256 ? { fingerprintSha256 } : {}), ...(caFile ? { ca: readCaFile(caFile) } : {}) };
}

function readCaFile(file: string): Buffer {
  try {
    return fs.readFileSync(file);
  } catch (error) {
    throw new InvalidArgumentError(
      'invalid_argument',
      `CAPSULE_TLS_CA names ${file}, which cannot be read (${(error as NodeJS.ErrnoException).code ?? String(error)})`,
      {
        hint: "Copy the daemon's certificate (its path is in `capsule daemon status`) to this host, or pin CAPSULE_TLS_FINGERPRINT instead",
        cause: error,
      },
    );
  }
}
