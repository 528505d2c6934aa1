// `capsule daemon start|stop|status`: manage the capsuled that serves this
// socket. start launches it in the background and waits until it answers; stop
// asks it for its pid and SIGTERMs it; status exits 1 when none answers.
import { Command } from 'commander';
import { CliContext } from '../cli-context.js';
import { daemonInfoIfRunning, daemonLogPath, startDaemon, stopDaemon } from '../daemon-process.js';
import { EXIT_CHECK_FAILED } from '../exit-codes.js';
import { describeDaemon } from '../human-format.js';
import { addGlobalOptions } from './global-options.js';
import { printJson } from './print-json.js';

function startCommand(): Command {
  return addGlobalOptions(
    new Command('start')
      .description('Start capsuled in the background and wait until it answers')
      .action(async (_options: object, command: Command) => {
        const context = CliContext.of(command);
        const client = context.localClient();
        const running = await daemonInfoIfRunning(client);
        if (running) {
          process.stdout.write(`capsuled is already running (pid ${running.pid})\n`);
          return;
        }
        await context.progress.step('Starting capsuled', () => startDaemon(client, { socketPath: context.flags.socket }));
        const info = await client.info();
        process.stdout.write(`capsuled ${info.version} is running (pid ${info.pid}, ${info.accel}); log: ${daemonLogPath()}\n`);
      }),
  );
}

function stopCommand(): Command {
  return addGlobalOptions(
    new Command('stop')
      .description('Stop capsuled (SIGTERM) and wait until it has exited')
      .action(async (_options: object, command: Command) => {
        const context = CliContext.of(command);
        const info = await daemonInfoIfRunning(context.localClient());
        if (!info) {
          process.stdout.write('capsuled is not running\n');
          return;
        }
        await context.progress.step(`Stopping capsuled (pid ${info.pid})`, () => stopDaemon(info));
        process.stdout.write(`capsuled (pid ${info.pid}) stopped\n`);
      }),
  );
}

function statusCommand(): Command {
  return addGlobalOptions(
    new Command('status')
      .description('Show whether capsuled runs, and how (exits 1 when it does not)')
      .option('--json', 'print the daemon info as JSON ({"running": false} when it does not run)')
      .action(async (options: { json?: boolean }, command: Command) => {
        const context = CliContext.of(command);
        const info = await daemonInfoIfRunning(context.client());
        if (options.json) printJson(info ? { running: true, ...info } : { running: false });
        else process.stdout.write(info ? describeDaemon(info) : 'capsuled is not running\n');
        if (!info) process.exitCode = EXIT_CHECK_FAILED;
      }),
  );
}

export function daemonCommand(): Command {
  return new Command('daemon')
    .description('Start, stop or check capsuled, the host daemon')
    .addCommand(startCommand())
    .addCommand(stopCommand())
    .addCommand(statusCommand());
}
