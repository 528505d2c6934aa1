// The daemon's own Prometheus registry (never prom-client's global one) and the
// instruments its layers record into as things happen: operation durations,
// warm pool claims, error answers. Recording is arithmetic in memory: never I/O,
// never a timer. What is read from the host at scrape time is api/metrics.ts's.
import { performance } from 'node:perf_hooks';
import { collectDefaultMetrics, Counter, Histogram, Registry } from 'prom-client';

/** How a create got its VM: a warm-pool VM claimed, the template's warm snapshot restored, or a cold boot. */
export type CreateServedBy = 'pool' | 'restored' | 'booted';

/** Sandbox operations whose durations are histograms of their own; `exec_start` is an exec's time until its process started. */
export type SandboxOperation = 'exec_start' | 'pause' | 'resume' | 'fork' | 'snapshot' | 'stop' | 'start';

/** How a template was built: from a Capsulefile, or from a stored image. */
export type TemplateBuildKind = 'capsulefile' | 'image';

/** Seconds from a fraction of a second (a claimed pool VM) to minutes (a cold boot or a fork under TCG). */
const OPERATION_BUCKETS = [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300];
const BUILD_BUCKETS = [1, 5, 10, 30, 60, 120, 300, 600, 1200, 1800, 3600];
const HTTP_BUCKETS = [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60];

export class DaemonMetrics {
  readonly registry = new Registry();
  private readonly registers = [this.registry];

  readonly httpRequests = new Counter({
    name: 'capsule_http_requests_total',
    help: 'REST API requests answered, by method, route template and status.',
    labelNames: ['method', 'route', 'status'] as const,
    registers: this.registers,
  });

  readonly httpRequestSeconds = new Histogram({
    name: 'capsule_http_request_duration_seconds',
    help: 'How long REST API requests took to answer, by method and route template.',
    labelNames: ['method', 'route'] as const,
    buckets: HTTP_BUCKETS,
    registers: this.registers,
  });

  readonly apiErrors = new Counter({
    name: 'capsule_api_errors_total',
    help: 'Error answers of the REST API (and its e2b routes) by error code.',
    labelNames: ['code'] as const,
    registers: this.registers,
  });

  readonly admissionRefusals = new Counter({
    name: 'capsule_admission_refusals_total',
    help: 'Requests refused because the host had no room: reason memory (the budget or available RAM) or disk (the free-disk reserve).',
    labelNames: ['reason'] as const,
    registers: this.registers,
  });

  readonly createSeconds = new Histogram({
    name: 'capsule_sandbox_create_seconds',
    help: 'Successful sandbox creates, from admission to running (the bootMs a sandbox reports), by how its VM was had: pool, restored or booted.',
    labelNames: ['served_by'] as const,
    buckets: OPERATION_BUCKETS,
    registers: this.registers,
  });

  readonly operationSeconds = new Histogram({
    name: 'capsule_sandbox_operation_seconds',
    help: 'Successful sandbox operations by kind: exec_start (until the process started), pause, resume, fork, snapshot.',
    labelNames: ['operation'] as const,
    buckets: OPERATION_BUCKETS,
    registers: this.registers,
  });

  readonly templateBuildSeconds = new Histogram({
    name: 'capsule_template_build_seconds',
    help: 'Successful template root filesystem builds by kind: capsulefile (capsule build, all its steps) or image (a template made from a stored image).',
    labelNames: ['kind'] as const,
    buckets: BUILD_BUCKETS,
    registers: this.registers,
  });

  readonly warmPoolClaims = new Counter({
    name: 'capsule_warm_pool_claims_total',
    help: 'Creates from a template with a warm pool, by template and result: hit (a pool VM was claimed) or miss (the pool was empty).',
    labelNames: ['template', 'result'] as const,
    registers: this.registers,
  });

  constructor() {
    collectDefaultMetrics({ register: this.registry });
  }

  /** Runs `work` and records how long it took, if it succeeded (failures are counted by their error code). */
  async timeOperation<T>(operation: SandboxOperation, work: () => Promise<T>): Promise<T> {
    const started = performance.now();
    const result = await work();
    this.operationSeconds.observe({ operation }, secondsSince(started));
    return result;
  }

  async timeTemplateBuild<T>(kind: TemplateBuildKind, work: () => Promise<T>): Promise<T> {
    const started = performance.now();
    const result = await work();
    this.templateBuildSeconds.observe({ kind }, secondsSince(started));
    return result;
  }
}

/** Seconds since a performance.now() reading. */
export function secondsSince(startedMs: number): number {
  return (performance.now() - startedMs) / 1000;
}
