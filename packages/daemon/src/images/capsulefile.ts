// The Capsulefile: a small Dockerfile subset that builds a template. Parsing
// only: one instruction per line (a trailing `\` continues it), `#` comments;
// FROM first and once. Pure: no files, no network.
import { CapsuleError } from '../errors.js';

export type BuildStep =
  | { kind: 'RUN'; command: string }
  | { kind: 'COPY'; source: string; destination: string }
  | { kind: 'ENV'; name: string; value: string }
  | { kind: 'WORKDIR'; path: string }
  | { kind: 'USER'; user: string };

export interface Capsulefile {
  from: string;
  steps: BuildStep[];
}

const MAX_BYTES = 256 * 1024;
const MAX_STEPS = 256;

function bad(line: number, message: string): CapsuleError {
  return new CapsuleError('invalid_argument', `Capsulefile line ${line}: ${message}`, {
    hint: 'instructions: FROM image|template, RUN, COPY src dest, ENV K=V, WORKDIR /path, USER name',
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
  for (const { line, text: instruction } of logical) {
    const match = /^(\w+)\s+(.*)$/s.exec(instruction);
    if (!match) throw bad(line, `"${instruction}" has no argument`);
    const keyword = match[1]!.toUpperCase();
    const argument = match[2]!.trim();
    if (keyword === 'FROM') {
      if (from !== undefined) throw bad(line, 'FROM may appear only once');
      if (/\s/.test(argument)) throw bad(line, 'FROM takes one image reference or template name');
      from = argument;
      continue;
    }
    if (from === undefined) throw bad(line, 'the first instruction must be FROM');
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
        if (!name || value === undefined || !/^[A-Za-z_][A-Za-z0-9_]*$/.test(name)) throw bad(line, 'ENV takes NAME=value');
        steps.push({ kind: 'ENV', name, value: value.replace(/^"(.*)"$/s, '$1') });
        break;
      }
      case 'WORKDIR':
        if (!argument.startsWith('/')) throw bad(line, 'WORKDIR must be an absolute path');
        steps.push({ kind: 'WORKDIR', path: argument });
        break;
      case 'USER':
        if (!/^[A-Za-z0-9_][A-Za-z0-9_.-]{0,31}$/.test(argument)) throw bad(line, `"${argument}" is not a user name`);
        steps.push({ kind: 'USER', user: argument });
        break;
      case 'START':
      case 'READY':
        throw bad(line, `${keyword} is not supported yet`);
      default:
        throw bad(line, `unknown instruction ${keyword}`);
    }
    if (steps.length > MAX_STEPS) throw bad(line, `more than ${MAX_STEPS} steps`);
  }
  if (from === undefined) throw new CapsuleError('invalid_argument', 'the Capsulefile has no FROM', { hint: 'start it with FROM image-or-template' });
  return { from, steps };
}
