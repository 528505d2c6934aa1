// What a sandbox must not reach, in both network modes, with real microVMs:
// the daemon runs inside a network namespace this test makes (see
// test-networks.ts), so "the host" here is that namespace, and "the internet"
// a public-range address served from a second one. A sandbox reaches that and
// resolves names; it does not reach the host's loopback through 10.0.2.2 (the
// daemon's TCP API, another sandbox's published port, a host service), the
// host's own addresses, link-local metadata, or a private network the host
// routes to, unless (TAP mode) its allow-list names it. Nothing of the
// isolation is left after a stop, nor after a kill -9 and a restart.
// The tests of one mode, shared by a test file per mode: the two modes run as two files so that
// vitest can run them side by side; this module must hold no test file's own state.
import type { CreateSandboxRequest, Sandbox } from '@capsule/protocol';
import fs from 'node:fs';
import { beforeAll, describe, expect } from 'vitest';
import { stateTag } from '../src/network/tap-network.js';
import { it } from './fixture.js';
import { daemonInTestNetworks, HOST_UPLINK, HTTP_PORT, METADATA, OUTSIDE, PRIVATE_OUTSIDE, TEST_NAME } from './test-networks.js';

const canRun = process.getuid?.() === 0 && fs.existsSync('/dev/net/tun') && fs.existsSync('/usr/sbin/nft');
const API_PORT = 3000;
const HOST_SERVICE_PORT = 8081;
/** curl's exit codes for "could not connect" and "timed out": what a blocked destination looks like to the guest. */
const BLOCKED_EXITS = [7, 28];

