// Starting and stopping capsuled: lock the state folder (one daemon per
// folder), tighten its modes, open the store, register the templates named by
// the guest manifest, serve the API, and only then reattach the VMs the
// previous daemon left: the API answers at once however many there are.
// Stopping the daemon never stops sandboxes; the next daemon adopts them.
import fs from 'node:fs';
import path from 'node:path';
import type { DaemonInfo } from '@capsule/protocol';
import { ApiKeys, loadDaemonSecret, SandboxTokens, VolumeTokens } from './api/credentials.js';
import { buildApi, listenOnSocket } from './api/server.js';
import { loadTlsIdentity, type TlsIdentity } from './api/tls.js';
import { effectiveMemoryBudgetMiB, type DaemonConfig } from './config.js';
import { daemonDiskUsageSources, measureDiskUsage } from './disk-usage.js';
import { errorMessage } from './errors.js';
import { Webhooks } from './events/webhooks.js';
import { ImageService } from './images/image-service.js';
import { DaemonMetrics } from './metrics.js';
import { readManifest, manifestPath, type GuestManifest } from './guest/manifest.js';
import type { Logger } from './log.js';
import { SandboxManager } from './sandboxes/manager.js';
import { settingsReport, type SettingOrigins } from './settings-report.js';
import { lockStateDir } from './state-lock.js';
import { tightenStateModes } from './state-files.js';
import { Store } from './store/store.js';
import { testOnlyDelay } from './test-only-delay.js';
import { templatesFromManifest } from './templates/defaults.js';
import { Templates } from './templates/templates.js';
import { chooseAccel } from './vmm/accel.js';
import { VmCgroups } from './vmm/cgroup.js';
import { probeJailSupport } from './vmm/host-support.js';
import { useJail, VmJail } from './vmm/jail.js';
import { useTcgCodeBuffer } from './vmm/tcg-code-buffer.js';
import { qemuVersion } from './vmm/qemu.js';
import { Volumes } from './volumes/volumes.js';
import { Workloads } from './workloads/workloads.js';

