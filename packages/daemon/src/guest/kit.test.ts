import { describe, expect, it } from 'vitest';
import { CacheKey } from './cache-key.js';
import { parseLdd } from './kit.js';
import { ext4SizeMiB } from './rootfs.js';

describe('kit and cache keys', () => {
  it('parses ldd output into libraries and the loader', () => {
    const out = [
      '\tlinux-vdso.so.1 (0x00007ffd)',
      '\tlibdl.so.2 => /lib/x86_64-linux-gnu/libdl.so.2 (0x00007f8e)',
      '\tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f8e)',
      '\t/lib64/ld-linux-x86-64.so.2 (0x00007f8e)',
    ].join('\n');
    expect(parseLdd(out)).toEqual({
      libraries: ['/lib/x86_64-linux-gnu/libdl.so.2', '/lib/x86_64-linux-gnu/libc.so.6'],
      loader: '/lib64/ld-linux-x86-64.so.2',
    });
  });

  it('changes the key when any input changes, and only then', () => {
    const key = (v: string) => new CacheKey().add('a', 'x').add('b', v).digest();
    expect(key('1')).toBe(key('1'));
    expect(key('1')).not.toBe(key('2'));
    // Labels and lengths are part of the key, so moved boundaries do not collide.
    expect(new CacheKey().add('a', 'bc').digest()).not.toBe(new CacheKey().add('ab', 'c').digest());
  });

  it('sizes ext4 images with room for metadata and headroom', () => {
    expect(ext4SizeMiB(100 * 1048576, 0)).toBeGreaterThan(100);
    expect(ext4SizeMiB(0, 2048)).toBeGreaterThanOrEqual(2048);
  });
});
