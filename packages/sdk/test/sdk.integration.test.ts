// The SDK against a real capsuled and real microVMs: the README's example.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CommandExitError, NotFoundError, Sandbox, TimeoutError } from '../src/index.js';
import { TestDaemon } from '../../daemon/test/fixture.js';

describe('@capsule/sdk against a real daemon (real QEMU microVM)', () => {
  const daemon = new TestDaemon();
  let sandbox: Sandbox;

  beforeAll(async () => {
    await daemon.start();
    sandbox = await Sandbox.create({ template: 'base', timeoutMs: 10 * 60_000, socketPath: daemon.socketPath, metadata: { suite: 'sdk' } });
  });
  afterAll(async () => {
    await sandbox?.kill().catch(() => undefined);
    await daemon.destroy();
  });

  it('runs a string command through bash and streams its output', async () => {
    const chunks: string[] = [];
    const result = await sandbox.commands.run('python3 -c "print(6 * 7)"; echo done', { onStdout: (c) => chunks.push(c) });
    expect(result.exitCode).toBe(0);
    expect(result.stdout).toBe('42\ndone\n');
    expect(chunks.join('')).toBe('42\ndone\n');
  });

  it('throws CommandExitError with the exit code and output of a failing command', async () => {
    const err = await sandbox.commands.run(['sh', '-c', 'echo bad >&2; exit 3']).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(CommandExitError);
    expect((err as CommandExitError).exitCode).toBe(3);
    expect((err as CommandExitError).stderr).toBe('bad\n');
  });

  it('times out a command with TimeoutError', async () => {
    await expect(sandbox.commands.run(['sleep', '30'], { timeoutMs: 500 })).rejects.toBeInstanceOf(TimeoutError);
  });

  it('sets the sandbox timeout', async () => {
    expect(sandbox.info.timeoutMs).toBe(600_000);
    await sandbox.setTimeout(60_000);
    expect(sandbox.info.timeoutMs).toBe(60_000);
    expect(Date.parse(sandbox.info.expiresAt!) - Date.now()).toBeLessThanOrEqual(60_000);
  });

  it('forks a sandbox into one that continues from now', async () => {
    await sandbox.commands.run('echo forked-state > /root/f');
    const [fork] = await sandbox.fork(1);
    expect(fork!.id).not.toBe(sandbox.id);
    expect((await fork!.commands.run('cat /root/f')).stdout).toBe('forked-state\n');
    await fork!.kill();
  });

  it('snapshots a sandbox as a template that new sandboxes continue from', async () => {
    await sandbox.commands.run('echo snapshot-state > /root/s');
    const template = await sandbox.snapshot('sdk-snap');
    expect(template).toMatchObject({ name: 'sdk-snap', ready: true, warmSnapshot: 'ready' });
    const clone = await Sandbox.create({ socketPath: daemon.socketPath, template: 'sdk-snap' });
    expect((await clone.commands.run('cat /root/s; hostname')).stdout).toBe(`snapshot-state\n${clone.id.replace('_', '-')}\n`);
    await clone.kill();
    await sandbox.client.deleteTemplate('sdk-snap');
    expect((await sandbox.client.listTemplates()).map((t) => t.name)).not.toContain('sdk-snap');
  });

  it("reaches the sandbox's agent through the daemon's proxy (Connect RPC and /files)", async () => {
    const agent = sandbox.client.agent(sandbox.id);
    const entry = await agent.filesystem.stat({ path: '/etc/hostname' });
    expect(entry.entry?.name).toBe('hostname');
    const listed = await agent.process.list({});
    expect(Array.isArray(listed.processes)).toBe(true);
    const missing = await agent.filesystem.stat({ path: '/no/such/file' }).catch((e: unknown) => e);
    expect(String(missing)).toMatch(/not_found|no such file/i);
  });

  it('connects to, lists and kills sandboxes', async () => {
    const again = await Sandbox.connect(sandbox.id, { socketPath: daemon.socketPath });
    expect(again.info.metadata).toEqual({ suite: 'sdk' });
    const listed = await Sandbox.list({ socketPath: daemon.socketPath });
    expect(listed.map((s) => s.id)).toContain(sandbox.id);
    await again.kill();
    await expect(Sandbox.connect('sb_nosuchsandboxxxxxxx', { socketPath: daemon.socketPath })).rejects.toBeInstanceOf(NotFoundError);
    expect((await sandbox.getInfo()).state).toBe('killed');
  });
});
