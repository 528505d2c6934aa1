// A seeded generator of hostile HTTP requests for capsuled's API, and a
// bounded runner that writes them raw on fresh connections (so that bad
// percent-encodings, duplicated or oversized headers and lying lengths reach
// the daemon as sent). Shared by the suite's short run and bench/fuzz-api.mjs.
// It must never create or destroy anything real: the only real sandbox id it
// uses goes to agent, port and tunnel paths; bodies sent to the daemon's own
// routes are never a valid JSON object.
import net from 'node:net';

/** A small, fast PRNG (mulberry32): the same seed gives the same requests. */
export function seededRandom(seed) {
  let state = seed >>> 0;
  const next = () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  const int = (n) => Math.floor(next() * n);
  const pick = (list) => list[int(list.length)];
  const chance = (p) => next() < p;
  const bytes = (n) => Buffer.from(Array.from({ length: n }, () => int(256)));
  return { next, int, pick, chance, bytes };
}

const METHODS = [
  'GET',
  'GET',
  'POST',
  'POST',
  'PUT',
  'DELETE',
  'PATCH',
  'HEAD',
  'OPTIONS',
  'PROPFIND',
  'FOO',
  'get',
  'TRACE',
  'CONNECT',
  'M'.repeat(300),
];
const BAD_ENCODINGS = ['%', '%G1', '%E0%A4%A', '%00', '%ff', '%2e%2e', '%%', '%C0%AF', '%ED%A0%80', '%uD800', '\u00e9', '..', ''];
const AGENT_PATHS = [
  '/health',
  '/init',
  '/metrics',
  '/files?path=/tmp/fuzz',
  '/files?path=%',
  '/process.Process/Start',
  '/process.Process/Connect',
  '/process.Process/List',
  '/process.Process/StreamInput',
  '/process.Process/SendSignal',
  '/filesystem.Filesystem/ListDir',
  '/filesystem.Filesystem/Stat',
  '/filesystem.Filesystem/WatchDir',
  '/nope',
];
const DAEMON_ROUTES = [
  '/health',
  '/openapi.json',
  '/v1/info',
  '/v1/sandboxes',
  '/v1/sandboxes/{rid}',
  '/v1/sandboxes/{rid}/exec',
  '/v1/sandboxes/{rid}/exec/stream',
  '/v1/sandboxes/{rid}/timeout',
  '/v1/sandboxes/{rid}/keepalive',
  '/v1/sandboxes/{rid}/network',
  '/v1/sandboxes/{rid}/logs',
  '/v1/sandboxes/{rid}/fork',
  '/v1/sandboxes/{rid}/snapshot',
  '/v1/images',
  '/v1/images/{rid}',
  '/v1/images/pull',
  '/v1/images/import',
  '/v1/templates',
  '/v1/templates/build',
  '/v1/templates/{rid}',
  '/v1/api-keys',
  '/v1/api-keys/{rid}',
  '/sandboxes',
  '/sandboxes/{rid}',
  '/sandboxes/{rid}/timeout',
  '/templates',
];
const CONTENT_TYPES = [
  'application/json',
  'application/connect+proto',
  'application/connect+json',
  'application/proto',
  'application/json; charset=utf-16',
  'multipart/form-data; boundary=',
  'application/octet-stream',
  'text/plain',
  '\u00ff/\u00fe',
];

/** Syntactically broken or non-object JSON: no body a route could act on. */
function badJson(rng) {
  switch (rng.int(8)) {
    case 0:
      return '{"cmd": ["bash", "-c", "true"';
    case 1:
      return '['.repeat(rng.int(20_000) + 1);
    case 2:
      return `${'['.repeat(5000)}${']'.repeat(5000)}`;
    case 3:
      return rng.pick(['null', '[]', '"x"', '1e999', 'true', '-0']);
    case 4:
      return '{"__proto__": {"polluted": 1}, ';
    case 5:
      return `{"a": "${'\\u'.repeat(100)}"}`;
    case 6:
      return `{"x": ${'9'.repeat(5000)}`;
    default:
      return rng.bytes(rng.int(2048)).toString('latin1');
  }
}

