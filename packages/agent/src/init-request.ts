// Parses and validates the JSON body of POST /init (envd's fields plus
// Capsule's hostname and entropy) into values ready to apply. Pure: must never
// apply anything, so a request with one bad field changes nothing at all.

import { agentInitLimits, type AgentInitRequest } from '@capsule/protocol/agent';
import { MAX_PATH_BYTES } from './user-path.js';

export interface InitSettings {
  envVars: Record<string, string> | undefined;
  /** undefined clears the token, as an envd /init without one does. */
  accessToken: string | undefined;
  /** The host's time in nanoseconds since the epoch. */
  timestampNs: bigint | undefined;
  defaultUser: string | undefined;
  defaultWorkdir: string | undefined;
  hostname: string | undefined;
  /** Lower-case hex, ready for `capsule-guest-helper reseed`. */
  entropyHex: string | undefined;
}

export class InitRequestError extends Error {
  override name = 'InitRequestError';
  constructor(
    message: string,
    readonly status: 400 | 413 = 400,
  ) {
    super(message);
  }
}

// RFC 1123 label: what /proc/sys/kernel/hostname and DNS both accept.
const HOSTNAME = /^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/;
// Portable user names (useradd's rule, plus Samba's trailing '$').
const USER_NAME = /^[A-Za-z0-9_][A-Za-z0-9_.-]{0,31}\$?$/;
const HEX = /^[0-9a-fA-F]*$/;
const RFC3339 = /^(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?(?:([Zz])|([+-])(\d{2}):(\d{2}))$/;

/** RFC 3339 (what Go's time.Time marshals to) as nanoseconds since the epoch. */
export function parseRfc3339Nanos(text: string): bigint | undefined {
  const match = RFC3339.exec(text);
  if (!match) return undefined;
  const [year, month, day, hour, minute, second] = match.slice(1, 7).map(Number) as [number, number, number, number, number, number];
  const fraction = match[7] ?? '';
  if (year < 1970 || month < 1 || month > 12 || day < 1 || hour > 23 || minute > 59 || second > 59) return undefined;
  const utcMs = Date.UTC(year, month - 1, day, hour, minute, second);
  // Date.UTC rolls 31 April over into May: a date that does not exist is invalid.
  if (new Date(utcMs).getUTCDate() !== day) return undefined;
  let offsetMinutes = 0;
  if (match[9]) {
    const offsetHours = Number(match[10]);
    const offsetMins = Number(match[11]);
    if (offsetHours > 23 || offsetMins > 59) return undefined;
    offsetMinutes = (offsetHours * 60 + offsetMins) * (match[9] === '-' ? -1 : 1);
  }
  const seconds = BigInt(utcMs / 1000 - offsetMinutes * 60);
  if (seconds < 0n) return undefined;
  return seconds * 1_000_000_000n + BigInt(fraction.padEnd(9, '0'));
}

function optionalString(body: Record<string, unknown>, field: keyof AgentInitRequest): string | undefined {
  const value = body[field];
  if (value === undefined || value === null) return undefined;
  if (typeof value !== 'string') throw new InitRequestError(`${field} must be a string`);
  return value;
}

function parseEnvVars(value: unknown): Record<string, string> | undefined {
  if (value === undefined || value === null) return undefined;
  if (typeof value !== 'object' || Array.isArray(value)) throw new InitRequestError('envVars must be an object of strings');
  const entries = Object.entries(value as Record<string, unknown>);
  if (entries.length > agentInitLimits.maxEnvVars) {
    throw new InitRequestError(`envVars has ${entries.length} entries; at most ${agentInitLimits.maxEnvVars} are accepted`);
  }
  const vars: Record<string, string> = {};
  for (const [key, entry] of entries) {
    if (typeof entry !== 'string') throw new InitRequestError(`envVars.${key} must be a string`);
    if (key === '' || key.includes('=') || key.includes('\0') || Buffer.byteLength(key) > agentInitLimits.maxEnvVarNameBytes) {
      throw new InitRequestError(`envVars has an invalid name: '${key.slice(0, 64)}'`);
    }
    if (entry.includes('\0') || Buffer.byteLength(entry) > agentInitLimits.maxEnvVarValueBytes) {
      throw new InitRequestError(`envVars.${key} must have no NUL bytes and at most ${agentInitLimits.maxEnvVarValueBytes} bytes`);
    }
    vars[key] = entry;
  }
  return vars;
}

export function parseInitRequest(body: Buffer): InitSettings {
  let parsed: unknown = {};
  // envd accepts an empty body (io.EOF) as "nothing to set".
  if (body.toString('utf8').trim() !== '') {
    try {
      parsed = JSON.parse(body.toString('utf8'));
    } catch (error) {
      throw new InitRequestError(`request body is not valid JSON: ${(error as Error).message}`);
    }
  }
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) {
    throw new InitRequestError('request body must be a JSON object');
  }
  const request = parsed as Record<string, unknown>;

  const accessToken = optionalString(request, 'accessToken');
  if (accessToken !== undefined && Buffer.byteLength(accessToken) > agentInitLimits.maxAccessTokenBytes) {
    throw new InitRequestError(`accessToken is longer than ${agentInitLimits.maxAccessTokenBytes} bytes`);
  }

  const timestampText = optionalString(request, 'timestamp');
  const timestampNs = timestampText === undefined ? undefined : parseRfc3339Nanos(timestampText);
  if (timestampText !== undefined && timestampNs === undefined) {
    throw new InitRequestError(`timestamp must be an RFC 3339 date-time after 1970, got '${timestampText.slice(0, 64)}'`);
  }

  const defaultUser = optionalString(request, 'defaultUser') || undefined;
  if (defaultUser !== undefined && !USER_NAME.test(defaultUser)) {
    throw new InitRequestError(`defaultUser '${defaultUser.slice(0, 64)}' is not a valid user name`);
  }

  const defaultWorkdir = optionalString(request, 'defaultWorkdir') || undefined;
  if (defaultWorkdir !== undefined && (defaultWorkdir.includes('\0') || Buffer.byteLength(defaultWorkdir) > MAX_PATH_BYTES)) {
    throw new InitRequestError(`defaultWorkdir must have no NUL bytes and at most ${MAX_PATH_BYTES} bytes`);
  }

  const hostname = optionalString(request, 'hostname');
  if (hostname !== undefined && !HOSTNAME.test(hostname)) {
    throw new InitRequestError(
      `hostname '${hostname.slice(0, 64)}' is invalid: use 1-63 of a-z, 0-9 and '-', not starting or ending with '-'`,
    );
  }

  const entropy = optionalString(request, 'entropy');
  if (entropy !== undefined) {
    const bytes = entropy.length / 2;
    if (
      !HEX.test(entropy) ||
      entropy.length % 2 !== 0 ||
      bytes < agentInitLimits.minEntropyBytes ||
      bytes > agentInitLimits.maxEntropyBytes
    ) {
      throw new InitRequestError(`entropy must be hex of ${agentInitLimits.minEntropyBytes}-${agentInitLimits.maxEntropyBytes} bytes`);
    }
  }

  return {
    envVars: parseEnvVars(request.envVars),
    accessToken,
    timestampNs,
    defaultUser,
    defaultWorkdir,
    hostname,
    entropyHex: entropy?.toLowerCase(),
  };
}