export const DAEMON_VERSION = (JSON.parse(fs.readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as { version: string })
  .version;

export interface RunningDaemon {
  stop(): Promise<void>;
}

async function registerTemplates(store: Store, manifest: GuestManifest): Promise<void> {
  for (const template of templatesFromManifest(manifest)) await store.upsertTemplate(template);
}

/** `origins`: where each setting came from (main.ts), for `GET /v1/system/config`. */
export async function startDaemon(config: DaemonConfig, log: Logger, origins: SettingOrigins): Promise<RunningDaemon> {
  const startedMs = Date.now();
  tightenStateModes(config.stateDir, log);
  // Before anything is read or written: a second daemon on this folder must change nothing.
  lockStateDir(config.stateDir);
  const manifest = readManifest(config.cacheDir);
  if (!manifest) throw new Error(`no guest manifest at ${manifestPath(config.cacheDir)}; run \`capsuled prepare\` first`);
  fs.mkdirSync(config.runtimeDir, { recursive: true, mode: 0o755 });

  const store = await Store.open(path.join(config.stateDir, 'capsule.db'));
  await registerTemplates(store, manifest);
  const qemu = await qemuVersion();
  const accel = await chooseAccel({
    requested: config.accel,
    cacheDir: config.cacheDir,
    kernel: manifest.kernel,
    initramfs: manifest.initramfs,
    qemuVersion: qemu,
  });
  log.info({ accel: accel.accel, reason: accel.reason, qemu }, 'accelerator chosen');
  const jailSupport = await probeJailSupport();
  useTcgCodeBuffer(config.tcgCodeBufferMiB);
  useJail(config.jail ? openJail(config, manifest, log) : undefined);
  if (config.jail) log.info({ support: jailSupport }, 'VMMs are jailed');
  else
    log.warn(
      { support: jailSupport },
      'CAPSULE_JAIL=off: every QEMU runs as root, unconfined, without limits; a guest that escapes it owns this host',
    );

  const secret = loadDaemonSecret(config.stateDir);
  const tokens = new SandboxTokens(secret);
  const images = new ImageService(store, config, log);
  const metrics = new DaemonMetrics();
  const templates = new Templates(store, config, accel, qemu, images, manifest, log, metrics);
  const volumes = new Volumes(store, config, log);
  const manager = new SandboxManager(store, config, accel, log, qemu, tokens, templates, metrics, volumes);
  // Templates boot build sandboxes and restore pool VMs through the manager; it is given to them here, so they never import it.
  templates.connectSandboxes(manager);
  await images.start();
  await templates.start();
  await manager.beforeServing();
  const startedAt = new Date().toISOString();
  let tcpAddress: string | undefined;
  // Made or read before serving, so that a bad certificate stops the start with its reason.
  const tlsIdentity: TlsIdentity | undefined = config.listen?.tls
    ? loadTlsIdentity({
        stateDir: config.stateDir,
        names: [config.listen.host, config.domain.replace(/:\d+$/, '')],
        certFile: config.tlsCertFile,
        keyFile: config.tlsKeyFile,
        log,
      })
    : undefined;
  const info = (): DaemonInfo => ({
    version: DAEMON_VERSION,
    pid: process.pid,
    accel: accel.accel,
    accelReason: accel.reason,
    qemuVersion: qemu,
    network: config.network,
    ...(manager.networkWarning ? { networkWarning: manager.networkWarning } : {}),
    stateDir: config.stateDir,
    runtimeDir: config.runtimeDir,
    socketPath: config.socketPath,
    ...(tcpAddress ? { tcpAddress } : {}),
    ...(tcpAddress && tlsIdentity
      ? {
          tls: {
            fingerprintSha256: tlsIdentity.fingerprintSha256,
            certificatePath: tlsIdentity.certificatePath,
            generated: tlsIdentity.generated,
          },
        }
      : {}),
    domain: config.domain,
    sandboxesRunning: manager.runningCount,
    warmPools: templates.warm.poolStatuses(),
    startedAt,
    jail: { enabled: config.jail, support: jailSupport },
  });
  const workloads = new Workloads(store, manager, templates, images, volumes, config.stateDir, log.child({ component: 'workloads' }));
  const webhooks = new Webhooks(store, log.child({ component: 'webhooks' }));
  await webhooks.start();
  const api = await buildApi({
    store,
    webhooks,
    manager,
    images,
    templates,
    volumes,
    workloads,
    apiKeys: new ApiKeys(store),
    tokens,
    volumeTokens: new VolumeTokens(secret),
    buildUploadsMaxIdleMs: config.buildUploadsMaxIdleMs,
    info,
    settings: () =>
      settingsReport(origins, {
        CAPSULE_ACCEL: accel.accel,
        CAPSULE_SOCKET: config.socketPath,
        CAPSULE_MEMORY_BUDGET_MIB: String(effectiveMemoryBudgetMiB(config)),
        CAPSULE_LISTEN: tcpAddress,
        CAPSULE_REGISTRIES_FILE: images.registrySettingsFile(),
      }),
    diskUsage: () =>
      measureDiskUsage(
        daemonDiskUsageSources(config, {
          sandboxes: async () => (await manager.list(false)).length,
          templates: async () => (await templates.list()).length,
          images: async () => (await images.list()).length,
          volumes: async () => (await volumes.list()).length,
        }),
      ),
    log,
    metrics,
    metricsIntervalMs: config.metricsIntervalMs,
    version: DAEMON_VERSION,
    domain: config.domain,
  });
  await testOnlyDelay('SERVE');
  await listenOnSocket(api, config.socketPath);
  if (config.listen) tcpAddress = await api.listenTcp(config.listen.host, config.listen.port, tlsIdentity);
  if (config.listen && !tlsIdentity)
    log.warn({ tcp: tcpAddress }, 'the TCP listener serves plain HTTP (CAPSULE_LISTEN=http://…): API keys cross the network in cleartext');
  log.info(
    {
      socket: config.socketPath,
      tcp: tcpAddress,
      tls: tlsIdentity?.fingerprintSha256,
      version: DAEMON_VERSION,
      startMs: Date.now() - startedMs,
      processUptimeMs: Math.round(process.uptime() * 1000),
    },
    'capsuled is serving',
  );
  // The reconciler starts once the previous daemon's VMs are reattached: it finds its workloads' sandboxes as they are.
  void manager
    .reattach()
    .catch((err: unknown) => log.error({ err: errorMessage(err) }, 'reattaching sandboxes failed'))
    .then(() => workloads.start());

  return {
    async stop() {
      await api.close();
      await workloads.close();
      webhooks.stop();
      await manager.shutdown();
      await store.close();
      fs.rmSync(config.socketPath, { force: true });
    },
  };
}

/** The jail every QEMU runs in; without usable cgroups it runs without them, and says so. */
function openJail(config: DaemonConfig, manifest: GuestManifest, log: Logger): VmJail {
  let cgroups: VmCgroups | undefined;
  try {
    cgroups = VmCgroups.open('capsule');
  } catch (err) {
    log.warn({ err: errorMessage(err) }, 'VMs run WITHOUT memory, CPU and pids limits: no usable cgroups');
  }
  return new VmJail({
    ids: config.jailIds,
    runtimeDir: config.runtimeDir,
    // The manifest's root filesystems may lie in another cache (one `capsuled prepare` filled for several daemons).
    diskRoots: [config.cacheDir, config.stateDir, ...Object.values(manifest.templates).map((t) => path.dirname(t.rootfs))],
    cgroups,
    overheadMiB: config.vmmOverheadMiB,
  });
}
