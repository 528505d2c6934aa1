// Chooses KVM or TCG. The existence of /dev/kvm proves nothing (on nested or
// para-virtualised hosts a stock guest hangs under it), so KVM is used only
// after a tiny guest actually booted with it; the answer is cached per host
// kernel, QEMU and guest kernel.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { runCommand } from '../launcher.js';
import { writeFileAtomic } from '../guest/files.js';
import { QEMU_BINARY, type Accel } from './qemu.js';

export interface AccelChoice {
  accel: Accel;
  reason: string;
}

const PROBE_MARKER = 'capsule-init: probe ok';
const PROBE_TIMEOUT_MS = 20_000;

function canOpenKvm(): boolean {
  try {
    fs.closeSync(fs.openSync('/dev/kvm', 'r+'));
    return true;
  } catch {
    return false;
  }
}

export async function chooseAccel(options: {
  requested: Accel | 'auto';
  cacheDir: string;
  kernel: string;
  initramfs: string;
  qemuVersion: string;
}): Promise<AccelChoice> {
  if (options.requested !== 'auto') return { accel: options.requested, reason: 'set by CAPSULE_ACCEL' };
  if (!canOpenKvm()) return { accel: 'tcg', reason: '/dev/kvm is missing or not accessible' };

  const key = [os.release(), options.qemuVersion, path.basename(options.kernel), fs.statSync(options.kernel).size].join('|');
  const cacheFile = path.join(options.cacheDir, 'accel-probe.json');
  try {
    const cached = JSON.parse(fs.readFileSync(cacheFile, 'utf8')) as AccelChoice & { key: string };
    if (cached.key === key) return { accel: cached.accel, reason: cached.reason };
  } catch {
    // No cached answer yet.
  }
  const choice = await probeKvm(options.kernel, options.initramfs);
  writeFileAtomic(cacheFile, JSON.stringify({ key, ...choice }, null, 2));
  return choice;
}

async function probeKvm(kernel: string, initramfs: string): Promise<AccelChoice> {
  const started = Date.now();
  try {
    const { stdout } = await runCommand(
      QEMU_BINARY,
      [
        '-M',
        'microvm,acpi=on,x-option-roms=off,rtc=on',
        '-accel',
        'kvm',
        '-cpu',
        'host',
        '-m',
        '256M',
        '-nodefaults',
        '-no-user-config',
        '-nographic',
        '-no-reboot',
        '-kernel',
        kernel,
        '-initrd',
        initramfs,
        '-append',
        'console=ttyS0 quiet panic=-1 reboot=t capsule.probe=1',
        '-serial',
        'stdio',
      ],
      { timeoutMs: PROBE_TIMEOUT_MS },
    );
    if (stdout.includes(PROBE_MARKER)) return { accel: 'kvm', reason: `a KVM guest booted in ${Date.now() - started} ms` };
    return { accel: 'tcg', reason: 'the KVM probe guest exited without reaching its init' };
  } catch (err) {
    const first = (err as Error).message.split('\n')[0] ?? '';
    return { accel: 'tcg', reason: `the KVM probe guest failed (${first}); using TCG` };
  }
}
