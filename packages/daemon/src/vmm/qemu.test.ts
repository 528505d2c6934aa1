import { describe, expect, it } from 'vitest';
import { kernelCommandLine, qemuArgs, VmRuntimePaths, type VmSpec } from './qemu.js';

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
    expect(after('-accel')).toEqual(['tcg']);
    expect(after('-cpu')).toEqual(['max']);
    expect(qemuArgs({ ...spec, accel: 'kvm' }, new VmRuntimePaths('/r'))).toEqual(expect.arrayContaining(['kvm', 'host']));
  });

  it('attaches the kit read-only and identifies disks by serial', () => {
    expect(args).toContain('id=kit,file=/k/kit.ext4,format=raw,if=none,readonly=on');
    expect(after('-device')).toEqual(expect.arrayContaining(['virtio-blk-device,drive=root,serial=capsule-root', 'virtio-blk-device,drive=kit,serial=capsule-kit']));
  });

  it('puts every socket in the runtime folder', () => {
    expect(args.join(' ')).toContain('path=/run/x/agent.sock');
    expect(args.join(' ')).toContain('unix:/run/x/qmp.sock');
    expect(after('-pidfile')).toEqual(['/run/x/qemu.pid']);
    expect(kernelCommandLine(spec)).toContain('capsule.hostname=sb-x');
  });

  it('tells TCG guests the host TSC frequency, and KVM guests nothing', () => {
    expect(kernelCommandLine({ ...spec, tscKhz: 2596100 })).toContain('tsc_early_khz=2596100 tsc=reliable');
    expect(kernelCommandLine({ ...spec, accel: 'kvm', tscKhz: 2596100 })).not.toContain('tsc_early_khz');
    expect(kernelCommandLine(spec)).not.toContain('tsc_early_khz');
  });
});
