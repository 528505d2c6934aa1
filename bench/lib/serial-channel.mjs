// The raw virtio-serial channel, the floor of any file transfer to or from a
// sandbox: a bare guest (the kit's kernel and initramfs, with this file's
// /init laid over it) moves bytes through a virtserialport with busybox, and
// the host times them on the port's unix socket. No daemon, no agent, no
// protocol: only QEMU's virtio-serial under the same accelerator.
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { repo } from '../harness.mjs';

const PORT_NAME = 'bench.channel';

// The guest's PID 1: load the virtio drivers as the real init does, then obey
// one-line commands from the host on the port, on one open descriptor (a port
// closed in between may drop what the host already sent).
const GUEST_INIT = `#!/bin/sh
export PATH=/bin
mount -t devtmpfs dev /dev
mount -t proc proc /proc
mount -t sysfs sys /sys
while read -r module; do insmod "/lib/modules/$module.ko"; done < /etc/capsule/modules
port=
while [ -z "$port" ]; do
  for p in /sys/class/virtio-ports/*; do
    [ "$(cat "$p/name" 2>/dev/null)" = "${PORT_NAME}" ] && port=/dev/\${p##*/}
  done
  [ -n "$port" ] || usleep 10000
done
exec 3<>"$port"
echo ready >&3
while read -r command bytes <&3; do
  case "$command" in
    down) dd if=/dev/zero bs=65536 count=$((bytes / 65536)) 2>/dev/null >&3 ;;
    up) dd bs=65536 count=$((bytes / 65536)) iflag=fullblock <&3 >/dev/null 2>&1; echo ok >&3 ;;
    *) break ;;
  esac
done
reboot -f
`;

/** Reads from a socket: lines, or a byte count. */
class Reader {
  constructor(socket) {
    this.socket = socket;
    this.buffered = Buffer.alloc(0);
    this.waiter = undefined;
    socket.on('data', (chunk) => {
      this.buffered = this.buffered.length === 0 ? chunk : Buffer.concat([this.buffered, chunk]);
      this.waiter?.();
    });
    socket.on('close', () => this.waiter?.());
  }

  async line(timeoutMs) {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const end = this.buffered.indexOf(0x0a);
      if (end >= 0) {
        const text = this.buffered.subarray(0, end).toString();
        this.buffered = this.buffered.subarray(end + 1);
        return text;
      }
      if (this.buffered.length > 4096) throw new Error('the guest sent no line');
      await this.wait(deadline);
    }
  }

  /** Drops exactly `count` bytes as they arrive (a 256 MiB download is never held in memory). */
  async skip(count, timeoutMs) {
    const deadline = Date.now() + timeoutMs;
    let left = count;
    for (;;) {
      const take = Math.min(left, this.buffered.length);
      this.buffered = this.buffered.subarray(take);
      left -= take;
      if (left === 0) return;
      await this.wait(deadline);
    }
  }

  wait(deadline) {
    if (this.socket.destroyed) return Promise.reject(new Error('the guest closed the channel'));
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error('the guest did not answer in time')), Math.max(1, deadline - Date.now()));
      this.waiter = () => {
        clearTimeout(timer);
        this.waiter = undefined;
        resolve();
      };
    });
  }
}

async function connectWithRetry(socketPath, isAlive, timeoutMs) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      return await new Promise((resolve, reject) => {
        const s = net.connect(socketPath);
        s.once('connect', () => resolve(s));
        s.once('error', reject);
      });
    } catch (err) {
      if (!isAlive() || Date.now() > deadline) throw err;
      await new Promise((r) => setTimeout(r, 10));
    }
  }
}

/**
 * Boots the bare guest and returns `download(bytes)` and `upload(bytes)`,
 * each resolving with milliseconds, and `close()`. `dir` is a folder of the
 * run (QEMU's command line names it, so the run's cleanup finds QEMU).
 */
export async function startSerialChannelVm({ dir, accel, kernel, initramfs, track }) {
  const { writeCpio } = await import(path.join(repo, 'packages/daemon/dist/guest/cpio.js'));
  const { hostTscKhz } = await import(path.join(repo, 'packages/daemon/dist/vmm/tsc.js'));
  fs.mkdirSync(dir, { recursive: true });
  // The kernel unpacks concatenated archives in order, a later file replacing an earlier one: this /init replaces Capsule's.
  const initrd = path.join(dir, 'initramfs.cpio');
  fs.writeFileSync(
    initrd,
    Buffer.concat([fs.readFileSync(initramfs), writeCpio([{ kind: 'file', path: 'init', mode: 0o755, data: Buffer.from(GUEST_INIT) }])]),
  );
  const tscKhz = accel === 'tcg' ? await hostTscKhz() : undefined;
  const socketPath = path.join(dir, 'channel.sock');
  const qemu = spawn(
    'qemu-system-x86_64',
    [
      '-M',
      'microvm,acpi=on,x-option-roms=off,rtc=on',
      '-accel',
      accel,
      '-cpu',
      accel === 'kvm' ? 'host' : 'max',
      '-m',
      '256M',
      '-nodefaults',
      '-no-user-config',
      '-nographic',
      '-no-reboot',
      '-kernel',
      kernel,
      '-initrd',
      initrd,
      '-append',
      ['console=ttyS0', 'quiet', 'panic=-1', 'reboot=t', ...(tscKhz ? [`tsc_early_khz=${tscKhz}`, 'tsc=reliable'] : [])].join(' '),
      '-device',
      'virtio-serial-device',
      '-chardev',
      `socket,id=channel,path=${socketPath},server=on,wait=off`,
      '-device',
      `virtserialport,chardev=channel,name=${PORT_NAME}`,
      '-serial',
      `file:${path.join(dir, 'console.log')}`,
    ],
    { stdio: 'ignore' },
  );
  track(qemu);
  const alive = () => qemu.exitCode === null && qemu.signalCode === null;
  const close = async () => {
    if (alive()) {
      const exited = new Promise((r) => qemu.once('exit', r));
      qemu.kill('SIGKILL');
      await exited;
    }
  };
  try {
    const socket = await connectWithRetry(socketPath, alive, 10_000);
    const reader = new Reader(socket);
    const first = await reader.line(60_000);
    if (first !== 'ready') throw new Error(`the channel guest said ${JSON.stringify(first)}`);
    const write = (data) => new Promise((resolve, reject) => socket.write(data, (err) => (err ? reject(err) : resolve())));
    return {
      async download(bytes) {
        const started = performance.now();
        await write(`down ${bytes}\n`);
        await reader.skip(bytes, 120_000);
        return performance.now() - started;
      },
      async upload(bytes) {
        const chunk = Buffer.alloc(1 << 20);
        const started = performance.now();
        await write(`up ${bytes}\n`);
        for (let sent = 0; sent < bytes; sent += chunk.length) await write(chunk.subarray(0, Math.min(chunk.length, bytes - sent)));
        const answer = await reader.line(120_000);
        if (answer !== 'ok') throw new Error(`the channel guest said ${JSON.stringify(answer)} after an upload`);
        return performance.now() - started;
      },
      async close() {
        socket.destroy();
        await close();
      },
    };
  } catch (err) {
    await close();
    const console = fs.existsSync(path.join(dir, 'console.log')) ? fs.readFileSync(path.join(dir, 'console.log'), 'utf8').slice(-1500) : '';
    throw new Error(`the raw channel guest failed: ${err.message}${console ? `\n${console}` : ''}`);
  }
}
