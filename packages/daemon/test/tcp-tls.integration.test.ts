// "Keys travel in cleartext": the TCP listener serves TLS only, unless plain HTTP
// is asked for by name (CAPSULE_LISTEN=http://…). Real daemons, a real microVM for
// the proxied paths, @capsule/sdk pinned to the fingerprint, and the official e2b
// SDK in a child node process that trusts the certificate by NODE_EXTRA_CA_CERTS.
import { execFile } from 'node:child_process';
import { X509Certificate, randomBytes } from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import tls from 'node:tls';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect } from 'vitest';
import { CapsuleClient } from '@capsule/sdk';
import { loadTlsIdentity } from '../src/api/tls.js';
import { cliMain, eventually, it, TestDaemon } from './fixture.js';

const DOMAIN = 'capsule.test';
const WEB_PORT = 8000;
const repoRoot = path.resolve(import.meta.dirname, '../../..');

interface TlsInfo {
  tcpAddress: string;
  tls?: { fingerprintSha256: string; certificatePath: string; generated: boolean };
}

function hostPort(address: string): { host: string; port: number } {
  const [host, port] = address.split(':');
  return { host: host ?? '', port: Number(port) };
}

/** The certificate the listener shows in a handshake, read without trusting it. */
function servedCertificate(address: string): Promise<X509Certificate> {
  const { host, port } = hostPort(address);
  return new Promise((resolve, reject) => {
    const socket = tls.connect({ host, port, rejectUnauthorized: false }, () => {
      resolve(new X509Certificate(socket.getPeerCertificate().raw));
      socket.end();
    });
    socket.once('error', reject);
  });
}

/** A plain-HTTP request: its status, or the error that ended it. */
function plainRequest(address: string, urlPath: string, headers: Record<string, string>): Promise<{ status: number } | { error: string }> {
  const { host, port } = hostPort(address);
  return new Promise((resolve) => {
    const req = http.get({ host, port, path: urlPath, headers, agent: false }, (res) => {
      res.resume();
      resolve({ status: res.statusCode ?? 0 });
    });
    req.once('error', (error: NodeJS.ErrnoException) => resolve({ error: error.code ?? error.message }));
  });
}

function fileMode(file: string): string {
  return (fs.statSync(file).mode & 0o777).toString(8);
}

