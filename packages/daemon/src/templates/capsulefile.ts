// The Capsulefile: a small Dockerfile subset that builds a template. Parsing
// only: one instruction per line (a trailing `\` continues it), `#` comments;
// FROM first and once. Pure: no files, no network.
import { CapsuleError } from '../errors.js';

export type BuildStep =
  /** `user`: this step only runs as that user (e2b's runCmd with a user; a Capsulefile says USER instead). */
  | { kind: 'RUN'; command: string; user?: string }
  | { kind: 'COPY'; source: string; destination: string }
  | { kind: 'ENV'; name: string; value: string }
  | { kind: 'WORKDIR'; path: string }
  | { kind: 'USER'; user: string };

/**
 * A command as an argv: the shell form (`START node server.js`) runs under
 * `/bin/sh -c`, the exec form (`START ["node", "server.js"]`) as written.
 */
export type CommandLine = string[];

/** START and READY: what the template's VM runs before its warm snapshot is taken. */
export interface ServiceInstructions {
  /** `imageDefault`: a bare `START`, the FROM image's Entrypoint + Cmd. */
  start?: { cmd: CommandLine } | { imageDefault: true };
  ready?: { cmd: CommandLine; timeoutMs: number };
}

export interface Capsulefile extends ServiceInstructions {
  from: string;
  steps: BuildStep[];
}

/** How long READY is retried unless `READY --timeout=…` says otherwise. */
export const DEFAULT_READY_TIMEOUT_MS = 60_000;
export const MAX_READY_TIMEOUT_MS = 30 * 60_000;

const MAX_BYTES = 256 * 1024;
export const MAX_BUILD_STEPS = 256;
/** What ENV and USER accept; other front doors to the builder (the e2b API) check their steps with these too. */
export const ENV_NAME = /^[A-Za-z_][A-Za-z0-9_]*$/;
export const USER_NAME = /^[A-Za-z0-9_][A-Za-z0-9_.-]{0,31}$/;

function bad(line: number, message: string): CapsuleError {
  return new CapsuleError('invalid_argument', `Capsulefile line ${line}: ${message}`, {
    hint: 'instructions: FROM image|template, RUN, COPY src dest, ENV K=V, WORKDIR /path, USER name, START [cmd], READY [--timeout=60s] cmd',
  });
}