/** A Connect envelope (flags, 4-byte length, payload) whose length lies about its payload. */
function badConnectFrame(rng) {
  const payload = rng.bytes(rng.int(512));
  const header = Buffer.alloc(5);
  header[0] = rng.pick([0, 1, 2, 0x80, 0xff]);
  header.writeUInt32BE(
    rng.pick([payload.length + 1 + rng.int(1000), Math.max(0, payload.length - 1 - rng.int(8)), 0xffffffff, 0x7fffffff, 0]),
    1,
  );
  return Buffer.concat([header, payload, rng.chance(0.3) ? header : Buffer.alloc(0)]);
}

function mutatePath(rng, path) {
  if (!rng.chance(0.6)) return path;
  switch (rng.int(7)) {
    case 0:
      return path.replace(/\/[^/]*$/, `/${rng.pick(BAD_ENCODINGS)}`);
    case 1:
      return `${path}${rng.chance(0.5) ? '?' : '&'}${rng.pick(BAD_ENCODINGS)}=${rng.pick(BAD_ENCODINGS)}`;
    case 2:
      return path.replaceAll('/', rng.pick(['//', '/./', '/../', '/%2f']));
    case 3:
      return `${path}/${'a'.repeat(rng.int(9000))}`;
    case 4:
      return rng.pick(['*', 'http://localhost/v1/info', 'localhost:80', '', '/\u0000', `/${rng.bytes(20).toString('latin1')}`]);
    case 5:
      return path.replace(/sb_[A-Za-z0-9]+|\{rid\}/, rng.pick(BAD_ENCODINGS));
    default:
      return `${path}#${rng.pick(BAD_ENCODINGS)}`;
  }
}

/** What hostileRequest aims at, as its `kind`. */
export const REQUEST_KINDS = ['agent-path', 'agent-header', 'port-path', 'port-host', 'tunnel', 'daemon'];

/**
 * One hostile request, as the bytes to write. `target` (optional) names a real
 * sandbox: { sandboxId, apiKey, accessToken, trafficToken, domain }.
 */
