import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { fileSizeLimit, jailMounts, VmJail } from './jail.js';

describe('the VMM jail, without a VM', () => {
  let work: string;
  beforeEach(() => {
    work = fs.mkdtempSync(path.join(os.tmpdir(), 'capsule-jail-unit-'));
  });
  afterEach(() => fs.rmSync(work, { recursive: true, force: true }));

  const spec = (rootDisk: string) => ({
    kernel: path.join(work, 'vmlinuz'),
    initramfs: path.join(work, 'initrd'),
    kitDisk: path.join(work, 'kit.ext4'),
    rootDisk,
    accel: 'tcg',
  });

  it('binds the disk, its backing chain and the runtime folder, and nothing else of the host', () => {
    const disks = path.join(work, 'disks');
    fs.mkdirSync(disks);
    const base = path.join(disks, 'base.ext4');
    fs.writeFileSync(base, '');
    const overlay = path.join(disks, 'overlay.qcow2');
    execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', '-F', 'raw', '-b', base, overlay, '1M']);
    const mounts = jailMounts({ ...spec(overlay), nic: { type: 'tap' } }, path.join(work, 'run'), [disks]);
    expect(mounts.readOnly).toEqual([base]);
    expect(mounts.owned).toEqual([path.join(work, 'run'), overlay]);
    expect(mounts.diskFolders).toEqual([disks]);
    expect(mounts.devices).toEqual(['/dev/net/tun']);
  });

  it('gives a VM its read-write volumes to own and its read-only ones to read, and lets it write as far as its largest disk', () => {
    const disks = path.join(work, 'disks');
    fs.mkdirSync(disks);
    const overlay = path.join(disks, 'overlay.qcow2');
    execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', overlay, '1G']);
    const data = path.join(work, 'data.ext4');
    const ref = path.join(work, 'ref.ext4');
    fs.writeFileSync(ref, '');
    fs.writeFileSync(data, '');
    fs.truncateSync(data, 8 * 1024 ** 3);
    const volumes = [
      { file: data, readOnly: false },
      { file: ref, readOnly: true },
    ];
    const mounts = jailMounts({ ...spec(overlay), volumes }, path.join(work, 'run'), [disks]);
    expect(mounts.owned).toEqual([path.join(work, 'run'), overlay, data]);
    expect(mounts.readOnly).toContain(ref);
    expect(mounts.readOnly).not.toContain(data);
    const slack = 1024 ** 3 + 512 * 1024 ** 2;
    // Without the volume, writes past the root disk's size would be refused (SIGXFSZ) though the guest may write all 8 GiB.
    expect(fileSizeLimit({ rootDisk: overlay, memoryMiB: 512 })).toBe(1024 ** 3 + slack);
    expect(fileSizeLimit({ rootDisk: overlay, memoryMiB: 512, volumes: [{ file: data, serial: 's', mount: '/d', readOnly: false }] })).toBe(
      8 * 1024 ** 3 + slack,
    );
  });

  it('attack: refuses a disk whose qcow2 header names a backing file outside the disk folders', () => {
    const disks = path.join(work, 'disks');
    fs.mkdirSync(disks);
    const overlay = path.join(disks, 'overlay.qcow2');
    // What a QEMU taken over by its guest could write into its own disk's header before its next start.
    execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', '-F', 'raw', '-u', '-b', '/etc/shadow', overlay, '1M']);
    expect(() => jailMounts(spec(overlay), path.join(work, 'run'), [disks])).toThrow(/outside Capsule's disk folders/);
    // Through a symlink inside the folder, too.
    fs.symlinkSync('/etc/passwd', path.join(disks, 'link.raw'));
    execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', '-F', 'raw', '-u', '-b', path.join(disks, 'link.raw'), overlay, '1M']);
    expect(() => jailMounts(spec(overlay), path.join(work, 'run'), [disks])).toThrow(/outside Capsule's disk folders/);
  });

  it('attack: refuses a shared memory file written after it was given to VMs', async () => {
    const jail = new VmJail({ ids: { first: 970000, count: 10 }, runtimeDir: path.join(work, 'run'), diskRoots: [work] });
    const memory = path.join(work, 'memory');
    fs.writeFileSync(memory, Buffer.alloc(4096));
    jail.checkSeal(memory);
    expect(fs.statSync(memory)).toMatchObject({ uid: 0, gid: 970000, mode: 0o100660 });
    jail.checkSeal(memory);
    // A hard link (a pin, a test's copy of a snapshot) is no change of its bytes.
    fs.linkSync(memory, `${memory}.link`);
    jail.checkSeal(memory);
    // Past the kernel's timestamp tick, as any later write is.
    await new Promise((r) => setTimeout(r, 50));
    const fd = fs.openSync(memory, 'r+');
    fs.writeSync(fd, 'x', 0);
    fs.closeSync(fd);
    expect(() => jail.checkSeal(memory)).toThrow(/changed after VMs were given it/);
    // A new file at that path (a rebuilt snapshot) is sealed afresh.
    fs.rmSync(memory);
    fs.rmSync(`${memory}.link`);
    fs.writeFileSync(memory, Buffer.alloc(4096));
    expect(() => jail.checkSeal(memory)).not.toThrow();
  });
});
