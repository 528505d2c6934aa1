// Ports through the daemon (over tunnels on the agent channel): HTTP requests
// per second through the port proxy against the same server asked from inside
// the guest, and a 256 MiB download through the proxy against the raw
// virtio-serial channel of a bare guest (lib/serial-channel.mjs), in one run.
// The server is a small python3 HTTP/1.0 server in the guest (a connection per
// request on both sides); the big answer is sent with sendfile, so the guest's
// cost is the relay, not python copying bytes.
import { createHash } from 'node:crypto';
import http from 'node:http';
import path from 'node:path';
import { repeat } from '../harness.mjs';
import { startSerialChannelVm } from '../lib/serial-channel.mjs';

const PORT = 8000;
const REQUESTS = 100;
const BYTES = 256 * 1024 * 1024;
const BIG_FILE = '/var/tmp/capsule-bench-ports.bin'; // the root disk: the guest's /tmp is a small tmpfs
const mbPerS = (ms) => BYTES / 1e6 / (ms / 1000);

const SERVER = `
import http.server, os
class Handler(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args): pass
    def do_GET(self):
        if self.path == '/big':
            size = os.path.getsize('${BIG_FILE}')
            self.send_response(200)
            self.send_header('content-length', str(size))
            self.end_headers()
            self.wfile.flush()
            with open('${BIG_FILE}', 'rb') as f: self.connection.sendfile(f)
        else:
            self.send_response(200)
            self.send_header('content-length', '3')
            self.end_headers()
            self.wfile.write(b'ok\\n')
http.server.ThreadingHTTPServer(('127.0.0.1', ${PORT}), Handler).serve_forever()
`;

// The baseline: the same requests from inside the guest, a new connection each, timed there.
const GUEST_CLIENT = `
import http.client, sys, time
n = int(sys.argv[1])
started = time.perf_counter()
for _ in range(n):
    c = http.client.HTTPConnection('127.0.0.1', ${PORT})
    c.request('GET', '/small')
    assert c.getresponse().read() == b'ok\\n'
    c.close()
print(time.perf_counter() - started)
`;

/** GET through the daemon's path form; resolves with the answer's length and SHA-256. */
function viaProxy(daemon, sandboxId, urlPath) {
  return new Promise((resolve, reject) => {
    const req = http.request(
      { socketPath: daemon.socketPath, path: `/v1/sandboxes/${sandboxId}/ports/${PORT}${urlPath}`, agent: false },
      (res) => {
        const hash = createHash('sha256');
        let length = 0;
        res.on('data', (chunk) => {
          hash.update(chunk);
          length += chunk.length;
        });
        res.on('end', () =>
          res.statusCode === 200
            ? resolve({ length, sha256: hash.digest('hex') })
            : reject(new Error(`GET ${urlPath} through the proxy answered ${res.statusCode}`)),
        );
        res.on('error', reject);
      },
    );
    req.on('error', reject);
    req.end();
  });
}

export default {
  name: 'ports',
  position: 65,
  results: [
    {
      id: 'ports-rps-guest',
      title: 'HTTP requests/s to a python3 server in the guest, asked from inside the guest (baseline of the port proxy)',
      unit: 'req/s',
    },
    {
      id: 'ports-rps-proxy',
      title: 'HTTP requests/s to the same server through the daemon’s port proxy',
      unit: 'req/s',
      baselines: [{ id: 'ports-rps-guest', label: 'inside the guest' }],
    },
    {
      id: 'ports-channel-download',
      title: 'raw virtio-serial channel, guest to host, 256 MiB (baseline of the port download)',
      unit: 'MB/s',
    },
    {
      id: 'ports-download',
      title: 'download 256 MiB from a server in the guest through the port proxy',
      unit: 'MB/s',
      baselines: [{ id: 'ports-channel-download', label: 'the raw channel' }],
    },
  ],
  async run(ctx) {
    // No warm pool: no idle pool VM runs beside the measured one.
    const daemon = await ctx.daemon('restore');
    const sandbox = await daemon.create();
    let channel;
    try {
      await daemon.call('POST', `/v1/sandboxes/${sandbox.id}/exec`, {
        cmd: ['bash', '-c', 'cat > /var/tmp/bench-server.py'],
        stdin: SERVER,
      });
      await daemon.call('POST', `/v1/sandboxes/${sandbox.id}/exec`, {
        cmd: ['bash', '-c', 'cat > /var/tmp/bench-client.py'],
        stdin: GUEST_CLIENT,
      });
      await daemon.exec(sandbox.id, ['bash', '-c', `head -c ${BYTES} /dev/urandom > ${BIG_FILE} && sync`]);
      const sha256 = (await daemon.exec(sandbox.id, ['sha256sum', BIG_FILE])).stdout.split(' ')[0];
      await daemon.exec(sandbox.id, [
        'bash',
        '-c',
        'setsid python3 /var/tmp/bench-server.py > /var/tmp/bench-server.log 2>&1 < /dev/null &',
      ]);
      for (let tries = 0; ; tries++) {
        try {
          await viaProxy(daemon, sandbox.id, '/small');
          break;
        } catch (err) {
          if (tries > 300) throw err;
          await new Promise((r) => setTimeout(r, 200));
        }
      }
      channel = await startSerialChannelVm({
        dir: path.join(ctx.run.root, 'ports-channel'),
        accel: ctx.accel,
        kernel: ctx.manifest.kernel,
        initramfs: ctx.manifest.initramfs,
        track: (child) => ctx.run.children.add(child),
      });
      const rounds = await repeat(ctx, async (i) => {
        const inGuestSeconds = Number(
          (await daemon.exec(sandbox.id, ['python3', '/var/tmp/bench-client.py', String(REQUESTS)])).stdout.trim(),
        );
        const guestRps = REQUESTS / inGuestSeconds;
        let started = performance.now();
        for (let r = 0; r < REQUESTS; r++) await viaProxy(daemon, sandbox.id, '/small');
        const proxyRps = REQUESTS / ((performance.now() - started) / 1000);
        const channelDownload = mbPerS(await channel.download(BYTES));
        started = performance.now();
        const big = await viaProxy(daemon, sandbox.id, '/big');
        const download = mbPerS(performance.now() - started);
        if (big.length !== BYTES || big.sha256 !== sha256)
          throw new Error(`round ${i + 1}: the download through the proxy differs from the guest's file`);
        ctx.log(
          `ports round ${i + 1}: ${guestRps.toFixed(0)} req/s in the guest, ${proxyRps.toFixed(0)} through the proxy; channel ${channelDownload.toFixed(0)} MB/s, proxy ${download.toFixed(0)} MB/s`,
        );
        return { guestRps, proxyRps, channelDownload, download };
      });
      return {
        'ports-rps-guest': rounds.map((r) => r.guestRps),
        'ports-rps-proxy': rounds.map((r) => r.proxyRps),
        'ports-channel-download': rounds.map((r) => r.channelDownload),
        'ports-download': rounds.map((r) => r.download),
      };
    } finally {
      await channel?.close();
      await daemon.remove(sandbox.id);
    }
  },
};
