import { describe, expect, it } from 'vitest';
import { DEFAULT_TCG_CODE_BUFFER_MIB } from '../config.js';
import { kernelCommandLine, qemuArgs, VmRuntimePaths, type VmSpec } from './qemu.js';
import { useTcgCodeBuffer } from './tcg-code-buffer.js';

const spec: VmSpec = {
  id: 'sb_x',
  accel: 'tcg',
  vcpus: 2,
  memoryMiB: 768,
  kernel: '/k/vmlinuz',
  initramfs: '/k/initrd',
  kitDisk: '/k/kit.ext4',
  rootDisk: '/s/overlay.qcow2',
  hostname: 'sb-x',
  agentPortId: 'agent-port',
};

describe('qemu command line', () => {
  const args = qemuArgs(spec, new VmRuntimePaths('/run/x'));
  const after = (flag: string) => args.filter((_, i) => args[i - 1] === flag);

  it('names the VM by sandbox id, so a pid can be recognised as ours', () => {
    expect(after('-name')).toEqual(['sb_x']);
  });

  it('uses the requested resources and accelerator', () => {
    expect(after('-m')).toEqual(['768M']);
    expect(after('-smp')).toEqual(['2']);
    expect(after('-accel')).toEqual(['tcg,tb-size=64']);
    expect(after('-cpu')).toEqual(['max']);
    expect(qemuArgs({ ...spec, accel: 'kvm' }, new VmRuntimePaths('/r'))).toEqual(expect.arrayContaining(['kvm', 'host']));
  });

  it('gives TCG the code buffer the daemon was set to (CAPSULE_TCG_CODE_BUFFER_MIB), and KVM none', () => {
    useTcgCodeBuffer(32);
    try {
      const accel = (s: VmSpec) => qemuArgs(s, new VmRuntimePaths('/r')).filter((_, i, all) => all[i - 1] === '-accel');
      expect(accel(spec)).toEqual(['tcg,tb-size=32']);
      expect(accel({ ...spec, accel: 'kvm' })).toEqual(['kvm']);
    } finally {
      useTcgCodeBuffer(DEFAULT_TCG_CODE_BUFFER_MIB);
    }
  });

  it('attaches the kit read-only and identifies disks by serial', () => {
    expect(args).toContain('id=kit,file=/k/kit.ext4,format=raw,if=none,readonly=on');
    expect(after('-device')).toEqual(
      expect.arrayContaining(['virtio-blk-device,drive=root,serial=capsule-root', 'virtio-blk-device,drive=kit,serial=capsule-kit']),
    );
  });

  it('boots the kernel, but gives a restore none to read (RAM comes from the saved state)', () => {
    expect(after('-kernel')).toEqual(['/k/vmlinuz']);
    expect(after('-initrd')).toEqual(['/k/initrd']);
    const restore = qemuArgs({ ...spec, incoming: true }, new VmRuntimePaths('/r'));
    expect(restore).not.toContain('-kernel');
    expect(restore).not.toContain('-append');
    expect(restore.slice(-2)).toEqual(['-incoming', 'defer']);
  });

  it("turns QEMU's own seccomp filter on, spawning forbidden", () => {
    expect(after('-sandbox')).toEqual(['on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny']);
    const restore = qemuArgs({ ...spec, incoming: true }, new VmRuntimePaths('/r'));
    expect(restore[restore.indexOf('-sandbox') + 1]).toContain('spawn=deny');
  });

  it('puts every socket in the runtime folder', () => {
    expect(args.join(' ')).toContain('path=/run/x/agent.sock');
    expect(args.join(' ')).toContain('unix:/run/x/qmp.sock');
    expect(after('-pidfile')).toEqual(['/run/x/qemu.pid']);
    expect(kernelCommandLine(spec)).toContain('capsule.hostname=sb-x');
  });

  it('adds the bulk port on bulk.sock only to machines that have it (a machine recorded before it has none)', () => {
    expect(args.join(' ')).not.toContain('capsule.bulk');
    const withBulk = qemuArgs({ ...spec, bulkPort: true }, new VmRuntimePaths('/run/x'));
    expect(withBulk).toEqual(
      expect.arrayContaining([
        'socket,id=bulk,path=/run/x/bulk.sock,server=on,wait=off',
        'virtserialport,chardev=bulk,name=capsule.bulk,id=bulk-port',
      ]),
    );
    // After the agent's port, so the agent's keeps its device number.
    expect(withBulk.indexOf('virtserialport,chardev=bulk,name=capsule.bulk,id=bulk-port')).toBeGreaterThan(
      withBulk.findIndex((a) => a.includes('name=capsule.agent')),
    );
  });

  it('tells TCG guests the host TSC frequency, and KVM guests nothing', () => {
    expect(kernelCommandLine({ ...spec, tscKhz: 2596100 })).toContain('tsc_early_khz=2596100 tsc=reliable');
    expect(kernelCommandLine({ ...spec, accel: 'kvm', tscKhz: 2596100 })).not.toContain('tsc_early_khz');
    expect(kernelCommandLine(spec)).not.toContain('tsc_early_khz');
  });

  it("runs the agent without V8's JIT under TCG only", () => {
    expect(kernelCommandLine(spec)).toContain('capsule.jitless=1');
    expect(kernelCommandLine({ ...spec, accel: 'kvm' })).not.toContain('capsule.jitless');
  });
});

