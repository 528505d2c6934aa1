// A real OCI registry for tests: Debian's docker-registry (distribution 2.8)
// on a loopback port with its storage in a temp folder, optionally behind
// token auth served by a small token server here (JWTs signed with a key
// made by openssl for the run). Stop kills the registry and removes its files.
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { createHash, createPrivateKey, randomBytes, sign } from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';

const REGISTRY_BIN = '/usr/bin/docker-registry';
const SERVICE = 'capsule-test-registry';
const ISSUER = 'capsule-test-token-server';

export function sha256(bytes: Buffer): string {
  return `sha256:${createHash('sha256').update(bytes).digest('hex')}`;
}

async function freePort(): Promise<number> {
  return await new Promise((resolve, reject) => {
    const server = net.createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as net.AddressInfo;
      server.close(() => resolve(port));
    });
  });
}

function base64url(data: Buffer | string): string {
  return Buffer.from(data).toString('base64url');
}

export interface TokenAuth {
  username: string;
  password: string;
}

export class TestRegistry {
  private tokenServer: http.Server | undefined;
  private signingKey: ReturnType<typeof createPrivateKey> | undefined;
  private certDer: Buffer | undefined;
  /** Requests the token server answered, for assertions. */
  tokenRequests = 0;
  private proxy: http.Server | undefined;
  private proxyHost: string | undefined;

  private constructor(
    readonly dir: string,
    readonly host: string,
    private readonly proc: ChildProcess,
    readonly auth: TokenAuth | undefined,
  ) {}

  get url(): string {
    return `http://${this.host}`;
  }

  /**
   * Puts a basic-auth gate in front of the registry (as an nginx with
   * auth_basic would be) and returns its host:port; pushes still go direct.
   */
  async startBasicAuthProxy(auth: TokenAuth): Promise<string> {
    const expected = `Basic ${Buffer.from(`${auth.username}:${auth.password}`).toString('base64')}`;
    this.proxy = http.createServer((req, res) => {
      if (req.headers.authorization !== expected) {
        res
          .writeHead(401, { 'www-authenticate': 'Basic realm="capsule-test"', 'content-type': 'application/json' })
          .end('{"errors":[{"code":"UNAUTHORIZED"}]}');
        return;
      }
      const upstream = http.request(
        {
          host: '127.0.0.1',
          port: Number(this.host.split(':')[1]),
          method: req.method,
          path: req.url,
          headers: { ...req.headers, authorization: '' },
        },
        (up) => {
          res.writeHead(up.statusCode ?? 502, up.headers);
          up.pipe(res);
        },
      );
      upstream.on('error', () => res.destroy());
      req.pipe(upstream);
    });
    await new Promise<void>((resolve) => this.proxy!.listen(0, '127.0.0.1', resolve));
    this.proxyHost = `127.0.0.1:${(this.proxy.address() as net.AddressInfo).port}`;
    return this.proxyHost;
  }