/** Declares the tests of `mode` in the calling test file. */
export function describeIsolation(mode: 'user' | 'tap'): void {
  describe.skipIf(!canRun)(`${mode} mode: what a sandbox must not reach (real QEMU microVM, root, test network namespaces)`, () => {
    const { networks, daemon } = daemonInTestNetworks(mode, HOST_SERVICE_PORT, {
      CAPSULE_NETWORK: mode,
      CAPSULE_LISTEN: `http://0.0.0.0:${API_PORT}`,
      // Sandboxes restored from the base template's warm snapshot (the shared cache's, when another file made it),
      // as by default: a cold boot costs several times a restore under TCG. No pool: a pooled VM would hold a
      // namespace the leftover checks below must not see.
      CAPSULE_WARM_POOL_SIZE: '0',
    });
    /** Every name the daemon gives its namespaces, links and tables carries this tag of its state folder. */
    const tag = stateTag(daemon.stateDir);
    const created: string[] = [];

    const create = async (body: CreateSandboxRequest): Promise<Sandbox> => {
      const sandbox = await daemon.api.createSandbox(body);
      created.push(sandbox.id);
      return sandbox;
    };
    const curl = (id: string, url: string) => daemon.api.exec(id, ['curl', '-sS', '--max-time', '4', url]);
    /**
     * Whether each of `urls` is out of the guest's reach: any TCP connection made (even one answered by an error) is a
     * reach. The attempts run at once: a dropped one waits out curl's whole --max-time.
     */
    const expectBlocked = async (id: string, ...urls: string[]) => {
      const results = await Promise.all(urls.map((url) => curl(id, url)));
      urls.forEach((url, i) => {
        const result = results[i]!;
        expect(BLOCKED_EXITS, `${url} answered the guest (curl exit ${result.exitCode}: ${result.stdout}${result.stderr})`).toContain(
          result.exitCode,
        );
      });
    };
    const leftovers = () => ({
      namespaces: (fs.existsSync('/run/netns') ? fs.readdirSync('/run/netns') : []).filter((n) => n.startsWith(`capsule-${tag}-`)),
      links: networks
        .inHost('ip', '-o', 'link')
        .split('\n')
        .filter((l) => l.includes(`cs${tag}`)),
      tables: networks
        .inHost('nft', 'list', 'tables')
        .split('\n')
        .filter((l) => l.includes(`capsule_${tag}`)),
    });

    // Two sandboxes for the whole file (its tests only send traffic from them), made together as they are independent.
    let sandbox: Sandbox;
    let other: Sandbox;
    beforeAll(async () => {
      await daemon.waitForWarmSnapshot(600_000);
      [sandbox, other] = await Promise.all([create({}), create({ ports: [{ guestPort: 8000 }] })]);
    }, 660_000);

    it('reaches a public-range address, and resolves names through the guest DNS address', async () => {
      // A root daemon isolates its sandboxes, so it has nothing to warn about.
      const info = await daemon.api.info();
      expect(info.network).toBe(mode);
      expect(info).not.toHaveProperty('networkWarning');
      expect((await curl(sandbox.id, `http://${OUTSIDE}:${HTTP_PORT}/`)).stdout).toBe('outside');
      if (!networks.resolver) return; // This machine's resolv.conf names only a loopback resolver: nothing to serve DNS on.
      const resolved = await curl(sandbox.id, `http://${TEST_NAME}:${HTTP_PORT}/`);
      expect(resolved, resolved.stderr).toMatchObject({ exitCode: 0, stdout: 'outside' });
    });

    it("a sandbox cannot reach the daemon's TCP API", async () => {
      const addresses = ['10.0.2.2', HOST_UPLINK, ...(sandbox.network.hostAddress ? [sandbox.network.hostAddress] : [])];
      await expectBlocked(sandbox.id, ...addresses.map((address) => `http://${address}:${API_PORT}/health`));
    });

    it("a sandbox cannot reach another sandbox's published port", async () => {
      const published = other.ports[0]!.hostPort;
      await expectBlocked(sandbox.id, ...['10.0.2.2', HOST_UPLINK].map((address) => `http://${address}:${published}/`));
    });

    it('a sandbox cannot reach a service of the host, on its loopback or its own addresses', async () => {
      await expectBlocked(sandbox.id, ...['10.0.2.2', HOST_UPLINK].map((address) => `http://${address}:${HOST_SERVICE_PORT}/`));
      expect(networks.hostService.lines).toEqual([]);
    });

    it('a sandbox cannot reach the link-local metadata address 169.254.169.254', async () => {
      await expectBlocked(sandbox.id, `http://${METADATA}:${HTTP_PORT}/`);
    });

    it('a sandbox cannot reach a private network the host routes to', async () => {
      await expectBlocked(
        sandbox.id,
        `http://${PRIVATE_OUTSIDE}:${HTTP_PORT}/`,
        ...(networks.resolver ? [`http://${networks.resolver}:${HTTP_PORT}/`] : []),
      );
    });

    it.runIf(mode === 'tap')('an allow-list naming a private network or the metadata address opens exactly those', async () => {
      const allowed = await create({ egress: { allow: [`${PRIVATE_OUTSIDE.replace(/\d+$/, '0')}/24`, METADATA] } });
      const [privateNet, metadata] = await Promise.all([
        curl(allowed.id, `http://${PRIVATE_OUTSIDE}:${HTTP_PORT}/`),
        curl(allowed.id, `http://${METADATA}:${HTTP_PORT}/`),
        expectBlocked(
          allowed.id,
          `http://10.0.2.2:${API_PORT}/health`,
          ...(networks.resolver ? [`http://${networks.resolver}:${HTTP_PORT}/`] : []),
        ),
      ]);
      expect(privateNet.stdout).toBe('outside');
      expect(metadata.stdout).toBe('outside');
      await daemon.api.removeSandbox(allowed.id);
    });

    it('keeps the isolation across a kill -9 of the daemon, and leaves no namespace, link or nft table after a stop', async () => {
      await daemon.kill9();
      await daemon.start();
      const [reached] = await Promise.all([
        curl(sandbox.id, `http://${OUTSIDE}:${HTTP_PORT}/`),
        expectBlocked(sandbox.id, `http://${PRIVATE_OUTSIDE}:${HTTP_PORT}/`, `http://10.0.2.2:${API_PORT}/health`),
      ]);
      expect(reached.stdout).toBe('outside');

      // A crash that takes the VMs too: the restarted daemon finds only leftovers.
      await daemon.kill9();
      for (const pid of daemon.qemuPids()) process.kill(pid, 'SIGKILL');
      await daemon.start();
      expect(leftovers().namespaces).toEqual([]);
      await Promise.all(created.map((id) => daemon.request('DELETE', `/v1/sandboxes/${id}`)));

      // A fresh sandbox, then a clean stop with nothing running: everything goes.
      const last = await create({});
      expect((await curl(last.id, `http://${OUTSIDE}:${HTTP_PORT}/`)).stdout).toBe('outside');
      await daemon.api.removeSandbox(last.id);
      // No wait here: a removal returns once the jail's bubblewrap, which leaves the namespace after QEMU, is gone too.
      await daemon.stop();
      expect(leftovers()).toEqual({ namespaces: [], links: [], tables: [] });
      // Forwarding, off in the test's namespace before, is off again.
      expect(networks.inHost('sysctl', '-n', 'net.ipv4.ip_forward').trim()).toBe('0');
      expect(daemon.qemuPids()).toEqual([]);
    });
  });
}