describe('qemu volumes', () => {
  const volumes = [
    { file: '/s/volumes/data.ext4', serial: 'capsule-vol-0', mount: '/data', readOnly: false },
    { file: '/s/volumes/ref.ext4', serial: 'capsule-vol-1', mount: '/ref', readOnly: true },
  ];

  it('adds each volume as a raw disk after every other device, read-only when asked, found by its serial', () => {
    const args = qemuArgs({ ...spec, volumes }, new VmRuntimePaths('/run/x'));
    expect(args).toContain('id=vol0,file=/s/volumes/data.ext4,format=raw,if=none,discard=unmap');
    expect(args).toContain('id=vol1,file=/s/volumes/ref.ext4,format=raw,if=none,readonly=on');
    const devices = args.filter((_, i) => args[i - 1] === '-device');
    // Devices keep their order (and so their slots) whether volumes follow them or not: saved states still load.
    expect(devices.slice(0, -2)).toEqual(qemuArgs(spec, new VmRuntimePaths('/run/x')).filter((_, i, all) => all[i - 1] === '-device'));
    expect(devices.slice(-2)).toEqual([
      'virtio-blk-device,drive=vol0,serial=capsule-vol-0',
      'virtio-blk-device,drive=vol1,serial=capsule-vol-1',
    ]);
  });

  it("tells the guest's init where to mount each", () => {
    expect(kernelCommandLine({ ...spec, volumes })).toContain('capsule.volume=capsule-vol-0,/data,rw capsule.volume=capsule-vol-1,/ref,ro');
    expect(kernelCommandLine(spec)).not.toContain('capsule.volume');
  });
});

describe('qemu network device', () => {
  it('gives a VM without a NIC no network device and no network kernel option', () => {
    const args = qemuArgs(spec, new VmRuntimePaths('/r'));
    expect(args).not.toContain('-netdev');
    expect(kernelCommandLine(spec)).not.toContain('capsule.net=');
  });

  it('plugs a user-mode NIC into its own slirp with the addresses every guest is configured with', () => {
    const withNic: VmSpec = { ...spec, nic: { type: 'user' } };
    const args = qemuArgs(withNic, new VmRuntimePaths('/r'));
    const netdev = args[args.indexOf('-netdev') + 1];
    expect(netdev).toBe('user,id=net0,ipv4=on,ipv6=off,net=10.0.2.0/24,host=10.0.2.2,dns=10.0.2.3');
    expect(args).toContain('virtio-net-device,mac=52:54:00:c0:ff:ee,id=nic0,netdev=net0');
    expect(kernelCommandLine(withNic)).toContain('capsule.net=10.0.2.15/24,10.0.2.2,10.0.2.3,52:54:00:c0:ff:ee');
  });

  it('plugs the NIC of a template VM into nothing, so that its snapshot holds no backend state', () => {
    const withNic: VmSpec = { ...spec, nic: { type: 'none' } };
    const args = qemuArgs(withNic, new VmRuntimePaths('/r'));
    expect(args).not.toContain('-netdev');
    expect(args).toContain('virtio-net-device,mac=52:54:00:c0:ff:ee,id=nic0');
    expect(kernelCommandLine(withNic)).toContain('capsule.net=');
  });

  it('opens a TAP NIC by name, without scripts', () => {
    const args = qemuArgs({ ...spec, nic: { type: 'tap', ifname: 'tap0', netns: '/run/netns/x' } }, new VmRuntimePaths('/r'));
    expect(args[args.indexOf('-netdev') + 1]).toBe('tap,id=net0,ifname=tap0,script=no,downscript=no,vnet_hdr=off');
  });
});
