// What GET /metrics reads when it is scraped, and the REST API's own
// instruments. At scrape time: sandboxes by state and template, warm pools,
// and each running sandbox's QEMU as the host sees it (CPU, memory, disk, a
// TAP sandbox's network), as
// the usage sampler last read it (usage-sampler.ts). It must never run between
// scrapes (no timer, no state kept per sandbox) nor fail a scrape because a VM went away meanwhile.
import type { ErrorCode, Sandbox } from '@capsule/protocol';
import type { FastifyInstance } from 'fastify';
import { Counter, Gauge } from 'prom-client';
import type { DaemonMetrics } from '../metrics.js';
import { capsuleErrorOf } from './request-errors.js';
import type { QemuUsage } from './usage-sampler.js';

/** Error codes that mean the host had no room for what was asked, by the reason admission refused it. */
const ADMISSION_REFUSALS: Partial<Record<ErrorCode, 'memory' | 'disk'>> = {
  insufficient_resources: 'memory',
  capacity: 'memory',
  insufficient_storage: 'disk',
};

/** Counts every REST answer by route template (never the raw URL: one series per route, not per id) and every error answer by code. */
export function instrumentApi(app: FastifyInstance, metrics: DaemonMetrics): void {
  app.addHook('onResponse', async (request, reply) => {
    const route = request.routeOptions.url ?? 'unmatched';
    metrics.httpRequests.inc({ method: request.method, route, status: String(reply.statusCode) });
    metrics.httpRequestSeconds.observe({ method: request.method, route }, reply.elapsedTime / 1000);
  });
  // Every error a route or hook throws passes here once, before the error handler of its scope (the daemon's or e2b's) answers it.
  app.addHook('onError', async (_request, _reply, err) => {
    const code = capsuleErrorOf(err)?.code ?? 'internal';
    metrics.apiErrors.inc({ code });
    const reason = ADMISSION_REFUSALS[code];
    if (reason) metrics.admissionRefusals.inc({ reason });
  });
}

/** What the scrape reads sandboxes and pools from. */
export interface ScrapeSources {
  /** Sandboxes not killed, with the pid of the QEMU of those that have one. */
  listSandboxes(): Promise<Sandbox[]>;
  /** A running sandbox's QEMU now (the sampler's fresh point, or read from the host). */
  usageOf(sandbox: Sandbox, pid: number): QemuUsage;
  /** Each template's warm pool: VMs ready, and the size it fills up to now. */
  warmPools(): { template: string; ready: number; target: number }[];
}

/** The scrape-time series of the daemon's registry; `scrape` fills them in and renders the whole registry. */
export class ScrapeTimeMetrics {
  private readonly sandboxes: Gauge<'state' | 'template'>;
  private readonly warmPoolReady: Gauge<'template'>;
  private readonly warmPoolTarget: Gauge<'template'>;
  // A counter read from the kernel: set at each scrape (reset, then the value), restarting from 0 with a new QEMU as counters may.
  private readonly cpuSeconds: Counter<'sandbox' | 'template'>;
  private readonly rssBytes: Gauge<'sandbox' | 'template'>;
  private readonly privateBytes: Gauge<'sandbox' | 'template'>;
  private readonly diskBytes: Gauge<'sandbox' | 'template'>;
  private readonly networkReceivedBytes: Counter<'sandbox' | 'template'>;
  private readonly networkTransmittedBytes: Counter<'sandbox' | 'template'>;

