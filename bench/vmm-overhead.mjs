#!/usr/bin/env node
// The VMM's own memory: how much QEMU holds beyond the guest's RAM once the
// guest has touched all of it, which is what a sandbox's cgroup memory limit
// must allow on top of the RAM (VMM_OVERHEAD_MIB in packages/daemon/src/vmm/cgroup.ts).
// Starts private daemons like bench/run does and never touches the user's own.
//
// Usage: node bench/vmm-overhead.mjs [--sizes 256,512,1024]   (after `npm run build`)
import fs from 'node:fs';
import { BenchRun } from './harness.mjs';

const sizes = (() => {
  const at = process.argv.indexOf('--sizes');
  return at === -1 ? [256, 512, 1024] : process.argv[at + 1].split(',').map(Number);
})();

// Allocates until the guest has almost no memory left: by then nearly every
// page of its RAM has been written once, so QEMU has a host page behind each.
const FILL_GUEST = `
import re
def available_kib():
    return int(re.search(r'MemAvailable:\\s+(\\d+)', open('/proc/meminfo').read()).group(1))
held = []
while available_kib() > 12 * 1024:
    held.append(b'\\x01' * (2 << 20))
print(len(held) * 2)
`;

// New machine code, again and again: V8 compiles each new Function into code
// the guest never ran before, which TCG translates into new entries of its
// code buffer. Runs the agent's own node (the guest has no other), for argv[1] ms.
const FRESH_CODE_GUEST = `
let sum = 0;
const end = Date.now() + Number(process.argv[1]);
for (let i = 0; Date.now() < end; i++) {
  const f = new Function('x', 'let a = x; for (let k = 0; k < 2000; k++) a = (a * ' + i + ' + k) ^ ' + i * 7 + '; return a;');
  for (let j = 0; j < 50; j++) sum += f(j);
}
console.log(sum);
`;
const CODE_ROUNDS = 3;
const CODE_ROUND_MS = 30_000;

/** Rss (KiB) of every mapping of `pid`, and which of them is the guest's RAM: the writable, non-executable mapping closest to `ramMiB` in size. */
function rssSplit(pid, ramMiB) {
  const mappings = [];
  let current;
  for (const line of fs.readFileSync(`/proc/${pid}/smaps`, 'utf8').split('\n')) {
    const header = /^[0-9a-f]+-[0-9a-f]+ (\S{4}) \S+ \S+ \S+\s*(.*)$/.exec(line);
    if (header) mappings.push((current = { perms: header[1], name: header[2], sizeKiB: 0, rssKiB: 0 }));
    else if (current && line.startsWith('Size:')) current.sizeKiB = Number(line.split(/\s+/)[1]);
    else if (current && line.startsWith('Rss:')) current.rssKiB = Number(line.split(/\s+/)[1]);
  }
  const ramKiB = ramMiB * 1024;
  const ram = mappings
    .filter((m) => m.perms.startsWith('rw') && m.perms[2] !== 'x' && m.sizeKiB >= ramKiB)
    .sort((a, b) => a.sizeKiB - b.sizeKiB)[0];
  const totalKiB = mappings.reduce((sum, m) => sum + m.rssKiB, 0);
  const status = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
  const hwmKiB = Number(/^VmHWM:\s+(\d+) kB$/m.exec(status)?.[1]);
  // TCG's translated code lives in the one writable and executable mapping; KVM has none.
  const tcgCodeKiB = mappings.filter((m) => m.perms === 'rwxp').reduce((sum, m) => sum + m.rssKiB, 0);
  const largest = mappings
    .filter((m) => m !== ram && m.perms !== 'rwxp')
    .sort((a, b) => b.rssKiB - a.rssKiB)
    .slice(0, 4)
    .map((m) => `${m.perms} ${m.name || '[anon]'} ${Math.round(m.rssKiB / 1024)} MiB`);
  return { totalKiB, ramRssKiB: ram?.rssKiB ?? 0, hwmKiB, tcgCodeKiB, largest };
}

async function measure(daemon, label, body) {
  const sandbox = await daemon.create(body);
  try {
    // Warm the agent's exec path first, as any sandbox in use has.
    await daemon.exec(sandbox.id, ['true']);
    const fill = await daemon.call('POST', `/v1/sandboxes/${sandbox.id}/exec`, { cmd: ['python3', '-c', FILL_GUEST], timeoutMs: 600_000 });
    const split = rssSplit(sandbox.pid, sandbox.memoryMiB);
    const mib = (kib) => Math.round(kib / 1024);
    const row = {
      label,
      guestMiB: sandbox.memoryMiB,
      guestFilledMiB: Number(fill.stdout.trim()) || `exit ${fill.exitCode}`,
      qemuPeakRssMiB: mib(split.hwmKiB),
      guestRamResidentMiB: mib(split.ramRssKiB),
      // QEMU's own memory: everything resident that is not the guest's RAM mapping.
      vmmOwnMiB: mib(split.totalKiB - split.ramRssKiB),
      peakMinusGuestMiB: mib(split.hwmKiB) - sandbox.memoryMiB,
      tcgCodeMiB: mib(split.tcgCodeKiB),
      largestOtherMappings: split.largest,
    };
    console.log(JSON.stringify(row));
    return row;
  } finally {
    await daemon.remove(sandbox.id);
  }
}

/** Whether TCG's code buffer keeps growing while the guest keeps making new code: its Rss after each round. */
async function measureCodeGrowth(daemon) {
  const sandbox = await daemon.create({ memoryMiB: 512 });
  try {
    const rounds = [rssSplit(sandbox.pid, sandbox.memoryMiB).tcgCodeKiB];
    for (let round = 0; round < CODE_ROUNDS; round++) {
      const cmd = ['/opt/capsule/node/node', '-e', FRESH_CODE_GUEST, String(CODE_ROUND_MS)];
      await daemon.exec(sandbox.id, cmd);
      rounds.push(rssSplit(sandbox.pid, sandbox.memoryMiB).tcgCodeKiB);
    }
    console.log(
      JSON.stringify({
        label: `TCG code buffer after boot, then after each ${CODE_ROUND_MS / 1000} s of fresh JIT code`,
        tcgCodeMiB: rounds.map((kib) => Math.round(kib / 1024)),
      }),
    );
  } finally {
    await daemon.remove(sandbox.id);
  }
}

const run = new BenchRun();
try {
  run.pinGuestKit(process.env.CAPSULE_CACHE_DIR ?? '/var/cache/capsule');
  const cold = await run.startDaemon('cold', { CAPSULE_WARM_SNAPSHOTS: 'off' });
  const info = await cold.call('GET', '/v1/info');
  console.log(`accelerator: ${info.accel} (${info.accelReason}); ${info.qemuVersion}`);
  for (const memoryMiB of sizes) await measure(cold, `${info.accel} cold boot`, { memoryMiB });
  if (info.accel === 'tcg') await measureCodeGrowth(cold);
  await cold.stop();
  // A restored sandbox maps the warm snapshot's memory file privately: the pages it writes become its own copies.
  const restore = await run.startDaemon('restore', { CAPSULE_WARM_POOL_SIZE: '0' });
  await measure(restore, `${info.accel} warm snapshot restored`, {});
  await restore.stop();
} finally {
  const left = run.cleanup();
  if (left.length > 0) console.error(`processes that would not die: ${left.join(', ')}`);
}
