import { describe, expect, it } from 'vitest';
import { parseCpuModel, parseMemTotalMiB, parsePssKiB, parseQemuVersion } from './machine.mjs';

describe('machine description parsing', () => {
  it('reads the CPU model from /proc/cpuinfo', () => {
    const cpuinfo = 'processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC 7B13\nprocessor\t: 1\nmodel name\t: AMD EPYC 7B13\n';
    expect(parseCpuModel(cpuinfo)).toBe('AMD EPYC 7B13');
    expect(parseCpuModel('processor\t: 0\n')).toBe('unknown');
  });

  it('reads MemTotal in MiB', () => {
    expect(parseMemTotalMiB('MemTotal:       24683520 kB\nMemFree:        1 kB\n')).toBe(24105);
    expect(() => parseMemTotalMiB('MemFree: 1 kB\n')).toThrow(/MemTotal/);
  });

  it('reads QEMU\'s version with its distribution suffix', () => {
    expect(parseQemuVersion('QEMU emulator version 7.2.22 (Debian 1:7.2+dfsg-7+deb12u18+b3)\nCopyright (c) 2003-2022 Fabrice Bellard\n')).toBe('7.2.22 (Debian 1:7.2+dfsg-7+deb12u18+b3)');
    expect(parseQemuVersion('QEMU emulator version 8.1.0\n')).toBe('8.1.0');
  });

  it('reads Pss, not Rss, from smaps_rollup', () => {
    const rollup = '55a4c000-7ffd1000 ---p 00000000 00:00 0 [rollup]\nRss:              201728 kB\nPss:              118210 kB\nPss_Anon:          90000 kB\n';
    expect(parsePssKiB(rollup)).toBe(118210);
    expect(() => parsePssKiB('Rss: 1 kB\n')).toThrow(/Pss/);
  });
});
