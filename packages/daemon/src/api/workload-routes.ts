// REST routes of workloads (workloads/workloads.ts): apply a file's documents
// (or only diff them), list, inspect, remove, stop, start and restart
// workloads, and read their service logs. Routes only: what a spec means and
// how it is kept running are the reconciler's.
import {
  ApplyWorkloadsRequest,
  ApplyWorkloadsResult,
  WORKLOAD_LOG_OFFSET_HEADER,
  Workload,
  WorkloadList,
  WorkloadLogsQuery,
} from '@capsule/protocol';
import type { Workloads } from '../workloads/workloads.js';
import { type ApiRoute, errorResponses, route } from './routes.js';

const NameParams = {
  type: 'object',
  properties: { name: { type: 'string', minLength: 1, maxLength: 63 } },
  required: ['name'],
} as const;

export function workloadRoutes(workloads: Workloads): ApiRoute[] {
  const stateRoute = (action: 'stop' | 'start' | 'restart', description: string) =>
    route<{ Params: { name: string } }>({
      method: 'POST',
      url: `/v1/workloads/:name/${action}`,
      schema: { params: NameParams, description, response: { 200: Workload, ...errorResponses } },
      handler: async (request) =>
        action === 'restart'
          ? await workloads.restart(request.params.name)
          : await workloads.setState(request.params.name, action === 'stop' ? 'stopped' : 'running'),
    });
  return [
    route<{ Body: ApplyWorkloadsRequest }>({
      method: 'POST',
      url: '/v1/workloads/apply',
      schema: {
        body: ApplyWorkloadsRequest,
        description:
          'Checks every document (a problem anywhere refuses the whole apply, naming the document and field), then creates new workloads, leaves unchanged ones alone and replaces those whose VM fields changed. `dryRun` only answers the plan.',
        response: { 200: ApplyWorkloadsResult, ...errorResponses },
      },
      handler: async (request) => await workloads.apply(request.body),
    }),
    route({
      method: 'GET',
      url: '/v1/workloads',
      schema: { response: { 200: WorkloadList } },
      handler: async () => ({ workloads: await workloads.list() }),
    }),
    route<{ Params: { name: string } }>({
      method: 'GET',
      url: '/v1/workloads/:name',
      schema: {
        params: NameParams,
        description: 'A workload: its conditions (Ready, Progressing, Degraded), restarts, last exit, sandbox, ports and volumes.',
        response: { 200: Workload, ...errorResponses },
      },
      handler: async (request) => await workloads.get(request.params.name),
    }),
    route<{ Params: { name: string } }>({
      method: 'DELETE',
      url: '/v1/workloads/:name',
      schema: { params: NameParams, description: 'Removes a workload and its sandbox; its volumes stay.', response: errorResponses },
      handler: async (request, reply) => {
        await workloads.remove(request.params.name);
        return reply.code(204).send();
      },
    }),
    stateRoute('stop', 'Stops its VM (disk and volumes kept) and keeps it stopped, through daemon and host restarts.'),
    stateRoute('start', 'Starts a stopped (or crash-looped) workload again, its failures forgotten.'),
    stateRoute('restart', 'Restarts its VM and its command now, its failures forgotten.'),
    route<{ Params: { name: string }; Querystring: WorkloadLogsQuery }>({
      method: 'GET',
      url: '/v1/workloads/:name/logs',
      schema: {
        params: NameParams,
        querystring: WorkloadLogsQuery,
        description: `Its command's output as kept on the host (text/plain; size-capped, rotated once), all its replicas' in one log: all of it, what was written \`since\` a time, or its last \`tail\` lines. A follower passes \`offset\` from the last answer's ${WORKLOAD_LOG_OFFSET_HEADER} header.`,
      },
      handler: async (request, reply) => {
        const { data, next } = await workloads.logs(request.params.name, request.query);
        return reply.type('text/plain; charset=utf-8').header(WORKLOAD_LOG_OFFSET_HEADER, String(next)).send(data);
      },
    }),
  ];
}
