// The agent proxy end to end on TCP (the daemon's real API server and
// AgentClient) in front of an agent STAND-IN: an HTTP/2 server on a unix
// socket that records the headers it gets, as the guest's agent would see them.
import fs from 'node:fs';
import http from 'node:http';
import http2 from 'node:http2';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AgentClient } from '../agent/client.js';
import { silentLogger } from '../log.js';
import { DaemonMetrics } from '../metrics.js';
import { buildApi, type Api, type ApiContext } from './server.js';

const API_KEY = `e2b_${'5'.repeat(40)}`;
const ACCESS_TOKEN = 'envd-access-token-of-sb_1';
const TRAFFIC_TOKEN = 'traffic-token-of-sb_1';

describe('agent proxy over TCP, with an agent stand-in that records headers', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'capsule-agent-standin-'));
  const socketPath = path.join(dir, 'agent.sock');
  const seen: http2.IncomingHttpHeaders[] = [];
  const standIn = http2.createServer((req, res) => {
    seen.push(req.headers);
    res.writeHead(200, { 'content-type': 'application/json' }).end('{}');
  });
  const agent = new AgentClient(socketPath);
  let api: Api;
  let address: { host: string; port: number };

  beforeAll(async () => {
    await new Promise<void>((resolve) => standIn.listen(socketPath, resolve));
    const ctx = {
      manager: { agentOf: async (id: string) => ({ id, agent, bulk: undefined }) },
      images: {},
      store: {},
      templates: { buildUploadsDir: () => path.join(dir, 'uploads') },
      apiKeys: { verify: async (key: string | undefined) => key === API_KEY },
      tokens: { verify: (id: string, token: string | undefined) => id === 'sb_1' && token === ACCESS_TOKEN, verifyTraffic: () => false },
      info: () => ({}),
      log: silentLogger,
      metrics: new DaemonMetrics(),
      metricsIntervalMs: 0,
      version: 'test',
      domain: 'localhost',
    } as unknown as ApiContext;
    api = await buildApi(ctx);
    const [host = '', port] = (await api.listenTcp('127.0.0.1', 0)).split(':');
    address = { host, port: Number(port) };
  });

  afterAll(async () => {
    agent.close();
    await api?.close();
    standIn.close();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  const get = (urlPath: string, headers: Record<string, string>) =>
    new Promise<number>((resolve, reject) => {
      http
        .get({ ...address, path: urlPath, headers }, (res) => {
          res.resume();
          res.on('end', () => resolve(res.statusCode ?? 0));
        })
        .on('error', reject);
    });

  it("the client's API key (as X-API-Key and as a bearer), access and traffic tokens and cookies never reach the agent, by path and by header", async () => {
    const credentials = {
      'X-API-Key': API_KEY,
      Authorization: `Bearer ${API_KEY}`,
      'X-Access-Token': ACCESS_TOKEN,
      'e2b-traffic-access-token': TRAFFIC_TOKEN,
      Cookie: 'session=daemon',
    };
    expect(await get('/v1/sandboxes/sb_1/envd/health', credentials)).toBe(200);
    expect(await get('/health', { ...credentials, 'E2b-Sandbox-Id': 'sb_1' })).toBe(200);
    expect(seen).toHaveLength(2);
    for (const headers of seen) {
      for (const name of ['x-api-key', 'x-access-token', 'e2b-traffic-access-token', 'cookie']) expect(headers[name], name).toBeUndefined();
      expect(JSON.stringify(headers)).not.toContain(API_KEY);
      expect(JSON.stringify(headers)).not.toContain(ACCESS_TOKEN);
    }
    expect(seen[0]?.authorization).toBeUndefined();
    // e2b's convention by header: no user named, so the default user, as Basic with no password.
    expect(seen[1]?.authorization).toBe(`Basic ${Buffer.from('user:').toString('base64')}`);
  });

  it('a Basic user name (how e2b clients pick the user) still reaches the agent', async () => {
    seen.length = 0;
    const basic = `Basic ${Buffer.from('root:').toString('base64')}`;
    expect(await get('/v1/sandboxes/sb_1/envd/health', { 'X-API-Key': API_KEY, Authorization: basic })).toBe(200);
    expect(seen[0]?.authorization).toBe(basic);
  });
});
