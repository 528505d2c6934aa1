import { describe, expect, it } from 'vitest';
import {
  parseAccelArg,
  parseCpuModel,
  parseCpuTicks,
  parseKsmMergedPages,
  parseMemTotalMiB,
  parsePssKiB,
  parseQemuVersion,
  parseTcgCodePssKiB,
} from './machine.mjs';

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

  it("reads QEMU's version with its distribution suffix", () => {
    expect(
      parseQemuVersion('QEMU emulator version 7.2.22 (Debian 1:7.2+dfsg-7+deb12u18+b3)\nCopyright (c) 2003-2022 Fabrice Bellard\n'),
    ).toBe('7.2.22 (Debian 1:7.2+dfsg-7+deb12u18+b3)');
    expect(parseQemuVersion('QEMU emulator version 8.1.0\n')).toBe('8.1.0');
  });

  it('adds user and system ticks of /proc/PID/stat, past a command name with spaces and parentheses', () => {
    const stat = '42 (ksm d) (x) S 2 0 0 0 -1 2097216 0 0 0 0 1234 56 0 0 25 5 1 0 60 0 0';
    expect(parseCpuTicks(stat)).toBe(1290);
  });

  it("reads QEMU's -accel value from its command line", () => {
    expect(parseAccelArg(['qemu-system-x86_64', '-name', 'sb_x', '-accel', 'tcg,tb-size=64', '-m', '512M', ''].join('\0'))).toBe(
      'tcg,tb-size=64',
    );
    expect(parseAccelArg(['qemu-system-x86_64', '-name', 'sb_x', ''].join('\0'))).toBeUndefined();
  });

  it("counts a process's pages KSM merged, zero pages included", () => {
    const stat = 'ksm_rmap_items 900\nksm_zero_pages 12\nksm_merging_pages 300\nksm_process_profit 1000\nksm_merge_any: no\n';
    expect(parseKsmMergedPages(stat)).toBe(312);
    expect(parseKsmMergedPages('ksm_rmap_items 0\n')).toBe(0);
  });

  it('reads Pss, not Rss, from smaps_rollup', () => {
    const rollup =
      '55a4c000-7ffd1000 ---p 00000000 00:00 0 [rollup]\nRss:              201728 kB\nPss:              118210 kB\nPss_Anon:          90000 kB\n';
    expect(parsePssKiB(rollup)).toBe(118210);
    expect(() => parsePssKiB('Rss: 1 kB\n')).toThrow(/Pss/);
  });

  it("counts only TCG's code buffer: the anonymous mapping both writable and executable", () => {
    const smaps = [
      '7fa503fff000-7fa523fff000 rw-p 00000000 fe:00 1466756                    /var/lib/capsule/sandboxes/sb_x/paused/memory (deleted)',
      'Rss:               80000 kB',
      'Pss:               72000 kB',
      '7fa524000000-7fa563fff000 rwxp 00000000 00:00 0 ',
      'Rss:               38912 kB',
      'Pss:               38912 kB',
      '5579f2e9b000-5579f3432000 r-xp 00407000 fe:00 2170893                    /usr/bin/qemu-system-x86_64',
      'Pss:                2706 kB',
      '557a0d2b7000-557a0deb7000 rw-p 00000000 00:00 0                          [heap]',
      'Pss:                5440 kB',
      '',
    ].join('\n');
    expect(parseTcgCodePssKiB(smaps)).toBe(38912);
    expect(parseTcgCodePssKiB(smaps.replace('rwxp', 'rw-p'))).toBe(0);
  });
});
