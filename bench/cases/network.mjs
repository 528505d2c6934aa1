// Guest networking throughput: a 64 MiB download by curl inside a sandbox,
// through QEMU's user-mode network stack and the root daemon's isolation
// namespace, from a server at a public-range address, against the same
// download by curl on the daemon's host, measured in the same run. A root
// daemon's sandboxes reach no loopback or private address, so the run makes
// its own network (lib/bench-network.mjs): the daemon runs in a namespace
// whose only link leads to the server's, and no packet leaves this machine.
// Each round does both downloads, so a change in the host's load hits both.
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { repeat, repo } from '../harness.mjs';
import { BenchNetwork, SERVER_ADDRESS } from '../lib/bench-network.mjs';

const BYTES = 64 * 1024 * 1024;
const PORT = 8080;

const SERVER = `
  const body = require('crypto').randomBytes(${BYTES});
  require('http')
    .createServer((_req, res) => res.writeHead(200, { 'content-length': ${BYTES} }).end(body))
    .listen(${PORT}, ${JSON.stringify(SERVER_ADDRESS)}, () => console.log('ready'));`;

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
    {
      id: 'host-download',
      title: `host: curl downloads 64 MiB from a server at ${SERVER_ADDRESS} in a network namespace (baseline of guest networking)`,
      unit: 'MB/s',
    },
    {
      id: 'guest-download',
      title: "the same download by curl in a sandbox, through its user-mode network and the daemon's isolation namespace",
      unit: 'MB/s',
      baselines: [{ id: 'host-download', label: 'the host' }],
    },
  ],
  async unavailable() {
    // A daemon that is not root does not isolate its sandboxes, and the bench cannot make namespaces.
    return process.getuid?.() === 0 ? undefined : 'needs root: the bench makes network namespaces for the download';
  },
  async run(ctx) {
    const network = new BenchNetwork();
    ctx.run.cleanupSteps.push(() => network.destroy());
    await network.create();
    ctx.run.children.add(await network.startServer(SERVER));
    const daemon = await ctx.daemon('restore', { label: 'netns', launchPrefix: network.launchPrefix });
    const { stateTag } = await import(`${repo}/packages/daemon/dist/network/tap-network.js`);
    network.daemonTags.push(stateTag(daemon.stateDir));
    const sandbox = await daemon.create();
    const url = `http://${SERVER_ADDRESS}:${PORT}/`;
    const curl = ['curl', '-sS', '--max-time', '300', '-o', '/dev/null', '-w', '%{speed_download}', url];
    try {
      const rounds = await repeat(ctx, async (i) => {
        const [command, ...args] = network.inHost(curl);
        const host = curlMbPerS((await promisify(execFile)(command, args)).stdout);
        const guest = curlMbPerS((await daemon.exec(sandbox.id, curl)).stdout);
        ctx.log(`network round ${i + 1}: host ${host.toFixed(1)}, guest ${guest.toFixed(1)} MB/s`);
        return { host, guest };
      });
      return { 'host-download': rounds.map((r) => r.host), 'guest-download': rounds.map((r) => r.guest) };
    } finally {
      await daemon.remove(sandbox.id);
    }
  },
};