export function hostileRequest(rng, target = {}) {
  const sandboxId =
    target.sandboxId && rng.chance(0.5) ? target.sandboxId : `sb_${rng.pick(['', 'x', 'nope0000', '%', 'A'.repeat(200), '..', '\u00e9'])}`;
  const domain = target.domain ?? 'localhost';
  const randomId = rng.pick(['x', 'sb_nope', '%', '..%2f..', 'a'.repeat(300), '%E0%A4%A']);
  const headers = [];
  let kind;
  let path;
  switch (rng.int(6)) {
    case 0:
      kind = 'agent-path';
      path = `/v1/sandboxes/${sandboxId}/envd${rng.pick(AGENT_PATHS)}`;
      break;
    case 1:
      kind = 'agent-header';
      path = rng.pick(AGENT_PATHS);
      headers.push(['E2b-Sandbox-Id', sandboxId]);
      if (rng.chance(0.2)) headers.push(['E2b-Sandbox-Id', rng.pick(['sb_other', '%', ''])]);
      break;
    case 2:
      kind = 'port-path';
      path = `/v1/sandboxes/${sandboxId}/ports/${rng.pick(['8000', '49983', '0', '65536', 'x', '22', '1'])}${rng.pick(['/', '/index.html', '', '/%'])}`;
      break;
    case 3:
      kind = 'port-host';
      path = rng.pick(['/', '/health', '/%', '/files?path=%']);
      headers.push(['Host', `${rng.pick(['8000', '49983', '0', '99999', 'x'])}-${sandboxId}.${domain}${rng.pick(['', ':3000', ':x'])}`]);
      break;
    case 4:
      kind = 'tunnel';
      path = `/v1/sandboxes/${sandboxId}/tunnel/${rng.pick(['22', '8000', '0', 'x', '49983'])}`;
      headers.push(['Connection', 'Upgrade'], ['Upgrade', rng.pick(['capsule-tunnel', 'websocket', 'h2c', ''])]);
      break;
    default:
      kind = 'daemon';
      path = rng.pick(DAEMON_ROUTES).replace('{rid}', randomId);
  }
  path = mutatePath(rng, path);
  const method = kind === 'daemon' && path === '/v1/sandboxes' ? rng.pick(['GET', 'POST', 'PUT']) : rng.pick(METHODS);

  if (!headers.some(([name]) => name === 'Host'))
    headers.push(['Host', rng.pick(['localhost', 'localhost:3000', `49983-${sandboxId}.${domain}`, '', 'x'.repeat(300)])]);
  if (rng.chance(0.1)) headers.push(['Host', 'second.host']);
  switch (rng.int(6)) {
    case 0:
      if (target.apiKey) headers.push(['X-API-Key', target.apiKey]);
      break;
    case 1:
      if (target.apiKey) headers.push(['Authorization', `Bearer ${target.apiKey}`]);
      break;
    case 2:
      if (target.accessToken) headers.push(['X-Access-Token', target.accessToken]);
      break;
    case 3:
      if (target.trafficToken) headers.push(['e2b-traffic-access-token', target.trafficToken]);
      break;
    case 4:
      headers.push(['X-API-Key', rng.pick(['e2b_00', '', 'x'.repeat(5000)])]);
      break;
    default:
  }
  if (rng.chance(0.05)) headers.push(['X-Big', 'b'.repeat(rng.pick([8_000, 17_000, 70_000]))]);
  if (rng.chance(0.03)) for (let i = 0; i < rng.pick([100, 2100]); i++) headers.push([`X-Many-${i % 50}`, String(i)]);
  if (rng.chance(0.05))
    headers.push(
      ['Connect-Protocol-Version', rng.pick(['1', '2', ''])],
      ['Connect-Timeout-Ms', rng.pick(['0', '-1', '99999999999999', 'x'])],
    );

  let body = Buffer.alloc(0);
  if (method !== 'GET' || rng.chance(0.1)) {
    const connect = (kind === 'agent-path' || kind === 'agent-header') && rng.chance(0.6);
    body = connect ? badConnectFrame(rng) : Buffer.from(badJson(rng), 'latin1');
    headers.push(['Content-Type', connect ? rng.pick(['application/connect+proto', 'application/connect+json']) : rng.pick(CONTENT_TYPES)]);
  }
  let truncated = false;
  switch (rng.int(7)) {
    case 0: // claims more than is sent: the body is cut short
      headers.push(['Content-Length', String(body.length + 1 + rng.int(100_000))]);
      truncated = true;
      break;
    case 1:
      headers.push(['Content-Length', String(Math.max(0, body.length - 1 - rng.int(10)))]);
      break;
    case 2:
      headers.push(['Content-Length', String(body.length)], ['Content-Length', String(body.length + 7)]);
      break;
    case 3:
      headers.push(['Content-Length', rng.pick(['-1', 'x', '1e3', '99999999999999999999'])]);
      break;
    case 4: {
      headers.push(['Transfer-Encoding', 'chunked']);
      const chunk = `${rng.pick([body.length.toString(16), 'zz', 'ffffffffff', '0'])}\r\n`;
      body = Buffer.concat([Buffer.from(chunk), body, Buffer.from(rng.chance(0.5) ? '\r\n0\r\n\r\n' : '\r\n')]);
      break;
    }
    default:
      headers.push(['Content-Length', String(body.length)]);
  }
  if (rng.chance(0.5)) headers.push(['Connection', 'close']);
  const head = `${method} ${path} HTTP/1.1\r\n${headers.map(([name, value]) => `${name}: ${value}\r\n`).join('')}\r\n`;
  return {
    kind,
    method: method.slice(0, 20),
    path: path.slice(0, 160),
    truncated,
    bytes: Buffer.concat([Buffer.from(head, 'latin1'), body]),
  };
}

