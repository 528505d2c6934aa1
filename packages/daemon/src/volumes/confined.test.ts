import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { onVolumeFile } from './confined.js';

// What the tool sees, written into the volume file itself (its path is the tool's last argument, here $0).
const REPORT = ['sh', '-c', 'echo "uid=$(id -u) caps=$(grep CapEff /proc/self/status | cut -f2) root=$(ls / | tr "\\n" " ")" > "$0"'];

describe.runIf(process.getuid?.() === 0)('tools on a guest-written volume (run here, as root)', () => {
  let work: string;
  let file: string;
  beforeEach(() => {
    work = fs.mkdtempSync(path.join(os.tmpdir(), 'capsule-confined-'));
    file = path.join(work, 'data.ext4');
    fs.writeFileSync(file, '', { mode: 0o600 });
  });
  afterEach(() => fs.rmSync(work, { recursive: true, force: true }));

  it('runs them as nobody without capabilities, seeing the system programs and that one file, and gives the file back', async () => {
    await onVolumeFile(file, REPORT, true);
    const seen = fs.readFileSync(file, 'utf8').trim();
    expect(seen).toMatch(/^uid=65534 caps=0+ root=/);
    expect(seen.split('root=')[1]?.trim().split(' ').sort()).toEqual(['bin', 'dev', 'lib', 'lib64', 'proc', 'sbin', 'usr', 'volume.ext4']);
    expect(fs.statSync(file)).toMatchObject({ uid: 0, gid: 0, mode: 0o100600 });
  });

  it('gives the file back when the tool fails', async () => {
    await expect(onVolumeFile(file, ['false'], true)).rejects.toThrow(/exited with code 1/);
    expect(fs.statSync(file)).toMatchObject({ uid: 0, gid: 0, mode: 0o100600 });
  });

  it('runs them as they are when confinement is off (CAPSULE_JAIL=off)', async () => {
    await onVolumeFile(file, REPORT, false);
    expect(fs.readFileSync(file, 'utf8')).toMatch(/^uid=0 /);
  });
});
