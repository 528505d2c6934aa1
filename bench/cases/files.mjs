// File upload and download of 256 MiB through the daemon's agent proxy
// (/v1/sandboxes/{id}/envd/files: octet-stream up to the guest's disk, the
// same file back, checked byte for byte), against the raw virtio-serial
// channel of a bare guest (lib/serial-channel.mjs) measured in the same run.
// Uploads are also set against the guest writing as many zeros to its own
// disk with dd, timed inside the guest: under TCG that, not the channel, is
// what an upload cannot beat. Each round does all five, so a change in the
// host's load hits every side.
import { createHash, randomBytes } from 'node:crypto';
import http from 'node:http';
import path from 'node:path';
import { repeat } from '../harness.mjs';
import { startSerialChannelVm } from '../lib/serial-channel.mjs';

const BYTES = 256 * 1024 * 1024;
const GUEST_PATH = '/var/tmp/capsule-bench-files.bin'; // the root disk: the guest's /tmp is a small tmpfs
// A new file on the same disk, as an upload writes a temp file renamed over its target; no fsync, as an upload does none.
const GUEST_WRITE = `s=$(date +%s%N); dd if=/dev/zero of=/var/tmp/capsule-bench-zeros bs=1M count=${BYTES / 1048576} status=none; e=$(date +%s%N); rm /var/tmp/capsule-bench-zeros; echo $((e - s))`;
const mbPerS = (ms) => BYTES / 1e6 / (ms / 1000);

/** One request to the sandbox's agent /files through the daemon; resolves with the length and SHA-256 of the answer. */
function agentFiles(daemon, sandboxId, method, body) {
  return new Promise((resolve, reject) => {
    const headers = { authorization: `Basic ${Buffer.from('root:').toString('base64')}` };
    if (body) Object.assign(headers, { 'content-type': 'application/octet-stream', 'content-length': body.length });
    const urlPath = `/v1/sandboxes/${sandboxId}/envd/files?path=${encodeURIComponent(GUEST_PATH)}`;
    const req = http.request({ socketPath: daemon.socketPath, method, path: urlPath, headers }, (res) => {
      const hash = createHash('sha256');
      let length = 0;
      res.on('data', (chunk) => {
        hash.update(chunk);
        length += chunk.length;
      });
      res.on('end', () =>
        res.statusCode === 200
          ? resolve({ length, sha256: hash.digest('hex') })
          : reject(new Error(`${method} /files answered ${res.statusCode}`)),
      );
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end(body);
  });
}

export default {
  name: 'files',
  position: 60,
  results: [
    { id: 'channel-upload', title: 'raw virtio-serial channel, host to guest, 256 MiB (baseline of upload)', unit: 'MB/s' },
    { id: 'channel-download', title: 'raw virtio-serial channel, guest to host, 256 MiB (baseline of download)', unit: 'MB/s' },
    {
      id: 'guest-disk-write',
      title: 'guest: dd writes 256 MiB of zeros to a new file on its disk, timed inside (baseline of upload)',
      unit: 'MB/s',
    },
    {
      id: 'files-upload',
      title: 'upload 256 MiB through the daemon to the guest disk',
      unit: 'MB/s',
      baselines: [
        { id: 'channel-upload', label: 'the raw channel' },
        { id: 'guest-disk-write', label: "the guest's own disk write" },
      ],
    },
    {
      id: 'files-download',
      title: 'download 256 MiB through the daemon from the guest disk',
      unit: 'MB/s',
      baselines: [{ id: 'channel-download', label: 'the raw channel' }],
    },
  ],
  async run(ctx) {
    // No warm pool: no idle pool VM runs beside the measured ones.
    const daemon = await ctx.daemon('restore');
    const sandbox = await daemon.create();
    let channel;
    try {
      channel = await startSerialChannelVm({
        dir: path.join(ctx.run.root, 'channel'),
        accel: ctx.accel,
        kernel: ctx.manifest.kernel,
        initramfs: ctx.manifest.initramfs,
        track: (child) => ctx.run.children.add(child),
      });
      const data = randomBytes(BYTES);
      const sha256 = createHash('sha256').update(data).digest('hex');
      const rounds = await repeat(ctx, async (i) => {
        const channelUpload = mbPerS(await channel.upload(BYTES));
        const channelDownload = mbPerS(await channel.download(BYTES));
        const diskWrite = mbPerS(Number((await daemon.exec(sandbox.id, ['sh', '-c', GUEST_WRITE])).stdout.trim()) / 1e6);
        let started = performance.now();
        await agentFiles(daemon, sandbox.id, 'POST', data);
        const upload = mbPerS(performance.now() - started);
        started = performance.now();
        const back = await agentFiles(daemon, sandbox.id, 'GET');
        const download = mbPerS(performance.now() - started);
        if (back.length !== BYTES || back.sha256 !== sha256)
          throw new Error(`round ${i + 1}: the downloaded file differs from the uploaded one`);
        ctx.log(
          `files round ${i + 1}: channel ${channelUpload.toFixed(1)}/${channelDownload.toFixed(1)}, daemon ${upload.toFixed(1)}/${download.toFixed(1)} MB/s (up/down), guest disk write ${diskWrite.toFixed(1)} MB/s`,
        );
        return { channelUpload, channelDownload, diskWrite, upload, download };
      });
      return {
        'channel-upload': rounds.map((r) => r.channelUpload),
        'channel-download': rounds.map((r) => r.channelDownload),
        'guest-disk-write': rounds.map((r) => r.diskWrite),
        'files-upload': rounds.map((r) => r.upload),
        'files-download': rounds.map((r) => r.download),
      };
    } finally {
      await channel?.close();
      await daemon.remove(sandbox.id);
    }
  },
};
