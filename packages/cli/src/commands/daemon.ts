// `capsule daemon start|stop|status|config|install|uninstall`: manage the
// capsuled that serves this socket. start launches it in the background and
// waits until it answers; stop asks it for its pid and SIGTERMs it; status
// exits 1 when none answers; config prints the settings it runs with; install
// and uninstall make it a systemd service or stop it being one.
import fs from 'node:fs';
import path from 'node:path';
import { CapsuleClient } from '@capsule/sdk';
import { DEFAULT_DAEMON_CONFIG_FILE, defaultSocketPath } from '@capsule/protocol';
import { Command } from 'commander';
import { CliContext } from '../cli-context.js';
import { daemonInfoIfRunning, daemonLogPath, startDaemon, stateDir, stopDaemon } from '../daemon-process.js';
import { EXIT_CHECK_FAILED } from '../exit-codes.js';
import { describeDaemon, renderTable } from '../human-format.js';
import { addOutputOptions, isHumanOutput, printOutput, type OutputOptions } from '../output-format.js';
import { addGlobalOptions } from './global-options.js';

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
    addOutputOptions(new Command('status'))
      .description('Show whether capsuled runs, and how (exits 1 when it does not; -o json prints {"running": false})')
      .action(async (options: OutputOptions, command: Command) => {
        const context = CliContext.of(command);
        const info = await daemonInfoIfRunning(context.client());
        // The service is this host's default daemon; a private one on another socket has nothing to do with it.
        const service =
          isHumanOutput(options) && !context.remote && context.socketPath === defaultSocketPath({}) ? await describeService() : undefined;
        printOutput(info ? { running: true, ...info } : { running: false }, options, {
          table: () =>
            info ? describeDaemon(info, Date.now(), service) : `capsuled is not running\n${service ? `Service: ${service}\n` : ''}`,
        });
        if (!info) process.exitCode = EXIT_CHECK_FAILED;
      }),
  );
}

function configCommand(): Command {
  return addGlobalOptions(
    addOutputOptions(new Command('config'))
      .description("Print the running capsuled's settings: each value, where it came from and what it resolved to")
      .action(async (options: OutputOptions, command: Command) => {
        const client = CliContext.of(command).client();
        if (!(await daemonInfoIfRunning(client)))
          command.error(
            `error: capsuled is not running, so it has no settings yet; it reads them from its environment, then ${DEFAULT_DAEMON_CONFIG_FILE} (docs/configuration.md)`,
            { exitCode: EXIT_CHECK_FAILED, code: 'capsule.daemon_down' },
          );
        const report = await client.daemonSettings();
        printOutput(report, options, {
          table: () =>
            `${report.configFile ? `Config file: ${report.configFile}\n` : 'Config file: none read\n'}` +
            renderTable(
              ['SETTING', 'VALUE', 'SOURCE'],
              report.settings.map((s) => [
                s.name,
                `${s.value === '' ? '(unset)' : s.value}${s.effective !== undefined ? ` -> ${s.effective}` : ''}`,
                s.source,
              ]),
            ),
        });
      }),
  );
}

/** `capsuled.service: enabled, active`, or how to get there; loads the service code only when asked. */
async function describeService(): Promise<string> {
  const { SERVICE_NAME, serviceInstalled, systemdRunning, systemctlSays } = await import('../service-install.js');
  if (!serviceInstalled('/')) return 'not installed (`capsule daemon install` makes capsuled a systemd service)';
  if (!systemdRunning()) return `${SERVICE_NAME} installed, but systemd is not running on this host`;
  return `${SERVICE_NAME} ${systemctlSays('is-enabled') ? 'enabled' : 'disabled'}, ${systemctlSays('is-active') ? 'active' : 'inactive (`systemctl start capsuled`)'}`;
}

interface InstallOptions {
  root: string;
  dryRun?: boolean;
}

const ACTION_WORDS = {
  create: 'Wrote',
  update: 'Updated',
  unchanged: 'Unchanged',
  keep: 'Kept (already there, never overwritten)',
} as const;