/** Writes `bytes` on a fresh connection, half-closes, and reads the answer's status line and the start of its body. */
function exchange(connect, bytes, timeoutMs) {
  return new Promise((resolve) => {
    const socket = connect();
    const chunks = [];
    let size = 0;
    let settled = false;
    const finish = (outcome) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      socket.destroy();
      const text = Buffer.concat(chunks).toString('latin1');
      const status = Number(/^HTTP\/1\.[01] (\d{3})/.exec(text)?.[1] ?? 0);
      resolve({ outcome: status ? 'answered' : outcome, status, text: text.slice(0, 600) });
    };
    const timer = setTimeout(() => finish('timeout'), timeoutMs);
    socket.on('data', (chunk) => {
      chunks.push(chunk);
      size += chunk.length;
      // The head and a little of the body are all that is judged.
      if (size > 4096 || (/\r\n\r\n/.test(Buffer.concat(chunks).toString('latin1')) && size > 600)) finish('answered');
    });
    socket.on('error', () => finish('reset'));
    socket.on('close', () => finish('closed'));
    socket.write(bytes, () => socket.end());
  });
}

/** Whether a status is allowed: any below 500; of 5xx, only the proxies' documented 502 and 503. */
export function isDocumentedStatus(status) {
  return status < 500 || status === 502 || status === 503;
}

/**
 * Sends up to `requests` hostile requests (stopping early after `timeLimitMs`)
 * over `endpoints` in turn, `concurrency` at a time, optionally only of some
 * `kinds` (e.g. ['agent-path']). Resolves to counts and
 * every answer with an undocumented status.
 */
export async function runFuzz({ seed, requests, timeLimitMs, endpoints, target = {}, concurrency = 16, requestTimeoutMs = 5000, kinds }) {
  const unknownKind = kinds?.find((kind) => !REQUEST_KINDS.includes(kind));
  if (unknownKind !== undefined) throw new Error(`no request kind "${unknownKind}": the kinds are ${REQUEST_KINDS.join(', ')}`);
  const rng = seededRandom(seed);
  const deadline = Date.now() + timeLimitMs;
  const result = { sent: 0, byStatus: {}, byOutcome: {}, byKind: {}, undocumented: [], unanswered: [], stoppedByTime: false };
  let index = 0;
  const worker = async () => {
    for (;;) {
      if (index >= requests) return;
      if (Date.now() > deadline) {
        result.stoppedByTime = true;
        return;
      }
      const endpoint = endpoints[index % endpoints.length];
      index += 1;
      let request = hostileRequest(rng, target);
      // Narrowing to some kinds (to chase one bug) draws until one of them comes up.
      while (kinds && !kinds.includes(request.kind)) request = hostileRequest(rng, target);
      result.sent += 1;
      result.byKind[request.kind] = (result.byKind[request.kind] ?? 0) + 1;
      const answer = await exchange(endpoint.connect, request.bytes, requestTimeoutMs);
      result.byOutcome[answer.outcome] = (result.byOutcome[answer.outcome] ?? 0) + 1;
      if (answer.status) result.byStatus[answer.status] = (result.byStatus[answer.status] ?? 0) + 1;
      if (answer.outcome === 'timeout' && result.unanswered.length < 20)
        result.unanswered.push({
          endpoint: endpoint.name,
          kind: request.kind,
          method: request.method,
          path: request.path,
          truncated: request.truncated,
          head: request.bytes.subarray(0, 300).toString('latin1'),
        });
      if (answer.status && !isDocumentedStatus(answer.status) && result.undocumented.length < 50) {
        result.undocumented.push({
          endpoint: endpoint.name,
          kind: request.kind,
          method: request.method,
          path: request.path,
          status: answer.status,
          answer: answer.text,
        });
      }
    }
  };
  await Promise.all(Array.from({ length: concurrency }, worker));
  return result;
}

/** Endpoints for runFuzz: the daemon's TCP listener and its unix socket. */
export function daemonEndpoints({ tcpHost, tcpPort, socketPath }) {
  const endpoints = [];
  if (tcpPort) endpoints.push({ name: 'tcp', connect: () => net.connect({ host: tcpHost, port: tcpPort, allowHalfOpen: true }) });
  if (socketPath) endpoints.push({ name: 'unix', connect: () => net.connect({ path: socketPath, allowHalfOpen: true }) });
  return endpoints;
}