export function parseCapsulefile(text: string): Capsulefile {
  if (Buffer.byteLength(text) > MAX_BYTES) throw new CapsuleError('invalid_argument', `the Capsulefile is larger than ${MAX_BYTES} bytes`);
  const logical: { line: number; text: string }[] = [];
  let pending: { line: number; text: string } | undefined;
  for (const [index, raw] of text.split('\n').entries()) {
    const trimmed = raw.trim();
    if (pending === undefined && (trimmed === '' || trimmed.startsWith('#'))) continue;
    const continued = trimmed.endsWith('\\');
    const piece = continued ? trimmed.slice(0, -1) : trimmed;
    pending = pending ? { line: pending.line, text: `${pending.text} ${piece}` } : { line: index + 1, text: piece };
    if (!continued) {
      logical.push(pending);
      pending = undefined;
    }
  }
  if (pending) logical.push(pending);

  let from: string | undefined;
  const steps: BuildStep[] = [];
  const service: ServiceInstructions = {};
  const seen: Partial<Record<'START' | 'READY', true>> = {};
  for (const { line, text: instruction } of logical) {
    const match = /^(\w+)(?:\s+(.*))?$/s.exec(instruction);
    const keyword = match?.[1]?.toUpperCase();
    const argument = match?.[2]?.trim() ?? '';
    // A bare START is the only instruction without an argument.
    if (!match || (argument === '' && keyword !== 'START')) throw bad(line, `"${instruction}" has no argument`);
    if (keyword === 'FROM') {
      if (from !== undefined) throw bad(line, 'FROM may appear only once');
      if (/\s/.test(argument)) throw bad(line, 'FROM takes one image reference or template name');
      from = argument;
      continue;
    }
    if (from === undefined) throw bad(line, 'the first instruction must be FROM');
    if (keyword === 'START' || keyword === 'READY') {
      if (keyword in seen) throw bad(line, `${keyword} may appear only once`);
      seen[keyword] = true;
      if (keyword === 'START') service.start = argument === '' ? { imageDefault: true } : { cmd: commandLine(line, argument) };
      else service.ready = readyInstruction(line, argument);
      continue;
    }
    switch (keyword) {
      case 'RUN':
        steps.push({ kind: 'RUN', command: argument });
        break;
      case 'COPY': {
        const parts = argument.split(/\s+/);
        if (parts.length !== 2) throw bad(line, 'COPY takes a source in the build folder and a destination');
        if (!parts[1]!.startsWith('/')) throw bad(line, 'the COPY destination must be an absolute path');
        steps.push({ kind: 'COPY', source: parts[0]!, destination: parts[1]! });
        break;
      }
      case 'ENV': {
        const eq = argument.indexOf('=');
        const [name, value] = eq > 0 ? [argument.slice(0, eq), argument.slice(eq + 1)] : argument.split(/\s+(.*)/s);
        if (!name || value === undefined || !ENV_NAME.test(name)) throw bad(line, 'ENV takes NAME=value');
        steps.push({ kind: 'ENV', name, value: value.replace(/^"(.*)"$/s, '$1') });
        break;
      }
      case 'WORKDIR':
        if (!argument.startsWith('/')) throw bad(line, 'WORKDIR must be an absolute path');
        steps.push({ kind: 'WORKDIR', path: argument });
        break;
      case 'USER':
        if (!USER_NAME.test(argument)) throw bad(line, `"${argument}" is not a user name`);
        steps.push({ kind: 'USER', user: argument });
        break;
      default:
        throw bad(line, `unknown instruction ${keyword}`);
    }
    if (steps.length > MAX_BUILD_STEPS) throw bad(line, `more than ${MAX_BUILD_STEPS} steps`);
  }
  if (from === undefined)
    throw new CapsuleError('invalid_argument', 'the Capsulefile has no FROM', { hint: 'start it with FROM image-or-template' });
  return { from, steps, ...service };
}

/** The exec form (a JSON array of strings) as is; anything else runs under `/bin/sh -c`. */
export function commandLine(line: number, text: string): CommandLine {
  if (!text.startsWith('[')) return ['/bin/sh', '-c', text];
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch {
    throw bad(line, 'a command starting with [ must be a JSON array of strings, e.g. ["node", "server.js"]');
  }
  if (!Array.isArray(parsed) || parsed.length === 0 || !parsed.every((a) => typeof a === 'string') || parsed[0] === '') {
    throw bad(line, 'the exec form must be a non-empty JSON array of strings');
  }
  return parsed as string[];
}

function readyInstruction(line: number, argument: string): { cmd: CommandLine; timeoutMs: number } {
  let timeoutMs = DEFAULT_READY_TIMEOUT_MS;
  let rest = argument;
  const option = /^--timeout=(\S+)\s+(.*)$/s.exec(argument);
  if (option) {
    const duration = /^(\d+)(ms|s|m)$/.exec(option[1]!);
    timeoutMs = duration ? Number(duration[1]) * { ms: 1, s: 1000, m: 60_000 }[duration[2] as 'ms' | 's' | 'm'] : NaN;
    if (!(timeoutMs >= 1000 && timeoutMs <= MAX_READY_TIMEOUT_MS))
      throw bad(line, `READY --timeout takes a duration from 1s to 30m, e.g. 90s, got ${option[1]}`);
    rest = option[2]!.trim();
  } else if (argument.startsWith('--')) {
    throw bad(line, 'READY takes --timeout=DURATION (e.g. --timeout=90s) and then the command');
  }
  if (rest === '') throw bad(line, 'READY needs a command');
  return { cmd: commandLine(line, rest), timeoutMs };
}
