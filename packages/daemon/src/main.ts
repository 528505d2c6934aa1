#!/usr/bin/env node
// capsuled's entry point. `capsuled` (or `capsuled serve`) runs the daemon;
// `capsuled prepare` builds the guest kit and the base template.
// The config file is applied before the rest of the daemon is imported: some
// modules read their CAPSULE_* variable once, when they are loaded.
import { DAEMON_EXIT_ALREADY_RUNNING } from '@capsule/protocol';
import { loadConfig } from './config.js';
import { applyConfigFile } from './config-file.js';
import { errorMessage } from './errors.js';
import { createLogger } from './log.js';
import { settingsAddedBy } from './settings-report.js';
import { StateDirLocked } from './state-lock.js';

const USAGE = `usage: capsuled [serve]     run the daemon (socket: $CAPSULE_SOCKET or /run/capsule/capsuled.sock)
       capsuled prepare   build or reuse the guest kernel, initramfs, kit and base template
       capsuled --version
settings: CAPSULE_* variables, from the environment, else from $CAPSULE_CONFIG_FILE
          (default /etc/capsule/capsuled.env; see docs/configuration.md)`;

async function main(argv: string[]): Promise<number> {
  const command = argv[0] ?? 'serve';
  if (command === '--help' || command === '-h' || command === 'help') {
    process.stdout.write(`${USAGE}\n`);
    return 0;
  }
  if (command === '--version') {
    const { DAEMON_VERSION } = await import('./daemon.js');
    process.stdout.write(`${DAEMON_VERSION}\n`);
    return 0;
  }
  if (command !== 'serve' && command !== 'prepare') {
    process.stderr.write(`capsuled: unknown command "${command}"\n${USAGE}\n`);
    return 2;
  }
  const envBefore = { ...process.env };
  const configFile = applyConfigFile();
  const config = loadConfigSaying(configFile);
  if (command === 'prepare') {
    const { prepareGuest } = await import('./templates/prepare.js');
    const started = Date.now();
    await prepareGuest(config, (line) => process.stderr.write(`${line}\n`));
    process.stderr.write(`guest kit ready in ${((Date.now() - started) / 1000).toFixed(1)} s\n`);
    return 0;
  }
  const log = createLogger(config.logLevel);
  if (configFile) log.info({ configFile }, 'settings read from the config file (the environment wins over it)');
  const { startDaemon } = await import('./daemon.js');
  const daemon = await startDaemon(config, log, {
    ...(configFile ? { configFile } : {}),
    fromFile: settingsAddedBy(envBefore, process.env),
    env: { ...process.env },
  });
  await new Promise<void>((resolve) => {
    const stop = (signal: string) => {
      log.info({ signal }, 'stopping; sandboxes keep running');
      resolve();
    };
    process.once('SIGTERM', () => stop('SIGTERM'));
    process.once('SIGINT', () => stop('SIGINT'));
  });
  await daemon.stop();
  return 0;
}

/** The daemon's config; a value it refuses says where settings came from when a config file was read too. */
function loadConfigSaying(configFile: string | undefined) {
  try {
    return loadConfig();
  } catch (err) {
    if (configFile === undefined) throw err;
    throw new Error(`${errorMessage(err)} (settings come from the environment, then from ${configFile})`);
  }
}

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (err: unknown) => {
    process.stderr.write(`capsuled: ${err instanceof Error ? err.message : String(err)}\n`);
    // A distinct status, so that the CLI that launched this one waits for the daemon already running.
    process.exit(err instanceof StateDirLocked ? DAEMON_EXIT_ALREADY_RUNNING : 1);
  },
);
