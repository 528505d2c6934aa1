// The official e2b SDK's snapshots, unchanged, against capsuled and real
// microVMs: a sandbox's snapshot is a Capsule snapshot template, listed with
// e2b's pagination, started from by name, checked with Template.exists and
// deleted; errors arrive as the SDK's own error types. Two VMs in all: the
// source and one sandbox started from its snapshot.
import { afterAll, beforeAll, describe, expect } from 'vitest';
import { Sandbox, SandboxError, SandboxNotFoundError, Template } from 'e2b';
import { it, TestDaemon } from './fixture.js';

/** A snapshot writes the guest's whole memory: seconds here, but a shared CPU under TCG may stretch it past the SDK's default minute. */
const SLOW_CALL = { requestTimeoutMs: 170_000 };

async function allPages(paginator: ReturnType<typeof Sandbox.listSnapshots>) {
  const items = [];
  let pages = 0;
  while (paginator.hasNext) {
    items.push(...(await paginator.nextItems()));
    pages++;
  }
  return { ids: items.map((s) => s.snapshotId), pages };
}

async function rejection(promise: Promise<unknown>): Promise<SandboxError> {
  const err = await promise.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(SandboxError);
  return err as SandboxError;
}

describe('e2b snapshots against capsuled (real QEMU microVMs)', () => {
  // No warm pool: every VM here is one the test asked for.
  const daemon = new TestDaemon({ CAPSULE_LISTEN: 'http://127.0.0.1:0', CAPSULE_WARM_POOL_SIZE: '0' });
  const saved = { ...process.env };
  let source: Sandbox;
  // The tests follow one snapshot through its life, in order: a snapshot is too slow under TCG to take for every test.
  let unnamed = '';

  beforeAll(async () => {
    await daemon.start();
    const { tcpAddress } = await daemon.api.info();
    process.env.E2B_API_URL = `http://${tcpAddress}`;
    process.env.E2B_SANDBOX_URL = `http://${tcpAddress}`;
    process.env.E2B_API_KEY = (await daemon.api.createApiKey('e2b-snapshots')).key;
    source = await Sandbox.create('base', { timeoutMs: 10 * 60_000 });
  });
  afterAll(async () => {
    await source?.kill().catch(() => undefined);
    process.env = saved;
    await daemon.destroy();
  });

  it('snapshots a sandbox by name and by id, and lists them page by page and by source', async () => {
    await source.files.write('/home/user/note.txt', 'before the snapshot');
    expect(await source.createSnapshot({ name: 'e2b-snap', ...SLOW_CALL })).toEqual({ snapshotId: 'e2b-snap', names: ['e2b-snap'] });
    // The source runs on, and what it writes later is not in the snapshot.
    await source.files.write('/home/user/note.txt', 'after the snapshot');

    const second = await Sandbox.createSnapshot(source.sandboxId, SLOW_CALL);
    unnamed = second.snapshotId;
    expect(second.names).toEqual([unnamed]);
    expect(unnamed).toMatch(/^snapshot-[0-9a-f]{8}$/);

    expect(await allPages(Sandbox.listSnapshots({ limit: 1 }))).toEqual({ ids: ['e2b-snap', unnamed], pages: 2 });
    expect((await allPages(source.listSnapshots())).ids).toEqual(['e2b-snap', unnamed]);
    expect((await allPages(Sandbox.listSnapshots({ sandboxId: 'sb_other' }))).ids).toEqual([]);
    expect((await allPages(Sandbox.listSnapshots({ name: 'e2b-snap' }))).ids).toEqual(['e2b-snap']);
    expect(await Template.exists('e2b-snap')).toBe(true);
    expect(await Template.aliasExists('no-such-template')).toBe(false);
  });

  it("refuses bad, reserved and taken names with Capsule's code and hint, unknown sandboxes as the SDK's not-found error, and the base template", async () => {
    const bad = await rejection(source.createSnapshot({ name: 'Not A Name' }));
    expect(bad.statusCode).toBe(400);
    expect(bad.message).toMatch(/invalid_argument: "Not A Name" cannot name a snapshot \(a snapshot is a Capsule template: .*lower-case/);
    const taken = await rejection(source.createSnapshot({ name: 'e2b-snap' }));
    expect(taken.statusCode).toBe(409);
    expect(taken.message).toMatch(/name_taken: .*\(pick another name/);
    // Build templates with such names are swept away when the daemon starts: a snapshot must never be one of them.
    const kept = await rejection(source.createSnapshot({ name: 'build-step-mine' }));
    expect(kept.statusCode).toBe(400);
    expect(kept.message).toMatch(/invalid_argument: template names starting with "build-step-" are kept for template builds/);
    await expect(Sandbox.createSnapshot('sb_doesnotexist')).rejects.toBeInstanceOf(SandboxNotFoundError);
    // The base template is no snapshot; Capsule keeps it.
    const base = await rejection(Sandbox.deleteSnapshot('base'));
    expect(base.statusCode).toBe(400);
    expect(base.message).toMatch(/invalid_argument: template "base" was not built/);
  });

  it('starts a sandbox from the snapshot, keeps the snapshot while it lives, then deletes it for good', async () => {
    const restored = await Sandbox.create('e2b-snap', SLOW_CALL);
    try {
      expect(await restored.files.read('/home/user/note.txt')).toBe('before the snapshot');
      const inUse = await rejection(Sandbox.deleteSnapshot('e2b-snap'));
      expect(inUse.statusCode).toBe(409);
      expect(inUse.message).toMatch(/template_in_use/);
    } finally {
      await restored.kill();
    }

    expect(await Sandbox.deleteSnapshot('e2b-snap')).toBe(true);
    expect(await Sandbox.deleteSnapshot('e2b-snap')).toBe(false);
    expect((await allPages(Sandbox.listSnapshots())).ids).toEqual([unnamed]);
    expect(await Template.exists('e2b-snap')).toBe(false);
    // e2b's create answers a missing template with a plain SandboxError carrying the status.
    const gone = await rejection(Sandbox.create('e2b-snap'));
    expect(gone.statusCode).toBe(404);
    expect(gone.message).toMatch(/template_not_found/);

    expect(await Sandbox.deleteSnapshot(unnamed)).toBe(true);
    expect((await allPages(Sandbox.listSnapshots())).ids).toEqual([]);
  });
});
