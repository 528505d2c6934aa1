import { describe, expect, it } from 'vitest';
import { moduleLoadOrder, moduleName, readModuleDepends } from './kernel-modules.js';
import { parseKernelPackage } from './kernel.js';

describe('kernel modules', () => {
  it('reads depends= from a module image', () => {
    const ko = Buffer.concat([Buffer.from('\x7fELF junk\0license=GPL\0depends=virtio,virtio-ring\0vermagic=6.1\0')]);
    expect(readModuleDepends(ko)).toEqual(['virtio', 'virtio_ring']);
    expect(readModuleDepends(Buffer.from('\0depends=\0'))).toEqual([]);
    expect(readModuleDepends(Buffer.from('no modinfo'))).toEqual([]);
  });

  it('orders modules after their dependencies, skipping built-in ones', () => {
    const deps: Record<string, string[]> = {
      virtio_mmio: ['virtio', 'virtio_ring'],
      virtio: ['virtio_ring'],
      virtio_ring: [],
      virtio_blk: ['virtio', 'virtio_ring', 'builtin_thing'],
    };
    expect(moduleLoadOrder(['virtio_mmio', 'virtio-blk'], (n) => deps[n])).toEqual(['virtio_ring', 'virtio', 'virtio_mmio', 'virtio_blk']);
  });

  it('fails on a wanted module that is missing, and on cycles', () => {
    expect(() => moduleLoadOrder(['nope'], () => undefined)).toThrow(/nope is not in the kernel package/);
    const cyclic: Record<string, string[]> = { a: ['b'], b: ['a'] };
    expect(() => moduleLoadOrder(['a'], (n) => cyclic[n])).toThrow(/cycle: a -> b -> a/);
  });

  it('normalises module names', () => {
    expect(moduleName('/lib/modules/x/virtio-rng.ko')).toBe('virtio_rng');
  });

  it('resolves the versioned kernel package from apt-cache output', () => {
    const out = 'linux-image-cloud-amd64\n  Depends: linux-image-6.1.0-56-cloud-amd64\n';
    expect(parseKernelPackage(out)).toBe('linux-image-6.1.0-56-cloud-amd64');
    expect(parseKernelPackage('linux-image-cloud-amd64\n')).toBeUndefined();
  });
});
