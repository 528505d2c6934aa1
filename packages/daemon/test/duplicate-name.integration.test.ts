// Two creates with the same name at the same moment (real QEMU microVMs): one
// sandbox gets the name, the other create gets the same 409 `name_taken` a
// later duplicate gets, and the VM started or claimed from the warm pool for
// the loser is stopped and its files removed.
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect } from 'vitest';
import { it, TestDaemon } from './fixture.js';

/** A TCP port on 127.0.0.1 that nothing listens on now. */
async function freePort(): Promise<number> {
  const server = net.createServer();
  await new Promise<void>((resolve, reject) => server.once('error', reject).listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as net.AddressInfo;
  await new Promise((resolve) => server.close(resolve));
  return port;
}

describe('creating two sandboxes with one name at once (real QEMU microVM)', () => {
  // A pool of two: both racing creates can claim a warm VM, so the loser's must be given back.
  const daemon = new TestDaemon({ CAPSULE_WARM_POOL_SIZE: '2' });
  beforeAll(async () => {
    await daemon.start();
    await daemon.waitForWarmSnapshot(180_000, 2);
  });
  afterAll(() => daemon.destroy());

  it('gives the name to one, refuses the other with name_taken, and leaks no VM', async () => {
    // Which create's name check runs first is up to the event loop: when nothing between a create's
    // check and its insert waits on I/O (as today) the check refuses the second; when something does,
    // the store's unique index does. Both must give the same answer. Each publishes a host port, which
    // the loser must give back.
    const hostPorts = [await freePort(), await freePort()];
    const racing = await Promise.all(
      hostPorts.map((hostPort) => daemon.request('POST', '/v1/sandboxes', { name: 'twin', ports: [{ hostPort, guestPort: 80 }] })),
    );
    const won = racing.filter((r) => r.status === 201);
    const lost = racing.filter((r) => r.status !== 201);
    expect(won.length, racing.map((r) => r.text).join('\n')).toBe(1);
    expect(lost.map((r) => [r.status, r.body.error?.code])).toEqual([[409, 'name_taken']]);
    const winner = won[0]!.body.id as string;
    // The loser's host port is given back.
    const loserPort = hostPorts[racing.indexOf(lost[0]!)]!;
    const probe = net.createServer();
    await new Promise<void>((resolve, reject) => probe.once('error', reject).listen(loserPort, '127.0.0.1', resolve));
    await new Promise((resolve) => probe.close(resolve));

    // The same answer as a duplicate made after the fact.
    const later = await daemon.request('POST', '/v1/sandboxes', { name: 'twin' });
    expect([later.status, later.body.error?.code]).toEqual([409, 'name_taken']);
    expect(lost[0]!.body.error.message).toBe(later.body.error.message);

    expect((await daemon.api.sandboxes(true)).map((s) => s.id)).toEqual([winner]);
    expect((await daemon.api.exec('twin', ['true'])).exitCode).toBe(0);

    // With the winner removed and the daemon stopped (which stops its pool VMs), nothing may be left:
    // a loser's VM that was started or claimed and not discarded would still run, or keep its folders.
    await daemon.api.removeSandbox(winner);
    await daemon.stop();
    expect(daemon.qemuPids()).toEqual([]);
    expect(daemon.runtimeLeftovers()).toEqual([]);
    const stateSandboxes = path.join(daemon.stateDir, 'sandboxes');
    expect(fs.existsSync(stateSandboxes) ? fs.readdirSync(stateSandboxes) : []).toEqual([]);
  });
});
