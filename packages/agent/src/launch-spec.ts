// Turns a StartRequest's ProcessConfig into what to spawn: the executable
// found on the merged env's PATH, the working directory, the environment.
// Validation only; must never spawn anything, and every refusal is a Connect
// error with envd's code (InvalidArgument) and wording.

import { accessSync, existsSync, constants as fsConstants, statSync } from 'node:fs';
import { delimiter, resolve } from 'node:path';
import { Code, ConnectError } from '@connectrpc/connect';
import { expandAndResolvePath, InvalidPathError } from './user-path.js';
import type { UnixUser } from './users.js';

export const DEFAULT_PATH = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';

export interface LaunchSpec {
  /** Absolute path of the executable to run. */
  file: string;
  /** argv[0] as the client wrote the command. */
  argv0: string;
  args: string[];
  cwd: string;
  env: Record<string, string>;
}

export interface LaunchRequest {
  cmd: string;
  args: string[];
  envs: Record<string, string>;
  cwd?: string | undefined;
}

/** What the agent adds to every launch (POST /init sets them). */
export interface LaunchDefaults {
  envs?: Record<string, string>;
  /** cwd for requests that name none; unset: the user's home. */
  workdir?: string | undefined;
}

/** The process's environment: agent defaults, then the request's (which win). */
export function buildProcessEnv(
  user: UnixUser,
  requestEnvs: Record<string, string>,
  agentEnvs: Record<string, string> = {},
): Record<string, string> {
  return {
    PATH: DEFAULT_PATH,
    HOME: user.home,
    USER: user.name,
    LOGNAME: user.name,
    LANG: 'C.UTF-8',
    ...agentEnvs,
    ...requestEnvs,
  };
}

/** envd's rules: unset means the default workdir (else home), `~` means home, relative means under home. */
export function resolveWorkingDirectory(cwd: string | undefined, user: UnixUser, defaultWorkdir?: string): string {
  let absolute: string;
  try {
    absolute = expandAndResolvePath(cwd ?? '', user, defaultWorkdir);
  } catch (error) {
    if (error instanceof InvalidPathError) throw new ConnectError(error.message, Code.InvalidArgument);
    throw error;
  }
  let isDirectory = false;
  try {
    isDirectory = statSync(absolute).isDirectory();
  } catch {
    throw new ConnectError(`cwd '${absolute}' does not exist`, Code.InvalidArgument);
  }
  if (!isDirectory) throw new ConnectError(`cwd '${absolute}' is not a directory`, Code.InvalidArgument);
  return absolute;
}

function isExecutableFile(path: string): boolean {
  try {
    if (!statSync(path).isFile()) return false;
    accessSync(path, fsConstants.X_OK);
    return true;
  } catch {
    return false;
  }
}

/**
 * Where `cmd` is found: as given (relative to cwd) when it has a slash,
 * otherwise the first executable in the env's PATH, like execvp.
 */
export function findExecutable(cmd: string, pathVariable: string, cwd: string): string | undefined {
  if (cmd.includes('/')) {
    const path = resolve(cwd, cmd);
    return isExecutableFile(path) ? path : undefined;
  }
  for (const dir of pathVariable.split(delimiter)) {
    const candidate = resolve(cwd, dir === '' ? '.' : dir, cmd);
    if (isExecutableFile(candidate)) return candidate;
  }
  return undefined;
}

export function describeCommand(request: Pick<LaunchRequest, 'cmd' | 'args'>): string {
  return [request.cmd, ...request.args].join(' ');
}

export function buildLaunchSpec(request: LaunchRequest, user: UnixUser, defaults: LaunchDefaults = {}): LaunchSpec {
  if (request.cmd === '') throw new ConnectError('process.cmd must not be empty', Code.InvalidArgument);
  if (request.cmd.includes('\0') || request.args.some((arg) => arg.includes('\0'))) {
    throw new ConnectError('process.cmd and process.args must not contain NUL bytes', Code.InvalidArgument);
  }
  for (const [key, value] of Object.entries(request.envs)) {
    if (key === '' || key.includes('=') || key.includes('\0') || value.includes('\0')) {
      throw new ConnectError(`invalid environment variable name or value: '${key}'`, Code.InvalidArgument);
    }
  }
  const cwd = resolveWorkingDirectory(request.cwd, user, defaults.workdir);
  const env = buildProcessEnv(user, request.envs, defaults.envs);
  const file = findExecutable(request.cmd, env.PATH ?? DEFAULT_PATH, cwd);
  if (file === undefined) {
    // Go's words, as envd answers: clients tell a missing program from one that cannot run by them (exit 127 / 126).
    const reason = !request.cmd.includes('/')
      ? `exec: "${request.cmd}": executable file not found in $PATH`
      : existsSync(resolve(cwd, request.cmd))
        ? `fork/exec ${request.cmd}: permission denied`
        : `fork/exec ${request.cmd}: no such file or directory`;
    throw new ConnectError(`error starting process '${describeCommand(request)}': ${reason}`, Code.InvalidArgument);
  }
  return { file, argv0: request.cmd, args: request.args, cwd, env };
}
