#!/usr/bin/env node
// File transfer through the daemon, against the raw virtio-serial channel,
// measured side by side in one run on this host (rounds interleaved, so a
// change in host load hits both):
//   - raw channel: `dd` with 64 KiB blocks in a bare guest (the kit's kernel
//     and initramfs, a shell as init) through a second virtserialport, both
//     ways — the floor any protocol on that port pays;
//   - upload: POST /v1/sandboxes/{id}/envd/files?path=… (octet-stream), to
//     the guest's disk; download: GET of the same file, checked byte for byte.
// Prints each figure's p50 in MB/s and the ratios upload/raw host→guest and
// download/raw guest→host. Everything started is removed, also when
// interrupted. Usage: node bench/file-transfer.mjs [MiB=256] [rounds=3]
import { spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { BenchRun, percentile, repo } from './harness.mjs';

const { hostTscKhz } = await import(path.join(repo, 'packages/daemon/dist/vmm/tsc.js'));

const mebibytes = Number(process.argv[2] ?? 256);
const rounds = Number(process.argv[3] ?? 3);
const bytes = mebibytes * 1024 * 1024;
const cacheDir = process.env.CAPSULE_CACHE_DIR ?? '/var/cache/capsule';
const manifest = JSON.parse(fs.readFileSync(path.join(cacheDir, 'guest-manifest.json'), 'utf8'));
const GUEST_PATH = '/var/tmp/capsule-file-transfer.bin'; // the root disk: /tmp is a small tmpfs
const BLOCK = 64 * 1024;
const run = new BenchRun();
const mbps = (count, ms) => count / 1e6 / (ms / 1000);

/** A bare guest whose init is a shell on the serial console, with a second port for dd. */
async function startRawGuest() {
  const sock = path.join(run.root, 'raw.sock');
  // As the daemon boots guests under TCG: without the host's TSC rate the kernel stalls calibrating.
  const tscKhz = await hostTscKhz();
  const tsc = tscKhz === undefined ? '' : ` tsc_early_khz=${tscKhz} tsc=reliable`;
  const qemu = spawn('qemu-system-x86_64', [
    '-M', 'microvm,acpi=on,x-option-roms=off,rtc=on', '-accel', 'tcg', '-cpu', 'max', '-smp', '1', '-m', '512M',
    '-nodefaults', '-no-user-config', '-nographic', '-no-reboot',
    '-kernel', manifest.kernel, '-initrd', manifest.initramfs,
    '-append', `console=ttyS0 quiet panic=-1 rdinit=/bin/sh${tsc}`,
    '-device', 'virtio-serial-device', '-chardev', `socket,id=raw,path=${sock},server=on,wait=off`,
    '-device', 'virtserialport,chardev=raw,name=bench.raw', '-serial', 'stdio',
  ], { stdio: ['pipe', 'pipe', 'pipe'] });
  run.children.add(qemu);
  let console = '';
  qemu.stdout.on('data', (data) => (console += data));
  qemu.stderr.on('data', (data) => (console += data));
  const waitFor = async (pattern, what) => {
    for (let i = 0; !pattern.test(console); i++) {
      if (i > 1200) throw new Error(`raw guest: no ${what}; console:\n${console.slice(-2000)}`);
      await sleep(50);
    }
  };
  const shell = (line) => qemu.stdin.write(`${line}\n`);
  // Input sent before the shell runs is lost: knock until it answers.
  for (let i = 0; !/SHELL UP/.test(console); i++) {
    if (i > 120 || qemu.exitCode !== null) throw new Error(`raw guest: no shell; console:\n${console.slice(-2000)}`);
    shell('echo SHELL" "UP');
    await sleep(500);
  }
  // The initramfs has busybox and the virtio modules, in load order.
  shell('export PATH=/bin; mount -t devtmpfs dev /dev; mount -t proc proc /proc; mount -t sysfs sys /sys; ' +
    'while read -r m; do insmod /lib/modules/$m.ko; done < /etc/capsule/modules');
  // The port's sysfs name appears once the driver has probed it.
  let device;
  for (let i = 0; !(device = /PORT (\S+) bench\.raw/.exec(console)?.[1]); i++) {
    if (i > 120) throw new Error(`raw guest: port not found; console:\n${console.slice(-2000)}`);
    shell('for p in /sys/class/virtio-ports/*; do echo PORT $(basename $p) $(cat $p/name 2>/dev/null); done');
    await sleep(500);
  }
  const host = net.connect(sock);
  await new Promise((resolve, reject) => host.once('connect', resolve).once('error', reject));
  let received = 0;
  host.on('data', (data) => (received += data.length));
  let marks = 0;
  return {
    async hostToGuest() {
      const mark = `DONE${++marks}`;
      shell(`dd if=/dev/${device} of=/dev/null bs=${BLOCK} count=${bytes / BLOCK} iflag=fullblock 2>/dev/null; echo ${mark.slice(0, 2)}""${mark.slice(2)}`);
      await sleep(300); // dd is reading before the clock starts
      const started = performance.now();
      const block = Buffer.alloc(1024 * 1024);
      for (let sent = 0; sent < bytes; sent += block.length) {
        if (!host.write(block)) await new Promise((resolve) => host.once('drain', resolve));
      }
      await waitFor(new RegExp(mark), 'end of dd');
      return mbps(bytes, performance.now() - started);
    },
    async guestToHost() {
      received = 0;
      const started = performance.now();
      shell(`dd if=/dev/zero of=/dev/${device} bs=${BLOCK} count=${bytes / BLOCK} 2>/dev/null`);
      while (received < bytes) await sleep(5);
      return mbps(bytes, performance.now() - started);
    },
  };
}

function agentRequest(sandboxId, method, body) {
  return new Promise((resolve, reject) => {
    const headers = { authorization: `Basic ${Buffer.from('root:').toString('base64')}` };
    if (body) Object.assign(headers, { 'content-type': 'application/octet-stream', 'content-length': body.length });
    const req = http.request({ socketPath: run.socketPath, method, path: `/v1/sandboxes/${sandboxId}/envd/files?path=${encodeURIComponent(GUEST_PATH)}`, headers }, (res) => {
      const hash = createHash('sha256');
      let length = 0;
      res.on('data', (chunk) => {
        hash.update(chunk);
        length += chunk.length;
      });
      res.on('end', () => (res.statusCode === 200 ? resolve({ length, sha256: hash.digest('hex') }) : reject(new Error(`${method} /files: HTTP ${res.statusCode}`))));
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end(body);
  });
}

try {
  const raw = await startRawGuest();
  const stopDaemon = await run.startDaemon('daemon', { CAPSULE_WARM_POOL_SIZE: '0' });
  const created = await run.request('POST', '/v1/sandboxes', { template: 'base' });
  if (created.status !== 201 && created.status !== 200) throw new Error(`create: HTTP ${created.status}`);
  const sandboxId = created.body.id;
  const data = randomBytes(bytes);
  const sha256 = createHash('sha256').update(data).digest('hex');
  const figures = { rawIn: [], rawOut: [], upload: [], download: [] };
  for (let round = 1; round <= rounds; round++) {
    figures.rawIn.push(await raw.hostToGuest());
    figures.rawOut.push(await raw.guestToHost());
    let started = performance.now();
    await agentRequest(sandboxId, 'POST', data);
    figures.upload.push(mbps(bytes, performance.now() - started));
    started = performance.now();
    const back = await agentRequest(sandboxId, 'GET');
    figures.download.push(mbps(bytes, performance.now() - started));
    if (back.length !== bytes || back.sha256 !== sha256) throw new Error(`round ${round}: the downloaded file differs from the uploaded one`);
    const last = (name) => figures[name].at(-1).toFixed(1);
    console.log(`round ${round}/${rounds}: raw in ${last('rawIn')}, raw out ${last('rawOut')}, upload ${last('upload')}, download ${last('download')} MB/s`);
  }
  const p50 = Object.fromEntries(Object.entries(figures).map(([name, values]) => [name, percentile(values, 50)]));
  console.log(`\nfile transfer, ${mebibytes} MiB, p50 of ${rounds} rounds (MB/s = 10^6 bytes/s):`);
  console.log(`  raw channel host→guest  ${p50.rawIn.toFixed(1).padStart(7)} MB/s`);
  console.log(`  raw channel guest→host  ${p50.rawOut.toFixed(1).padStart(7)} MB/s`);
  console.log(`  upload through daemon   ${p50.upload.toFixed(1).padStart(7)} MB/s  = ${(p50.upload / p50.rawIn).toFixed(2)} × raw host→guest`);
  console.log(`  download through daemon ${p50.download.toFixed(1).padStart(7)} MB/s  = ${(p50.download / p50.rawOut).toFixed(2)} × raw guest→host`);
  await stopDaemon();
} finally {
  run.cleanup();
}
