// `capsule dashboard`: opens the web dashboard signed in, on this host. Asks
// the daemon (through its unix socket: only the local user may) for a one-time
// sign-in link, prints it and opens it in the desktop's browser. The link
// works once, within a minute; the browser's session lives in the daemon's
// memory. Never prints or passes an API key.
import { spawn } from 'node:child_process';
import { CapsuleError, type DaemonInfo } from '@capsule/sdk';
import { Command } from 'commander';
import { CliContext } from '../cli-context.js';
import { addGlobalOptions } from './global-options.js';

export function dashboardCommand(): Command {
  return addGlobalOptions(
    new Command('dashboard')
      .description('Open the web dashboard, signed in by a one-time link (capsuled must listen on TCP)')
      .option('--no-open', 'print the link without opening a browser')
      .action(async (options: { open: boolean }, command: Command) => {
        const client = await CliContext.of(command).daemonClient();
        const origin = dashboardOrigin(await client.info());
        const { path } = await client.createDashboardSignInToken();
        const url = `${origin}${path}`;
        process.stdout.write(`${url}\n(the link signs in once, within a minute)\n`);
        if (options.open) openInBrowser(url);
      }),
  );
}

/** Where a browser on this host reaches the daemon: its TCP address, a wildcard one read as loopback. */
export function dashboardOrigin(info: Pick<DaemonInfo, 'tcpAddress' | 'tls'>): string {
  if (!info.tcpAddress)
    throw new CapsuleError('invalid_argument', 'capsuled does not listen on TCP, so a browser cannot reach it', {
      hint: 'start it with CAPSULE_LISTEN (e.g. CAPSULE_LISTEN=127.0.0.1:8443), then run `capsule dashboard` again',
    });
  const host = info.tcpAddress.replace(/^0\.0\.0\.0:/, '127.0.0.1:').replace(/^\[::\]:/, '[::1]:');
  return `${info.tls ? 'https' : 'http'}://${host}`;
}

/** The desktop's opener, when there is a desktop; a failure leaves the printed link to be opened by hand. */
function openInBrowser(url: string): void {
  const opener = process.platform === 'darwin' ? 'open' : process.env.DISPLAY || process.env.WAYLAND_DISPLAY ? 'xdg-open' : undefined;
  if (!opener) return;
  const child = spawn(opener, [url], { stdio: 'ignore', detached: true });
  child.on('error', () => undefined);
  child.unref();
}
