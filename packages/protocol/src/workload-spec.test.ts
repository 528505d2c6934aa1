import { describe, expect, it } from 'vitest';
import { checkWorkloadDocuments, formatSpecProblem, parseDurationMs } from './workload-spec.js';

const web = {
  kind: 'Workload',
  name: 'web',
  template: 'base',
  command: ['python3', '-m', 'http.server', '8080'],
  env: { GREETING: 'hello' },
  resources: { cpus: 1, memory: '512M', disk: '4G' },
  ports: [{ guest: 8080, host: 18080 }],
  volumes: [{ name: 'web-data', mount: '/srv/data', size: '1G' }],
  restart: { policy: 'on-failure', maxRetries: 3, backoff: '500ms' },
  health: { http: { port: 8080, path: '/' }, interval: '2s', timeout: '1s', retries: 2, startPeriod: '5s' },
  state: 'running',
};

/** The problems of a file as `document (name): path: message` lines. */
function problemsOf(...documents: unknown[]): string[] {
  return checkWorkloadDocuments(documents).problems.map(formatSpecProblem);
}

describe('the workload spec checker', () => {
  it('normalises a complete document, its sizes in MiB and durations in ms', () => {
    const { specs, problems } = checkWorkloadDocuments([web]);
    expect(problems).toEqual([]);
    expect(specs[0]).toMatchObject({
      name: 'web',
      resources: { cpus: 1, memoryMiB: 512, diskMiB: 4096 },
      volumes: [{ name: 'web-data', mount: '/srv/data', sizeMiB: 1024, readOnly: false }],
      restart: { policy: 'on-failure', maxRetries: 3, backoffMs: 500 },
      health: { probe: { http: { port: 8080, path: '/' } }, intervalMs: 2000, timeoutMs: 1000, retries: 2, startPeriodMs: 5000 },
      network: { internet: true, egress: { allow: [], deny: [] } },
    });
  });

  it('fills in defaults for a minimal document', () => {
    // An image instead of a template.
    expect(checkWorkloadDocuments([{ kind: 'Workload', name: 'img', image: 'registry.local/app:1' }]).specs?.[0]).toMatchObject({
      image: 'registry.local/app:1',
    });
    const { specs } = checkWorkloadDocuments([{ kind: 'Workload', name: 'a', template: 'base' }]);
    expect(specs[0]).toEqual({
      name: 'a',
      template: 'base',
      env: {},
      resources: {},
      ports: [],
      volumes: [],
      network: { internet: true, egress: { allow: [], deny: [] } },
      restart: { policy: 'always', maxRetries: 5, backoffMs: 2000 },
      replicas: 1,
      state: 'running',
    });
  });

  it('refuses unknown fields, at any depth, naming the document and path', () => {
    expect(problemsOf({ ...web, colour: 'red' })).toEqual([expect.stringMatching(/^document 1 \(web\): colour: unknown field/)]);
    expect(problemsOf({ ...web, resources: { cpus: 1, gpu: 1 } })).toEqual([
      expect.stringMatching(/^document 1 \(web\): resources\.gpu: unknown field/),
    ]);
    expect(problemsOf({ ...web, ports: [{ guest: 1, host: 2, proto: 'udp' }] })).toEqual([
      expect.stringMatching(/ports\[0\]\.proto: unknown field/),
    ]);
    expect(problemsOf({ ...web, health: { ...web.health, grace: '1s' } })).toEqual([expect.stringMatching(/health\.grace: unknown field/)]);
  });

  it('refuses bad sizes', () => {
    expect(problemsOf({ ...web, resources: { memory: 'lots' } })).toEqual([expect.stringMatching(/resources\.memory: "lots" is no size/)]);
    expect(problemsOf({ ...web, resources: { memory: '64M' } })).toEqual([
      expect.stringMatching(/resources\.memory: 64 MiB is outside 128 MiB/),
    ]);
    expect(problemsOf({ ...web, volumes: [{ name: 'd', mount: '/d', size: '1.2345M' }] })).toEqual([
      expect.stringMatching(/volumes\[0\]\.size: "1.2345M" is no size/),
    ]);
  });

  it('refuses bad values of every kind', () => {
    const cases: [Record<string, unknown>, RegExp][] = [
      [{ kind: 'Pod' }, /kind: must be "Workload"/],
      [{ name: 'Web_1' }, /name: "Web_1" is no DNS label/],
      [{ template: undefined }, /template: give either template or image, not both/],
      [{ image: 'alpine:3' }, /template: give either template or image, not both/],
      [{ template: undefined, image: 7 }, /image: must be a non-empty string/],
      [{ command: [] }, /command: must be a list of 1 to/],
      [{ command: 'python3 -m http.server' }, /command: must be a list/],
      [{ env: { '1X': 'a' } }, /env\.1X: is no environment variable name/],
      [{ env: { A: { b: 1 } } }, /env\.A: must be a string/],
      [{ workdir: 'srv' }, /workdir: "srv" must be absolute/],
      [{ resources: { cpus: 0 } }, /resources\.cpus: must be a whole number from 1 to 64/],
      [{ resources: { disk: '2T' } }, /resources\.disk: 2097152 MiB is outside 64 MiB to 1048576 MiB/],
      [{ ports: [{ guest: 8080, host: 70000 }] }, /ports\[0\]\.host: must be a whole number from 1 to 65535/],
      [{ volumes: [{ name: 'Data', mount: '/d' }] }, /volumes\[0\]\.name: "Data" is no volume name/],
      [{ volumes: [{ name: 'd', mount: '/' }] }, /volumes\[0\]\.mount: "\/" must be an absolute path other than \//],
      [{ volumes: [{ name: 'd', mount: '/d', readOnly: 'yes' }] }, /volumes\[0\]\.readOnly: must be true or false/],
      [
        {
          volumes: [
            { name: 'd', mount: '/a' },
            { name: 'd', mount: '/b' },
          ],
        },
        /volumes\[1\]\.name: volume d is mounted twice/,
      ],
      [{ network: { egress: { allow: ['10.0.0.0/8', 'example.com'] } } }, /network\.egress\.allow\[1\]: "example.com" is no IPv4 CIDR/],
      [{ network: { internet: 'no' } }, /network\.internet: must be true or false/],
      [{ restart: { policy: 'sometimes' } }, /restart\.policy: must be always, on-failure or never/],
      [{ restart: { backoff: '2 fortnights' } }, /restart\.backoff: must be a duration/],
      [{ restart: { maxRetries: -1 } }, /restart\.maxRetries: must be a whole number/],
      [{ health: { interval: '1s' } }, /health: needs exactly one of http, tcp or exec/],
      [{ health: { http: { port: 80 }, tcp: { port: 80 } } }, /health: needs exactly one of http, tcp or exec/],
      [{ health: { http: { port: 80, path: 'index' } } }, /health\.http\.path: "index" must start with \//],
      [{ health: { tcp: { port: 0 } } }, /health\.tcp\.port: must be a whole number/],
      [{ health: { exec: 'true' } }, /health\.exec: must be a list/],
      [{ health: { tcp: { port: 80 }, timeout: '5' } }, /health\.timeout: must be a duration/],
      [{ replicas: 0 }, /replicas: must be a whole number from 1 to 16/],
      [{ state: 'paused' }, /state: must be running or stopped/],
    ];
    for (const [change, expected] of cases) {
      const problems = problemsOf({ ...web, ...change });
      expect(problems, JSON.stringify(change)).toEqual([expect.stringMatching(expected)]);
    }
  });

  it('takes several replicas, unless they would share a host port or a read-write volume', () => {
    const replicated = { kind: 'Workload', name: 'api', template: 'base', replicas: 3 };
    expect(checkWorkloadDocuments([replicated]).specs[0]?.replicas).toBe(3);
    const reader = { name: 'web-data', mount: '/d', readOnly: true };
    expect(problemsOf({ ...replicated, volumes: [reader], ports: [{ guest: 80, host: 18080, hostIp: '0.0.0.0' }] })).toEqual([
      'document 1 (api): ports[0].host: host port 18080 can serve one VM, not 3 replicas: publish no host port, or use replicas: 1',
    ]);
    expect(problemsOf({ ...replicated, volumes: [reader, { name: 'logs', mount: '/logs' }] })).toEqual([
      'document 1 (api): volumes[1]: volume logs is read-write and a volume has one writer, so it cannot be mounted by 3 replicas: mount it readOnly: true, or use replicas: 1',
    ]);
  });

  it('refuses a document that is no mapping, and a file without documents', () => {
    expect(problemsOf(['a'])).toEqual(['document 1: (document): must be a mapping']);
    expect(problemsOf()).toEqual(['file: (file): holds no workload']);
  });

  it('refuses two workloads of one name', () => {
    expect(problemsOf(web, { ...web, ports: [], volumes: [] })).toEqual(['document 2 (web): name: is also the name of document 1 (web)']);
  });

  it('refuses a host port two workloads claim, unless their addresses differ', () => {
    const api = { kind: 'Workload', name: 'api', template: 'base', ports: [{ guest: 80, host: 18080 }] };
    expect(problemsOf(web, api)).toEqual(['document 2 (api): ports[0].host: host port 18080 is also claimed by document 1 (web)']);
    expect(problemsOf(web, { ...api, ports: [{ guest: 80, host: 18080, hostIp: '0.0.0.0' }] })).toHaveLength(1);
    expect(problemsOf(web, { ...api, ports: [{ guest: 80, host: 18080, hostIp: '127.0.0.2' }] })).toEqual([]);
  });

  it('refuses a volume two workloads mount when either writes to it; readers may share', () => {
    const reader = { kind: 'Workload', name: 'reader', template: 'base', volumes: [{ name: 'web-data', mount: '/d', readOnly: true }] };
    expect(problemsOf(web, reader)).toEqual([
      'document 2 (reader): volumes[0]: volume web-data is also mounted by document 1 (web), and a volume has one writer or only readers',
    ]);
    const ownReader = { ...web, volumes: [{ name: 'web-data', mount: '/d', readOnly: true }] };
    expect(problemsOf(ownReader, reader)).toEqual([]);
  });

  it('reports every problem of every document at once, and gives no spec then', () => {
    const result = checkWorkloadDocuments([{ ...web, state: 'x' }, { kind: 'Workload', name: 'ok', template: 'base' }, { name: 'b' }]);
    expect(result.specs).toEqual([]);
    expect(result.problems.map((p) => `${p.document}:${p.path}`)).toEqual(['1:state', '3:kind', '3:template']);
  });

  it('reads durations', () => {
    expect(parseDurationMs('500ms')).toBe(500);
    expect(parseDurationMs('1.5s')).toBe(1500);
    expect(parseDurationMs('2m')).toBe(120_000);
    expect(parseDurationMs('1h')).toBe(3_600_000);
    expect(parseDurationMs('5')).toBeUndefined();
  });
});
