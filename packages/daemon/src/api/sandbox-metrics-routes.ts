// REST route of a sandbox's metrics history: the points the usage sampler kept
// between two times. Reads only the sampler's rings; never measures anything
// itself, so a query costs the same however often it is made.
import { SandboxMetrics } from '@capsule/protocol';
import type { SandboxManager } from '../sandboxes/manager.js';
import { MetricsRangeQuery, parseMetricsRange } from './metrics-range.js';
import { errorResponses, IdParams, route, type ApiRoute } from './routes.js';
import { GUEST_EVERY_POINTS, type UsageSampler } from './usage-sampler.js';

export function sandboxMetricsRoutes(manager: SandboxManager, sampler: UsageSampler): ApiRoute[] {
  return [
    route<{ Params: { id: string }; Querystring: { start?: string; end?: string } }>({
      method: 'GET',
      url: '/v1/sandboxes/:id/metrics',
      schema: {
        description:
          "A sandbox's metrics history, oldest first: a point every interval while it runs (its QEMU's CPU, memory and disk as the host sees them), with the guest's own view on every few points; kept for 30 minutes, dropped with the sandbox (see docs/api.md).",
        params: IdParams,
        querystring: MetricsRangeQuery,
        response: { 200: SandboxMetrics, ...errorResponses },
      },
      handler: async (request): Promise<SandboxMetrics> => {
        const window = parseMetricsRange(request.query, Date.now(), sampler.retentionMs);
        const sandbox = await manager.get(request.params.id);
        return {
          sandboxId: sandbox.id,
          intervalMs: sampler.intervalMs,
          guestEveryPoints: GUEST_EVERY_POINTS,
          retentionMs: sampler.retentionMs,
          points: sampler.history(sandbox.id, window.startMs, window.endMs),
        };
      },
    }),
  ];
}