describe('keys travel in cleartext: the TCP listener serves TLS (real daemons)', () => {
  const daemon = new TestDaemon({ CAPSULE_LISTEN: '127.0.0.1:0', CAPSULE_DOMAIN: DOMAIN });
  let info: TlsInfo;
  let apiKey: string;

  beforeAll(async () => {
    await daemon.start();
    info = (await daemon.request<TlsInfo>('GET', '/v1/info')).body;
    apiKey = (await daemon.api.createApiKey('tls')).key;
  });
  afterAll(async () => {
    await daemon.destroy();
  });

  it('a plain-HTTP request carrying an API key gets no answer from the TCP port, and never reaches the API', async () => {
    const marker = `cleartext-${randomBytes(6).toString('hex')}`;
    const answer = await plainRequest(info.tcpAddress, `/v1/sandboxes?probe=${marker}`, { 'x-api-key': apiKey });
    expect(answer).toHaveProperty('error');
    // The daemon logs every request it routes at debug level: this one never got that far.
    expect(daemon.log()).not.toContain(marker);
    expect((await daemon.request('GET', '/health')).status).toBe(200);
  });

  it('shows in /v1/info the fingerprint of the certificate it serves, kept 0600 with its key in the state dir', async () => {
    expect(info.tls).toMatchObject({ certificatePath: path.join(daemon.stateDir, 'tls.crt'), generated: true });
    const served = await servedCertificate(info.tcpAddress);
    expect(served.fingerprint256).toBe(info.tls?.fingerprintSha256);
    expect(new X509Certificate(fs.readFileSync(path.join(daemon.stateDir, 'tls.crt'))).fingerprint256).toBe(served.fingerprint256);
    expect(fileMode(path.join(daemon.stateDir, 'tls.crt'))).toBe('600');
    expect(fileMode(path.join(daemon.stateDir, 'tls.key'))).toBe('600');
    // Node's own check, as every node client (the e2b SDK's included) runs it: `<port>-<id>.<domain>` is covered.
    const peer = { subject: {}, subjectaltname: served.subjectAltName } as tls.PeerCertificate;
    for (const name of ['localhost', '127.0.0.1', DOMAIN, `49983-sb_abcdefghijklmnopqrst.${DOMAIN}`])
      expect(tls.checkServerIdentity(name, peer), name).toBeUndefined();
    expect(tls.checkServerIdentity('evil.example', peer)).toBeInstanceOf(Error);
  });

  it('@capsule/sdk pinned to that fingerprint works; another pin, or no trust at all, is refused before the key is sent', async () => {
    const { host, port } = hostPort(info.tcpAddress);
    const fingerprintSha256 = info.tls?.fingerprintSha256 ?? '';
    const pinned = new CapsuleClient({
      host,
      port,
      apiKey,
      tls: { fingerprintSha256: fingerprintSha256.replaceAll(':', '').toLowerCase() },
    });
    const byCa = new CapsuleClient({ host, port, apiKey, tls: { ca: fs.readFileSync(info.tls?.certificatePath ?? '') } });
    const wrongPin = new CapsuleClient({ host, port, apiKey, tls: { fingerprintSha256: `${'AA:'.repeat(31)}AA` } });
    const systemCas = new CapsuleClient({ host, port, apiKey });
    const plain = new CapsuleClient({ host, port, apiKey, tls: false });
    try {
      expect((await pinned.info()).pid).toBe(daemon.pid);
      expect((await byCa.info()).pid).toBe(daemon.pid);
      await expect(wrongPin.info()).rejects.toMatchObject({ name: 'ConnectionError', code: 'tls_untrusted' });
      const marker = `wrong-pin-${randomBytes(6).toString('hex')}`;
      await expect(wrongPin.transport.request({ method: 'GET', path: `/v1/sandboxes?probe=${marker}` })).rejects.toMatchObject({
        code: 'tls_untrusted',
      });
      expect(daemon.log()).not.toContain(marker);
      await expect(systemCas.info()).rejects.toMatchObject({
        name: 'ConnectionError',
        code: 'tls_untrusted',
        hint: expect.stringContaining('capsule daemon status'),
      });
      await expect(plain.info()).rejects.toMatchObject({ name: 'ConnectionError', hint: expect.stringContaining('serves TLS on TCP') });
    } finally {
      for (const client of [pinned, byCa, wrongPin, systemCas, plain]) client.close();
    }
  });

  it('the CLI reaches it by CAPSULE_HOST with the pinned fingerprint, and refuses another pin with a hint', async () => {
    const cli = (fingerprint: string, ...args: string[]) =>
      promisify(execFile)(process.execPath, [cliMain, ...args], {
        // No socket to fall back on: only TCP can answer.
        env: {
          PATH: process.env.PATH ?? '',
          CAPSULE_SOCKET: path.join(daemon.root, 'no.sock'),
          CAPSULE_HOST: `https://${info.tcpAddress}`,
          CAPSULE_API_KEY: apiKey,
          CAPSULE_TLS_FINGERPRINT: fingerprint,
        },
      }).then(
        ({ stdout }) => ({ code: 0, stdout, stderr: '' }),
        (error: { code: number; stdout: string; stderr: string }) => ({ code: error.code, stdout: error.stdout, stderr: error.stderr }),
      );
    const status = await cli(info.tls?.fingerprintSha256 ?? '', 'daemon', 'status');
    expect(status.code, status.stderr).toBe(0);
    expect(status.stdout).toMatch(new RegExp(`TLS SHA-256 +${info.tls?.fingerprintSha256}\n`));
    expect(status.stdout).toContain(`https://${info.tcpAddress}`);
    expect((await cli(info.tls?.fingerprintSha256 ?? '', 'ls')).code).toBe(0);
    const refused = await cli('AA:BB', 'ls');
    expect(refused.code).not.toBe(0);
    expect(refused.stderr).toContain('not the pinned AA:BB');
  });

  it('keeps the same certificate across a restart', async () => {
    await daemon.stop();
    await daemon.start();
    const again = (await daemon.request<TlsInfo>('GET', '/v1/info')).body;
    expect(again.tls?.fingerprintSha256).toBe(info.tls?.fingerprintSha256);
    expect((await servedCertificate(again.tcpAddress)).fingerprint256).toBe(info.tls?.fingerprintSha256);
    info = again;
  });
});

