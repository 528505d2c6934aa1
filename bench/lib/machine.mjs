// The description of the machine a run measured, saved with its results: the
// parsers are pure (machine.test.mjs); describeMachine reads the host.
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';

/** The first "model name" of /proc/cpuinfo. */
export function parseCpuModel(cpuinfo) {
  return /^model name\s*:\s*(.+)$/m.exec(cpuinfo)?.[1]?.trim() ?? 'unknown';
}

/** MemTotal of /proc/meminfo, in MiB. */
export function parseMemTotalMiB(meminfo) {
  const kib = /^MemTotal:\s+(\d+) kB$/m.exec(meminfo)?.[1];
  if (kib === undefined) throw new Error('no MemTotal in /proc/meminfo');
  return Math.round(Number(kib) / 1024);
}

/** "QEMU emulator version 7.2.19 (Debian 1:7.2+dfsg-7+deb12u18)" -> "7.2.19 (Debian 1:7.2+dfsg-7+deb12u18)". */
export function parseQemuVersion(text) {
  return /version\s+(\S+(?:\s+\([^)]*\))?)/.exec(text)?.[1] ?? (text.split('\n')[0]?.trim() || 'unknown');
}

/** Pss of /proc/PID/smaps_rollup, in KiB: the process's share of every page it maps (a page mapped by k processes counts 1/k). */
export function parsePssKiB(smapsRollup) {
  const kib = /^Pss:\s+(\d+) kB$/m.exec(smapsRollup)?.[1];
  if (kib === undefined) throw new Error('no Pss in smaps_rollup');
  return Number(kib);
}

function git(args, cwd) {
  try {
    return execFileSync('git', args, { cwd, encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim();
  } catch {
    return undefined;
  }
}

/**
 * `daemonInfo` is the daemon's GET /v1/info (the accelerator it actually
 * uses, and why); `guestKernel` the `uname -r` of a sandbox.
 */
export function describeMachine({ repo, daemonInfo, guestKernel }) {
  const commit = git(['rev-parse', 'HEAD'], repo);
  const dirty = git(['status', '--porcelain', '--untracked-files=no'], repo);
  return {
    cpuModel: parseCpuModel(fs.readFileSync('/proc/cpuinfo', 'utf8')),
    cores: os.cpus().length,
    memoryMiB: parseMemTotalMiB(fs.readFileSync('/proc/meminfo', 'utf8')),
    accel: daemonInfo.accel,
    accelReason: daemonInfo.accelReason,
    qemuVersion: parseQemuVersion(execFileSync('qemu-system-x86_64', ['--version'], { encoding: 'utf8' })),
    hostKernel: os.release(),
    guestKernel,
    os: /^PRETTY_NAME="?([^"\n]*)"?$/m.exec(fs.readFileSync('/etc/os-release', 'utf8'))?.[1] ?? 'unknown',
    node: process.version,
    gitCommit: commit === undefined ? 'unknown' : `${commit}${dirty ? ' (with uncommitted changes)' : ''}`,
    loadAverageAtStart: os.loadavg().map((l) => Number(l.toFixed(2))),
  };
}

/** Host memory of a set of processes, in MiB: their Pss added up, so pages they share are counted once. A zombie (no memory left) counts 0. */
export function pssMiB(pids) {
  let kib = 0;
  for (const pid of pids) {
    const text = fs.readFileSync(`/proc/${pid}/smaps_rollup`, 'utf8');
    if (text.trim() !== '') kib += parsePssKiB(text);
  }
  return kib / 1024;
}

/**
 * Pss of TCG's code buffer in one QEMU's /proc/PID/smaps, in KiB: the
 * anonymous mapping that is writable and executable at once (QEMU 7.2 maps
 * its translated guest code so). A VM under KVM has none, and neither does any
 * other mapping of QEMU's.
 */
export function parseTcgCodePssKiB(smaps) {
  let kib = 0;
  let inCodeBuffer = false;
  for (const line of smaps.split('\n')) {
    const mapping = /^[0-9a-f]+-[0-9a-f]+ (\S{4}) \S+ \S+ (\d+)\s*(.*)$/.exec(line);
    if (mapping) {
      inCodeBuffer = mapping[1].startsWith('rwx') && mapping[2] === '0' && mapping[3] === '';
      continue;
    }
    const pss = inCodeBuffer ? /^Pss:\s+(\d+) kB$/.exec(line) : null;
    if (pss) kib += Number(pss[1]);
  }
  return kib;
}

/** TCG's code buffers of a set of QEMUs, in MiB (Pss added up; 0 under KVM). */
export function tcgCodeMiB(pids) {
  let kib = 0;
  for (const pid of pids) kib += parseTcgCodePssKiB(fs.readFileSync(`/proc/${pid}/smaps`, 'utf8'));
  return kib / 1024;
}

/** MemAvailable of /proc/meminfo, in MiB. */
export function availableMiB() {
  const kib = /^MemAvailable:\s+(\d+) kB$/m.exec(fs.readFileSync('/proc/meminfo', 'utf8'))?.[1];
  if (kib === undefined) throw new Error('no MemAvailable in /proc/meminfo');
  return Number(kib) / 1024;
}

/** utime + stime of a /proc/PID/stat line, in clock ticks (the command name may hold spaces and parentheses). */
export function parseCpuTicks(stat) {
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return Number(fields[11]) + Number(fields[12]);
}

/** The value of QEMU's `-accel` in its argv (NUL-separated /proc/PID/cmdline): `tcg,tb-size=64`, `kvm`; undefined without one. */
export function parseAccelArg(cmdline) {
  const argv = cmdline.split('\0');
  const at = argv.indexOf('-accel');
  return at === -1 ? undefined : argv[at + 1];
}

export function accelArgOf(pid) {
  return parseAccelArg(fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8'));
}

const KSM_DIR = '/sys/kernel/mm/ksm';

/** ksm_merging_pages + ksm_zero_pages of /proc/PID/ksm_stat: the process's pages that KSM backs with a shared page. */
export function parseKsmMergedPages(ksmStat) {
  const count = (name) => Number(new RegExp(`^${name} (\\d+)$`, 'm').exec(ksmStat)?.[1] ?? 0);
  return count('ksm_merging_pages') + count('ksm_zero_pages');
}

/**
 * The host's kernel samepage merging: whether ksmd runs (`run` is 1), how
 * much of `pids`' memory it backs with shared pages (their own counters,
 * not the host-wide ones other VMs move too), and ksmd's CPU time so far in
 * seconds; undefined without KSM.
 */
export function ksmState(pids) {
  if (!fs.existsSync(KSM_DIR)) return undefined;
  let pages = 0;
  for (const pid of pids) {
    try {
      pages += parseKsmMergedPages(fs.readFileSync(`/proc/${pid}/ksm_stat`, 'utf8'));
    } catch {
      // A kernel before 6.1 has no per-process counters: nothing counted.
    }
  }
  const ksmd = fs.readdirSync('/proc').find((entry) => {
    try {
      return /^\d+$/.test(entry) && fs.readFileSync(`/proc/${entry}/comm`, 'utf8').trim() === 'ksmd';
    } catch {
      return false;
    }
  });
  const ticksPerSecond = 100; // USER_HZ, 100 on every Linux architecture the bench runs on
  return {
    running: fs.readFileSync(`${KSM_DIR}/run`, 'utf8').trim() === '1',
    mergedMiB: (pages * 4096) / 2 ** 20,
    ksmdCpuS: ksmd === undefined ? 0 : parseCpuTicks(fs.readFileSync(`/proc/${ksmd}/stat`, 'utf8')) / ticksPerSecond,
  };
}