  constructor(
    private readonly metrics: DaemonMetrics,
    private readonly sources: ScrapeSources,
  ) {
    const registers = [metrics.registry];
    const perSandbox = ['sandbox', 'template'] as const;
    this.sandboxes = new Gauge({
      name: 'capsule_sandboxes',
      help: 'Sandboxes by state and template (killed ones are history and not counted).',
      labelNames: ['state', 'template'],
      registers,
    });
    this.warmPoolReady = new Gauge({
      name: 'capsule_warm_pool_ready_vms',
      help: "VMs restored ahead of time and ready in a template's warm pool.",
      labelNames: ['template'],
      registers,
    });
    this.warmPoolTarget = new Gauge({
      name: 'capsule_warm_pool_target_vms',
      help: "The size a template's warm pool fills up to now: its minimum, grown by creates that found it empty.",
      labelNames: ['template'],
      registers,
    });
    this.cpuSeconds = new Counter({
      name: 'capsule_sandbox_cpu_seconds_total',
      help: "CPU time of a running sandbox's QEMU process (user + system, all its threads), from /proc/PID/stat.",
      labelNames: perSandbox,
      registers,
    });
    this.rssBytes = new Gauge({
      name: 'capsule_sandbox_memory_rss_bytes',
      help: "Resident memory of a running sandbox's QEMU process, including pages shared with its template's other sandboxes.",
      labelNames: perSandbox,
      registers,
    });
    this.privateBytes = new Gauge({
      name: 'capsule_sandbox_memory_private_bytes',
      help: "Anonymous resident memory of a sandbox's QEMU (RssAnon): what only it holds and removing it gives back; template pages it only read are shared page cache, not counted.",
      labelNames: perSandbox,
      registers,
    });
    this.diskBytes = new Gauge({
      name: 'capsule_sandbox_disk_allocated_bytes',
      help: "Disk blocks allocated to a running sandbox's own overlay (what it wrote over its template's disk).",
      labelNames: perSandbox,
      registers,
    });
    // Read from the kernel like the CPU counter. Only TAP sandboxes have these: user-mode VMs share one namespace's uplink.
    this.networkReceivedBytes = new Counter({
      name: 'capsule_sandbox_network_receive_bytes_total',
      help: "Bytes a running TAP-mode sandbox's NIC received (Ethernet frames, DNS and ARP included; the agent channel not), from its tap device's counters.",
      labelNames: perSandbox,
      registers,
    });
    this.networkTransmittedBytes = new Counter({
      name: 'capsule_sandbox_network_transmit_bytes_total',
      help: "Bytes a running TAP-mode sandbox's NIC sent, dropped ones by its egress filter included, from its tap device's counters.",
      labelNames: perSandbox,
      registers,
    });
  }

  get contentType(): string {
    return this.metrics.registry.contentType;
  }

  /** Reads sandboxes and their usage now and renders every series in the Prometheus text format. */
  async scrape(): Promise<string> {
    const sandboxes = await this.sources.listSandboxes();
    // From here to the render's start nothing awaits: a concurrent scrape never sees these series half-filled.
    for (const gauge of [
      this.sandboxes,
      this.warmPoolReady,
      this.warmPoolTarget,
      this.cpuSeconds,
      this.rssBytes,
      this.privateBytes,
      this.diskBytes,
      this.networkReceivedBytes,
      this.networkTransmittedBytes,
    ])
      gauge.reset();
    for (const sandbox of sandboxes) {
      this.sandboxes.inc({ state: sandbox.state, template: sandbox.template });
      if (sandbox.state !== 'running' || sandbox.pid === undefined) continue;
      const labels = { sandbox: sandbox.id, template: sandbox.template };
      const usage = this.sources.usageOf(sandbox, sandbox.pid);
      if (usage.cpuSeconds !== undefined) this.cpuSeconds.inc(labels, usage.cpuSeconds);
      if (usage.rssBytes !== undefined) this.rssBytes.set(labels, usage.rssBytes);
      if (usage.privateBytes !== undefined) this.privateBytes.set(labels, usage.privateBytes);
      if (usage.diskBytes !== undefined) this.diskBytes.set(labels, usage.diskBytes);
      if (usage.networkReceivedBytes !== undefined) this.networkReceivedBytes.inc(labels, usage.networkReceivedBytes);
      if (usage.networkTransmittedBytes !== undefined) this.networkTransmittedBytes.inc(labels, usage.networkTransmittedBytes);
    }
    for (const { template, ready, target } of this.sources.warmPools()) {
      this.warmPoolReady.set({ template }, ready);
      this.warmPoolTarget.set({ template }, target);
    }
    return await this.metrics.registry.metrics();
  }
}