describe("keys travel in cleartext: the operator's certificate, and plain HTTP only by name", () => {
  const operatorDir = fs.mkdtempSync(path.join(os.tmpdir(), 'capsule-operator-cert-'));
  const quiet = { info: () => undefined, warn: () => undefined } as unknown as Parameters<typeof loadTlsIdentity>[0]['log'];
  // Any valid certificate will do as the operator's; this one is made by the same code, in a folder of its own.
  const operator = loadTlsIdentity({ stateDir: operatorDir, names: ['127.0.0.1'], log: quiet });
  const withOperatorCert = new TestDaemon({
    CAPSULE_LISTEN: '127.0.0.1:0',
    CAPSULE_TLS_CERT: operator.certificatePath,
    CAPSULE_TLS_KEY: path.join(operatorDir, 'tls.key'),
  });
  const plain = new TestDaemon({ CAPSULE_LISTEN: 'http://127.0.0.1:0' });

  afterAll(async () => {
    await withOperatorCert.destroy();
    await plain.destroy();
    fs.rmSync(operatorDir, { recursive: true, force: true });
  });

  it("serves the operator's certificate and key when given, and makes none of its own", async () => {
    await withOperatorCert.start();
    const info = (await withOperatorCert.request<TlsInfo>('GET', '/v1/info')).body;
    expect(info.tls).toEqual({
      fingerprintSha256: operator.fingerprintSha256,
      certificatePath: operator.certificatePath,
      generated: false,
    });
    expect((await servedCertificate(info.tcpAddress)).fingerprint256).toBe(operator.fingerprintSha256);
    expect(fs.existsSync(path.join(withOperatorCert.stateDir, 'tls.crt'))).toBe(false);
  });

  it('serves plain HTTP when CAPSULE_LISTEN says http://, and says so in /v1/info', async () => {
    await plain.start();
    const info = (await plain.request<TlsInfo>('GET', '/v1/info')).body;
    expect(info.tls).toBeUndefined();
    expect(await plainRequest(info.tcpAddress, '/v1/sandboxes', {})).toEqual({ status: 401 });
    expect(plain.log()).toContain('plain HTTP');
  });
});

