// POST /init: what the daemon calls right after restoring a sandbox from a
// snapshot (the guest still has the snapshot's clock, hostname and random
// pool) and envd's orchestrator calls after boot. Validates everything before
// applying anything, runs at most one helper process, never shells out. A
// hostname also retires the SSH server and keys a restored copy holds for another.

import { writeFile } from 'node:fs/promises';
import { agentInitLimits } from '@capsule/protocol/agent';
import type { AgentDefaults } from './agent-defaults.js';
import { GuestHelperError, type GuestHelper } from './guest-helper.js';
import { InitRequestError, parseInitRequest, type InitSettings } from './init-request.js';
import { createLogger, describeError } from './log.js';
import { HttpError, readBoundedBody, sendJsonError, type PlainHttpHandler } from './plain-http.js';
import { retireOtherSshIdentity, type SshIdentityPaths } from './ssh-identity.js';

const log = createLogger('init');

export const DEFAULT_HOSTNAME_FILE = '/proc/sys/kernel/hostname';

/**
 * A guest clock behind the host's timestamp by more than this is set. The
 * host took its timestamp before sending, so a correct guest clock can only
 * read later than it: any lag beyond clock-reading noise is a real error
 * (after a restore, the lag is the snapshot's age).
 */
export const MAX_CLOCK_LAG_MS = 5;
/**
 * A guest clock ahead by more than this is set back. The allowance covers the
 * request's transit time, which is not known here (envd allows 5 s too).
 */
export const MAX_CLOCK_LEAD_MS = 5_000;

export interface InitRouteOptions {
  defaults: AgentDefaults;
  guestHelper: GuestHelper;
  hostnameFile: string;
  /** Given in a VM only: a hostname other than the host keys' retires them and their server (ssh-identity.ts). */
  sshIdentity?: SshIdentityPaths | undefined;
}

/** Whether the guest clock (read now) is far enough from the host's to be set. */
export function clockNeedsSetting(guestNowMs: number, hostNs: bigint): boolean {
  const differenceMs = guestNowMs - Number(hostNs / 1_000_000n);
  return differenceMs < -MAX_CLOCK_LAG_MS || differenceMs > MAX_CLOCK_LEAD_MS;
}

export function createInitRoute(options: InitRouteOptions): PlainHttpHandler {
  const { defaults } = options;
  // Calls are serialised: two overlapping restores' helpers must not interleave.
  let previous: Promise<unknown> = Promise.resolve();

  async function apply(settings: InitSettings, receivedAt: bigint): Promise<void> {
    if (settings.envVars) defaults.mergeEnvVars(settings.envVars);
    defaults.accessToken = settings.accessToken;
    if (settings.defaultUser !== undefined) defaults.user = settings.defaultUser;
    if (settings.defaultWorkdir !== undefined) defaults.workdir = settings.defaultWorkdir;

    const failures: string[] = [];
    if (settings.hostname !== undefined) {
      try {
        if (options.sshIdentity) await retireOtherSshIdentity(options.sshIdentity, settings.hostname);
        await writeFile(options.hostnameFile, settings.hostname);
      } catch (error) {
        failures.push(`could not set the hostname: ${describeError(error)}`);
      }
    }

    let setClockNs: bigint | undefined;
    if (settings.timestampNs !== undefined && clockNeedsSetting(Date.now(), settings.timestampNs)) {
      // The host's "now" has aged while this request was parsed: carry it forward.
      setClockNs = settings.timestampNs + (process.hrtime.bigint() - receivedAt);
    }
    try {
      await options.guestHelper.run({ setClockNs, reseedHex: settings.entropyHex });
    } catch (error) {
      failures.push(error instanceof GuestHelperError ? error.message : describeError(error));
    }
    log.info(
      `init: ${settings.envVars ? Object.keys(settings.envVars).length : 0} env vars, ` +
        `user ${defaults.user}, workdir ${defaults.workdir ?? '(home)'}` +
        `${settings.hostname ? `, hostname ${settings.hostname}` : ''}` +
        `${setClockNs !== undefined ? ', clock set' : ''}${settings.entropyHex ? ', CRNG reseeded' : ''}` +
        `${failures.length > 0 ? ` (failed: ${failures.join('; ')})` : ''}`,
    );
    if (failures.length > 0) throw new HttpError(500, failures.join('; '));
  }

  return async (request, response) => {
    const receivedAt = process.hrtime.bigint();
    if (request.method !== 'POST') {
      response.writeHead(405, { allow: 'POST' });
      response.end();
      return;
    }
    try {
      const settings = parseInitRequest(await readBoundedBody(request, agentInitLimits.maxBodyBytes));
      const applied = previous.then(() => apply(settings, receivedAt));
      previous = applied.catch(() => {});
      await applied;
    } catch (error) {
      if (error instanceof InitRequestError || error instanceof HttpError) {
        if (error instanceof InitRequestError) log.warn(`init refused: ${error.message}`);
        sendJsonError(request, response, error.status, error.message);
        return;
      }
      throw error;
    }
    response.writeHead(204, { 'cache-control': 'no-store' });
    response.end();
  };
}