  static async start(options: { auth?: TokenAuth } = {}): Promise<TestRegistry> {
    if (!fs.existsSync(REGISTRY_BIN))
      throw new Error(`${REGISTRY_BIN} is missing: run scripts/setup (it installs Debian's docker-registry)`);
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'capsule-registry-'));
    const port = await freePort();
    const lines = [
      'version: 0.1',
      'log: {level: warn}',
      `storage: {filesystem: {rootdirectory: ${path.join(dir, 'data')}}, delete: {enabled: true}}`,
      `http: {addr: "127.0.0.1:${port}"}`,
    ];
    let tokenServer: http.Server | undefined;
    let registry: TestRegistry | undefined;
    if (options.auth) {
      execFileSync(
        'openssl',
        [
          'req',
          '-x509',
          '-newkey',
          'ec',
          '-pkeyopt',
          'ec_paramgen_curve:prime256v1',
          '-nodes',
          '-keyout',
          path.join(dir, 'key.pem'),
          '-out',
          path.join(dir, 'cert.pem'),
          '-days',
          '2',
          '-subj',
          '/CN=capsule-test-token',
        ],
        { stdio: 'ignore' },
      );
      tokenServer = http.createServer((req, res) => registry?.answerToken(req, res));
      await new Promise<void>((resolve) => tokenServer!.listen(0, '127.0.0.1', resolve));
      const tokenPort = (tokenServer.address() as net.AddressInfo).port;
      lines.push(
        `auth: {token: {realm: "http://127.0.0.1:${tokenPort}/token", service: ${SERVICE}, issuer: ${ISSUER}, rootcertbundle: ${path.join(dir, 'cert.pem')}}}`,
      );
    }
    fs.writeFileSync(path.join(dir, 'config.yml'), `${lines.join('\n')}\n`);
    const log = fs.openSync(path.join(dir, 'registry.log'), 'a');
    const proc = spawn(REGISTRY_BIN, ['serve', path.join(dir, 'config.yml')], { stdio: ['ignore', log, log], detached: true });
    fs.closeSync(log);
    registry = new TestRegistry(dir, `127.0.0.1:${port}`, proc, options.auth);
    registry.tokenServer = tokenServer;
    if (options.auth) {
      registry.signingKey = createPrivateKey(fs.readFileSync(path.join(dir, 'key.pem')));
      const pem = fs.readFileSync(path.join(dir, 'cert.pem'), 'utf8');
      registry.certDer = Buffer.from(pem.replace(/-----[^-]+-----/g, '').replace(/\s+/g, ''), 'base64');
    }
    const deadline = Date.now() + 20_000;
    for (;;) {
      try {
        const res = await fetch(`${registry.url}/v2/`);
        await res.body?.cancel();
        if (res.status === 200 || res.status === 401) break;
      } catch {
        // Not listening yet.
      }
      if (proc.exitCode !== null || Date.now() > deadline) {
        const output = fs.readFileSync(path.join(dir, 'registry.log'), 'utf8');
        await registry.stop();
        throw new Error(`docker-registry did not start:\n${output}`);
      }
      await sleep(50);
    }
    return registry;
  }

  async stop(): Promise<void> {
    if (this.proc.exitCode === null && this.proc.pid !== undefined) {
      const exited = new Promise((r) => this.proc.once('exit', r));
      try {
        process.kill(-this.proc.pid, 'SIGKILL');
      } catch {
        // Gone.
      }
      await exited;
    }
    await new Promise<void>((resolve) => (this.tokenServer ? this.tokenServer.close(() => resolve()) : resolve()));
    this.proxy?.closeAllConnections();
    await new Promise<void>((resolve) => (this.proxy ? this.proxy.close(() => resolve()) : resolve()));
    fs.rmSync(this.dir, { recursive: true, force: true });
  }

  /** A JWT the registry accepts, granting `actions` on `repository`. */
  private token(repository: string, actions: string[], subject: string): string {
    const header = { alg: 'ES256', typ: 'JWT', x5c: [this.certDer!.toString('base64')] };
    const now = Math.floor(Date.now() / 1000);
    const claims = {
      iss: ISSUER,
      sub: subject,
      aud: SERVICE,
      exp: now + 600,
      nbf: now - 10,
      iat: now,
      jti: randomBytes(8).toString('hex'),
      access: repository ? [{ type: 'repository', name: repository, actions }] : [],
    };
    const input = `${base64url(JSON.stringify(header))}.${base64url(JSON.stringify(claims))}`;
    const signature = sign('sha256', Buffer.from(input), { key: this.signingKey!, dsaEncoding: 'ieee-p1363' });
    return `${input}.${base64url(signature)}`;
  }

  /** The token endpoint: basic credentials required; grants what the scope asks. */
  private answerToken(req: http.IncomingMessage, res: http.ServerResponse): void {
    this.tokenRequests++;
    const url = new URL(req.url ?? '/', 'http://x');
    const expected = `Basic ${Buffer.from(`${this.auth!.username}:${this.auth!.password}`).toString('base64')}`;
    if (req.headers.authorization !== expected) {
      res.writeHead(401, { 'content-type': 'application/json' }).end('{"details":"bad credentials"}');
      return;
    }
    const scope = url.searchParams.get('scope') ?? '';
    const [, repository = '', actions = ''] = scope.split(':');
    res
      .writeHead(200, { 'content-type': 'application/json' })
      .end(JSON.stringify({ token: this.token(repository, actions.split(',').filter(Boolean), this.auth!.username) }));
  }

  private async authHeaders(repository: string): Promise<Record<string, string>> {
    if (!this.auth) return {};
    return { authorization: `Bearer ${this.token(repository, ['pull', 'push'], this.auth.username)}` };
  }

  async pushBlob(repository: string, bytes: Buffer): Promise<string> {
    const digest = sha256(bytes);
    const headers = await this.authHeaders(repository);
    const start = await fetch(`${this.url}/v2/${repository}/blobs/uploads/`, { method: 'POST', headers });
    await start.body?.cancel();
    if (start.status !== 202) throw new Error(`starting an upload answered ${start.status}`);
    const location = new URL(start.headers.get('location')!, this.url);
    location.searchParams.set('digest', digest);
    const put = await fetch(location, { method: 'PUT', headers: { ...headers, 'content-type': 'application/octet-stream' }, body: bytes });
    await put.body?.cancel();
    if (put.status !== 201) throw new Error(`uploading ${digest} answered ${put.status}`);
    return digest;
  }

  async pushManifest(repository: string, reference: string, bytes: Buffer, mediaType: string): Promise<string> {
    const res = await fetch(`${this.url}/v2/${repository}/manifests/${reference}`, {
      method: 'PUT',
      headers: { ...(await this.authHeaders(repository)), 'content-type': mediaType },
      body: bytes,
    });
    const text = await res.text();
    if (res.status !== 201) throw new Error(`pushing the manifest answered ${res.status}: ${text}`);
    return sha256(bytes);
  }

  /** Where the registry keeps a blob's bytes, so a test can corrupt them behind its back. */
  blobDataPath(digest: string): string {
    const hex = digest.slice('sha256:'.length);
    return path.join(this.dir, 'data', 'docker', 'registry', 'v2', 'blobs', 'sha256', hex.slice(0, 2), hex, 'data');
  }
}
