import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { startingSandboxRow } from './sandbox-row.test-fixture.js';
import { isUniqueViolation, Store } from './store.js';

describe('store (real SQLite, in memory)', () => {
  let store: Store;
  beforeEach(async () => {
    store = await Store.open(':memory:');
  });
  afterEach(() => store.close());

  it('records every transition in the history, in order', async () => {
    await store.insertSandbox(startingSandboxRow('sb_a', null));
    await store.transition('sb_a', 'running', 'user', undefined, { boot_ms: 42 });
    await store.transition('sb_a', 'error', 'crash', 'QEMU exited');
    const sandbox = await store.getSandbox('sb_a');
    expect(sandbox).toMatchObject({ state: 'error', state_reason: 'crash', state_message: 'QEMU exited', boot_ms: 42 });
    expect((await store.history('sb_a')).map((h) => [h.state, h.reason])).toEqual([
      ['starting', 'user'],
      ['running', 'user'],
      ['error', 'crash'],
    ]);
  });

  it('keeps names unique among live sandboxes but reusable after a kill', async () => {
    await store.insertSandbox(startingSandboxRow('sb_a', 'web'));
    const taken = await store.insertSandbox(startingSandboxRow('sb_b', 'web')).catch((err: unknown) => err);
    expect(isUniqueViolation(taken, 'sandboxes.name')).toBe(true);
    // A clash on another column is not a name taken.
    const sameId = await store.insertSandbox(startingSandboxRow('sb_a', 'other')).catch((err: unknown) => err);
    expect(String(sameId)).toMatch(/UNIQUE constraint failed: sandboxes.id/);
    expect(isUniqueViolation(sameId, 'sandboxes.name')).toBe(false);
    await store.transition('sb_a', 'killed', 'user');
    await store.insertSandbox(startingSandboxRow('sb_b', 'web'));
    expect((await store.getSandbox('web'))?.id).toBe('sb_b');
  });

  it('finds running sandboxes whose timeout has passed, and only those', async () => {
    const now = new Date('2026-01-01T12:00:00Z');
    await store.insertSandbox(startingSandboxRow('sb_past', null));
    await store.insertSandbox(startingSandboxRow('sb_future', null));
    await store.insertSandbox(startingSandboxRow('sb_none', null));
    await store.insertSandbox(startingSandboxRow('sb_paused', null));
    for (const id of ['sb_past', 'sb_future', 'sb_none']) await store.transition(id, 'running', 'user');
    await store.transition('sb_paused', 'paused', 'user');
    await store.setTimeout('sb_past', 60_000, '2026-01-01T11:59:59.000Z');
    await store.setTimeout('sb_future', 60_000, '2026-01-01T12:00:01.000Z');
    await store.setTimeout('sb_paused', 60_000, '2026-01-01T11:00:00.000Z');
    expect((await store.expiredSandboxes(now)).map((s) => s.id)).toEqual(['sb_past']);
  });

  it('lists killed sandboxes only when asked', async () => {
    await store.insertSandbox(startingSandboxRow('sb_a', null));
    await store.insertSandbox(startingSandboxRow('sb_b', null));
    await store.transition('sb_a', 'killed', 'user');
    expect((await store.listSandboxes({ includeKilled: false })).map((s) => s.id)).toEqual(['sb_b']);
    expect((await store.listSandboxes({ includeKilled: true })).map((s) => s.id)).toEqual(['sb_a', 'sb_b']);
  });

  it("keeps running and paused sandboxes' published ports, not failed or killed ones'", async () => {
    for (const id of ['sb_run', 'sb_paused', 'sb_failed']) {
      await store.insertSandbox(startingSandboxRow(id, null));
      await store.insertSandboxPorts([{ sandbox_id: id, host_ip: '127.0.0.1', host_port: 8000 + id.length, guest_port: 80 }]);
    }
    await store.transition('sb_run', 'running', 'user');
    await store.transition('sb_paused', 'paused', 'user');
    await store.transition('sb_failed', 'error', 'crash');
    expect((await store.portsOfLiveSandboxes()).map((p) => p.sandbox_id).sort()).toEqual(['sb_paused', 'sb_run']);
  });

  it('records TAP leases with unique slots, and frees them', async () => {
    const lease = (sandboxId: string, slot: number) => ({
      sandbox_id: sandboxId,
      slot,
      netns: `/run/netns/capsule-t-${sandboxId}`,
      host_ifname: `cap${slot}`,
      host_address: '10.201.0.1',
      netns_address: '10.201.0.2',
      created_at: new Date().toISOString(),
    });
    await store.insertNetworkLease(lease('sb_a', 0));
    await store.insertNetworkLease(lease('sb_b', 1));
    expect(String(await store.insertNetworkLease(lease('sb_c', 1)).catch((err: unknown) => err))).toMatch(
      /UNIQUE constraint failed: network_leases.slot/,
    );
    expect((await store.usedNetworkLeaseSlots()).sort()).toEqual([0, 1]);
    expect(await store.getNetworkLease('sb_b')).toMatchObject({ slot: 1, host_ifname: 'cap1' });
    await store.deleteNetworkLease('sb_a');
    expect((await store.listNetworkLeases()).map((l) => l.sandbox_id)).toEqual(['sb_b']);
    expect(await store.getNetworkLease('sb_a')).toBeUndefined();
  });
});
