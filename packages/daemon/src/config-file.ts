// capsuled's config file (/etc/capsule/capsuled.env, or $CAPSULE_CONFIG_FILE):
// CAPSULE_*=VALUE lines, parsed by dotenv, copied into the environment under
// the variables set there already, so that the rest of the daemon reads one
// place. It never reads a file that anyone but root could have written, and
// never takes a name that is not a known setting.
import fs from 'node:fs';
import path from 'node:path';
import { DAEMON_SETTINGS, DEFAULT_DAEMON_CONFIG_FILE } from '@capsule/protocol';
import dotenv from 'dotenv';

export const CONFIG_FILE_ENV = 'CAPSULE_CONFIG_FILE';

const KNOWN_SETTINGS = new Set(DAEMON_SETTINGS.map((setting) => setting.name));

/** A config file capsuled will not start with: the message names the file, and the line when one is at fault. */
export class ConfigFileError extends Error {
  override name = 'ConfigFileError';
}

/**
 * Reads the config file `env` points at (CAPSULE_CONFIG_FILE; unset:
 * `defaultFile`, skipped when absent; empty: none) and sets each of its
 * settings in `env` unless `env` has it already: the process environment wins.
 * Returns the file read, if any.
 */
export function applyConfigFile(env: NodeJS.ProcessEnv = process.env, defaultFile = DEFAULT_DAEMON_CONFIG_FILE): string | undefined {
  const configured = env[CONFIG_FILE_ENV];
  if (configured === '') return undefined;
  const file = configured ?? defaultFile;
  let text: string;
  try {
    checkOnlyRootCanWrite(file);
    text = fs.readFileSync(file, 'utf8');
  } catch (err) {
    // The default file is optional; one named on purpose is not.
    if ((err as NodeJS.ErrnoException).code === 'ENOENT' && configured === undefined) return undefined;
    if (err instanceof ConfigFileError) throw err;
    throw new ConfigFileError(`cannot read the config file ${file}: ${(err as Error).message}`);
  }
  for (const [name, value] of Object.entries(parseConfigFile(text, file))) {
    if (env[name] === undefined) env[name] = value;
  }
  return file;
}

/**
 * The settings in a config file's text. One setting a line, as dotenv reads it
 * (quotes, `export`, trailing `# comments`); blank and `#` lines are skipped.
 * A line dotenv makes nothing of, or a name that is not a setting, is an error:
 * a typo must not silently leave a default in place. An empty value is no setting.
 */
export function parseConfigFile(text: string, file: string): Record<string, string> {
  const settings: Record<string, string> = {};
  const lines = text.split(/\r?\n/);
  for (const [index, line] of lines.entries()) {
    if (line.trim() === '' || line.trim().startsWith('#')) continue;
    const where = `${file} line ${index + 1}`;
    const parsed = Object.entries(dotenv.parse(line));
    const [entry] = parsed;
    if (entry === undefined || parsed.length > 1)
      throw new ConfigFileError(`${where}: expected NAME=VALUE (one setting a line; # starts a comment)`);
    const [name, value] = entry;
    if (!KNOWN_SETTINGS.has(name))
      throw new ConfigFileError(
        `${where}: ${name} is not a capsuled setting; the file takes only the CAPSULE_* settings listed in docs/configuration.md`,
      );
    if (name in settings) throw new ConfigFileError(`${where}: ${name} is set twice in this file`);
    if (value !== '') settings[name] = value;
  }
  return settings;
}

/**
 * The file can hold API keys and names the binaries capsuled runs as root, so
 * it and its folder must be root's: owned by root (or by the user capsuled runs
 * as) and writable by no one else.
 */
function checkOnlyRootCanWrite(file: string): void {
  const real = fs.realpathSync(file);
  const owners = new Set([0, process.getuid?.() ?? 0]);
  for (const target of [real, path.dirname(real)]) {
    const stat = fs.statSync(target);
    const mode = (stat.mode & 0o777).toString(8).padStart(4, '0');
    const problem = !owners.has(stat.uid)
      ? `is owned by uid ${stat.uid}`
      : stat.mode & 0o002
        ? `is writable by everyone (mode ${mode})`
        : stat.mode & 0o020 && stat.gid !== 0
          ? `is writable by group ${stat.gid} (mode ${mode})`
          : undefined;
    if (problem === undefined) continue;
    const fix = target === real ? `chown root:root ${real} && chmod 600 ${real}` : `chown root:root ${target} && chmod 755 ${target}`;
    throw new ConfigFileError(
      `refusing the config file ${file}: ${target} ${problem}, so others could change capsuled's settings; run: ${fix}`,
    );
  }
}