describe('keys travel in cleartext: agent, port and upgrade paths over TLS (real QEMU microVM)', () => {
  const daemon = new TestDaemon({ CAPSULE_LISTEN: '127.0.0.1:0', CAPSULE_DOMAIN: DOMAIN });
  let info: TlsInfo;
  let apiKey: string;
  let id: string;
  let trafficToken: string;

  beforeAll(async () => {
    await daemon.start();
    info = (await daemon.request<TlsInfo>('GET', '/v1/info')).body;
    apiKey = (await daemon.api.createApiKey('tls-vm')).key;
    ({ id, trafficAccessToken: trafficToken } = await daemon.api.createSandbox({ timeoutMs: 0 }));
    await daemon.api.exec(id, [
      'bash',
      '-c',
      `mkdir -p /tmp/www && echo hello over tls > /tmp/www/hello.txt && (setsid python3 -m http.server ${WEB_PORT} --bind 127.0.0.1 --directory /tmp/www > /tmp/http.log 2>&1 < /dev/null &)`,
    ]);
    await eventually(
      async () => ((await daemon.request('GET', `/v1/sandboxes/${id}/ports/${WEB_PORT}/hello.txt`)).status === 200 ? true : undefined),
      90_000,
      'the web server',
    );
  }, 240_000);
  afterAll(async () => {
    await daemon.destroy();
  });

  it('@capsule/sdk reaches the agent, a port by path and a tunnel (HTTP Upgrade) over pinned TLS; a port by host name answers too', async () => {
    const { host, port } = hostPort(info.tcpAddress);
    const client = new CapsuleClient({ host, port, apiKey, tls: { fingerprintSha256: info.tls?.fingerprintSha256 ?? '' } });
    try {
      const stat = await client.agent(id).filesystem.stat({ path: '/tmp/www/hello.txt' });
      expect(stat.entry?.name).toBe('hello.txt');
      const byPath = await client.fetchPort(id, WEB_PORT, '/hello.txt');
      expect(byPath.status).toBe(200);

      const tunnel = await client.openPortTunnel(id, WEB_PORT);
      const chunks: Buffer[] = [];
      tunnel.on('data', (chunk: Buffer) => chunks.push(chunk));
      const ended = new Promise((resolve) => tunnel.once('end', resolve));
      // A half-close, as `capsule port-forward` relays one: the answer still comes back over TLS.
      tunnel.end('GET /hello.txt HTTP/1.0\r\nHost: guest\r\n\r\n');
      await ended;
      expect(Buffer.concat(chunks).toString()).toMatch(/^HTTP\/1\.0 200[\s\S]*hello over tls\n$/);
    } finally {
      client.close();
    }
    // By host name, with the sandbox's traffic token: what a browser or the e2b SDK's getHost use.
    const byHost = await new Promise<{ status: number; body: string }>((resolve, reject) => {
      const req = tls.connect(
        { host, port, servername: `${WEB_PORT}-${id}.${DOMAIN}`, ca: fs.readFileSync(info.tls?.certificatePath ?? '') },
        () => {
          // Written, not ended: node's HTTP server drops a request whose client half-closes before the answer (TLS or not).
          req.write(
            `GET /hello.txt HTTP/1.1\r\nHost: ${WEB_PORT}-${id}.${DOMAIN}\r\ne2b-traffic-access-token: ${trafficToken}\r\nConnection: close\r\n\r\n`,
          );
        },
      );
      let text = '';
      req.on('data', (chunk: Buffer) => (text += chunk.toString()));
      req.once('end', () =>
        resolve({ status: Number(/^HTTP\/1\.1 (\d+)/.exec(text)?.[1]), body: text.slice(text.indexOf('\r\n\r\n') + 4) }),
      );
      req.once('error', reject);
    });
    expect(byHost).toEqual({ status: 200, body: 'hello over tls\n' });
  });

  it('the official e2b SDK, in a node process trusting the certificate by NODE_EXTRA_CA_CERTS, runs a command and reads a file over TLS', async () => {
    const script = `
      import { Sandbox } from 'e2b';
      const sandbox = await Sandbox.connect(process.env.SANDBOX_ID);
      const ran = await sandbox.commands.run('echo e2b over tls');
      const file = await sandbox.files.read('/tmp/www/hello.txt');
      console.log(JSON.stringify({ stdout: ran.stdout, file }));
    `;
    const { stdout } = await promisify(execFile)(process.execPath, ['--input-type=module', '-e', script], {
      cwd: repoRoot,
      env: {
        PATH: process.env.PATH ?? '',
        NODE_EXTRA_CA_CERTS: info.tls?.certificatePath ?? '',
        E2B_API_URL: `https://${info.tcpAddress}`,
        E2B_SANDBOX_URL: `https://${info.tcpAddress}`,
        E2B_API_KEY: apiKey,
        SANDBOX_ID: id,
      },
      timeout: 120_000,
    });
    expect(JSON.parse(stdout.trim().split('\n').at(-1) ?? '')).toEqual({ stdout: 'e2b over tls\n', file: 'hello over tls\n' });
  });
});
