import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { findVirtioPortDevice, waitForVirtioPortDevice } from './virtio-port.js';

// A fake /sys/class/virtio-ports: one unnamed port, one console, ours.
const sysDir = mkdtempSync(join(tmpdir(), 'capsule-virtio-ports-'));
mkdirSync(join(sysDir, 'vport0p0'));
mkdirSync(join(sysDir, 'vport0p1'));
writeFileSync(join(sysDir, 'vport0p1', 'name'), 'org.qemu.guest_agent.0\n');
mkdirSync(join(sysDir, 'vport1p2'));
writeFileSync(join(sysDir, 'vport1p2', 'name'), 'capsule.agent\n');
afterAll(() => rmSync(sysDir, { recursive: true, force: true }));

describe('virtio port discovery', () => {
  it('finds the device whose sysfs name matches', () => {
    expect(findVirtioPortDevice('capsule.agent', sysDir)).toBe('/dev/vport1p2');
    expect(findVirtioPortDevice('org.qemu.guest_agent.0', sysDir)).toBe('/dev/vport0p1');
    expect(findVirtioPortDevice('other', sysDir)).toBeUndefined();
    expect(findVirtioPortDevice('capsule.agent', join(sysDir, 'missing'))).toBeUndefined();
  });

  it('waits for a port that appears later', async () => {
    const late = waitForVirtioPortDevice('late.port', sysDir);
    setTimeout(() => {
      mkdirSync(join(sysDir, 'vport2p1'));
      writeFileSync(join(sysDir, 'vport2p1', 'name'), 'late.port\n');
    }, 150);
    await expect(late).resolves.toBe('/dev/vport2p1');
  });
});
