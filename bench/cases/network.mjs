// Guest networking throughput: a 64 MiB download by curl inside a sandbox
// from a server on the host's loopback, through QEMU's user-mode network
// stack (the guest's gateway 10.0.2.2 is the host's loopback), against the
// same download by curl on the host itself, measured in the same run. Each
// round does both, so a change in the host's load hits both sides.
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import http from 'node:http';
import { promisify } from 'node:util';
import { repeat } from '../harness.mjs';

const BYTES = 64 * 1024 * 1024;

/** curl's own measure of the transfer (bytes per second), so that starting curl and exec's round trip are left out. */
function curlMbPerS(stdout) {
  const bytesPerS = Number(stdout.trim());
  if (!Number.isFinite(bytesPerS) || bytesPerS <= 0) throw new Error(`curl reported no speed: ${stdout}`);
  return bytesPerS / 1e6;
}

export default {
  name: 'network',
  position: 65,
  results: [
    { id: 'host-download', title: 'host: curl downloads 64 MiB from a server on the loopback (baseline of guest networking)', unit: 'MB/s' },
    { id: 'guest-download', title: 'the same download by curl in a sandbox, through its user-mode network (gateway = host loopback)', unit: 'MB/s', baselines: [{ id: 'host-download', label: 'the host' }] },
  ],
  async run(ctx) {
    const blob = randomBytes(BYTES);
    const server = http.createServer((_req, res) => res.writeHead(200, { 'content-length': BYTES }).end(blob));
    await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
    const port = server.address().port;
    const daemon = await ctx.daemon('restore');
    const sandbox = await daemon.create();
    const curl = ['curl', '-sS', '-o', '/dev/null', '-w', '%{speed_download}'];
    try {
      const rounds = await repeat(ctx, async (i) => {
        // Not execFileSync: the server runs in this process.
        const host = curlMbPerS((await promisify(execFile)(curl[0], [...curl.slice(1), `http://127.0.0.1:${port}/`])).stdout);
        const guest = curlMbPerS((await daemon.exec(sandbox.id, [...curl, `http://10.0.2.2:${port}/`])).stdout);
        ctx.log(`network round ${i + 1}: host ${host.toFixed(1)}, guest ${guest.toFixed(1)} MB/s`);
        return { host, guest };
      });
      return { 'host-download': rounds.map((r) => r.host), 'guest-download': rounds.map((r) => r.guest) };
    } finally {
      await daemon.remove(sandbox.id);
      server.closeAllConnections();
      await new Promise((resolve) => server.close(resolve));
    }
  },
};