function installCommand(): Command {
  return addGlobalOptions(
    new Command('install')
      .description('Make capsuled a systemd service: write its unit and config file, then enable and start it')
      .option('--dry-run', 'print the files it would write and the commands it would run; change nothing')
      .option('--root <dir>', 'install under DIR instead of / (packaging, tests); systemctl is then not run', '/')
      .action(async (options: InstallOptions, command: Command) => {
        const context = CliContext.of(command);
        const { planInstall, writeInstall, systemctl, systemctlSays, SERVICE_NAME } = await import('../service-install.js');
        const plan = planInstall(path.resolve(options.root));
        const reload = ['daemon-reload'];
        const enableNow = ['enable', '--now', SERVICE_NAME];
        if (options.dryRun) {
          for (const file of plan.files) {
            const mode = file.mode.toString(8).padStart(4, '0');
            if (file.action === 'keep' || file.action === 'unchanged') process.stdout.write(`# ${file.path}: ${file.action}\n`);
            else
              process.stdout.write(`# ${file.path} (${file.action === 'create' ? 'new' : 'replaced'}, mode ${mode}):\n${file.content}\n`);
          }
          const commands = plan.systemd
            ? [reload, enableNow].map((args) => `systemctl ${args.join(' ')}`).join('\n')
            : '(none: systemd is not running here)';
          process.stdout.write(`# then it would run:\n${commands}\n`);
          return;
        }
        writeInstall(plan);
        for (const file of plan.files) process.stdout.write(`${ACTION_WORDS[file.action]} ${file.path}\n`);
        if (!plan.systemd) {
          process.stdout.write(
            plan.root === '/'
              ? 'systemd is not running on this host (PID 1 is not systemd), so the service was not started. Where it runs:\n' +
                  '  systemctl daemon-reload && systemctl enable --now capsuled\n' +
                  'Until then, capsule starts capsuled by itself when a command needs it.\n'
              : `Installed under ${plan.root}; systemctl was not run.\n`,
          );
          return;
        }
        systemctl(reload);
        const wasActive = systemctlSays('is-active');
        if (!wasActive) {
          // A daemon the CLI started holds the state folder; the service's would exit "already running". Its sandboxes keep running.
          const running = await daemonInfoIfRunning(new CapsuleClient({ socketPath: defaultSocketPath({}) }));
          if (running)
            await context.progress.step(
              `Stopping the capsuled started outside the service (pid ${running.pid}); its sandboxes keep running`,
              () => stopDaemon(running),
            );
        }
        systemctl(enableNow);
        if (wasActive && plan.files[0]?.action === 'update')
          process.stdout.write('The unit changed: `systemctl restart capsuled` applies it (sandboxes keep running).\n');
        process.stdout.write('capsuled is a systemd service: `systemctl status capsuled`, logs with `journalctl -u capsuled`.\n');
      }),
  );
}

function uninstallCommand(): Command {
  return addGlobalOptions(
    new Command('uninstall')
      .description('Stop and disable the capsuled service and remove its unit; keeps its config file, state and running sandboxes')
      .option('--root <dir>', 'uninstall from under DIR instead of / (systemctl is then not run)', '/')
      .action(async (options: { root: string }) => {
        const { SERVICE_NAME, systemctl, systemdRunning, unitPath } = await import('../service-install.js');
        const root = path.resolve(options.root);
        const unit = unitPath(root);
        if (!fs.existsSync(unit)) {
          process.stdout.write(`${SERVICE_NAME} is not installed (no ${unit})\n`);
          return;
        }
        const systemd = root === '/' && systemdRunning();
        // Stopping the service stops capsuled alone (KillMode=process): its sandboxes keep running.
        if (systemd) systemctl(['disable', '--now', SERVICE_NAME]);
        fs.rmSync(unit);
        if (systemd) systemctl(['daemon-reload']);
        const config = path.join(root, DEFAULT_DAEMON_CONFIG_FILE);
        const kept = fs.existsSync(config) ? `${config} (capsuled still reads it) and ` : '';
        process.stdout.write(
          `Removed ${unit}${systemd ? '' : ' (systemd is not running here: nothing to stop)'}. Kept ${kept}the state in ${stateDir()}.\n` +
            'Running sandboxes keep running; the next capsule command starts capsuled by itself, and it adopts them.\n',
        );
      }),
  );
}

export function daemonCommand(): Command {
  return new Command('daemon')
    .description('Start, stop or check capsuled, the host daemon, or install it as a systemd service')
    .addCommand(startCommand())
    .addCommand(stopCommand())
    .addCommand(statusCommand())
    .addCommand(configCommand())
    .addCommand(installCommand())
    .addCommand(uninstallCommand());
}
