import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { probeJailSupport } from './host-support.js';

describe('probeJailSupport (fake /proc and cgroup folders)', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'capsule-host-support-'));
  afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));
  const write = (file: string, text: string, mode = 0o644) => {
    fs.mkdirSync(path.dirname(path.join(dir, file)), { recursive: true });
    fs.writeFileSync(path.join(dir, file), text, { mode });
  };
  write('proc/self/status', 'Name:\tnode\nNoNewPrivs:\t0\nSeccomp:\t0\nSeccomp_filters:\t0\n');
  write('proc/self/ns/user', '');
  write('proc/sys/user/max_user_namespaces', '96367\n');
  write('cgroup/cgroup.controllers', 'cpu io memory pids\n');
  write('bin/bwrap', '#!/bin/sh\necho "bubblewrap 0.8.0"\n', 0o755);
  const paths = { proc: path.join(dir, 'proc'), cgroupRoot: path.join(dir, 'cgroup'), bwrap: path.join(dir, 'bin/bwrap') };

  it('reports what a capable host offers', async () => {
    expect(await probeJailSupport(paths)).toEqual({
      userNamespaces: true,
      cgroup: { version: 2, controllers: ['cpu', 'io', 'memory', 'pids'] },
      seccomp: true,
      bubblewrap: '0.8.0',
    });
  });

  it('reports what a bare host lacks, without throwing', async () => {
    const bare = { proc: path.join(dir, 'no-proc'), cgroupRoot: path.join(dir, 'no-cgroup'), bwrap: path.join(dir, 'bin/no-bwrap') };
    expect(await probeJailSupport(bare)).toEqual({ userNamespaces: false, cgroup: { version: 'none', controllers: [] }, seccomp: false });
    write('proc-off/self/ns/user', '');
    write('proc-off/sys/user/max_user_namespaces', '0\n');
    expect((await probeJailSupport({ ...paths, proc: path.join(dir, 'proc-off') })).userNamespaces).toBe(false);
  });
});
