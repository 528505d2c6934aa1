// File upload and download of 256 MiB through the daemon, against the raw
// virtio-serial channel measured in the same run. The daemon does not serve
// files yet (issue #4: the agent's /files through the daemon), so its two
// results are "not available" until then; the channel is measured anyway.
import path from 'node:path';
import { repeat } from '../harness.mjs';
import { routeMissing } from '../lib/api-routes.mjs';
import { startSerialChannelVm } from '../lib/serial-channel.mjs';

const BYTES = 256 * 1024 * 1024;
const mbPerS = (ms) => BYTES / 1e6 / (ms / 1000);

export default {
  name: 'files',
  position: 60,
  results: [
    { id: 'channel-upload', title: 'raw virtio-serial channel, host to guest, 256 MiB (baseline of upload)', unit: 'MB/s' },
    { id: 'channel-download', title: 'raw virtio-serial channel, guest to host, 256 MiB (baseline of download)', unit: 'MB/s' },
    { id: 'files-upload', title: 'upload 256 MiB through the daemon', unit: 'MB/s', baselines: [{ id: 'channel-upload', label: 'the raw channel' }] },
    { id: 'files-download', title: 'download 256 MiB through the daemon', unit: 'MB/s', baselines: [{ id: 'channel-download', label: 'the raw channel' }] },
  ],
  async run(ctx) {
    const missing = await routeMissing(await ctx.daemon('pool'), /files/, 'the daemon has no file transfer route yet (issue #4)');
    if (!missing) throw new Error('the daemon now serves files: measure files-upload and files-download here');
    const channel = await startSerialChannelVm({
      dir: path.join(ctx.run.root, 'channel'),
      accel: ctx.accel,
      kernel: ctx.manifest.kernel,
      initramfs: ctx.manifest.initramfs,
      track: (child) => ctx.run.children.add(child),
    });
    try {
      const uploads = await repeat(ctx, async () => mbPerS(await channel.upload(BYTES)));
      const downloads = await repeat(ctx, async () => mbPerS(await channel.download(BYTES)));
      return {
        'channel-upload': uploads,
        'channel-download': downloads,
        'files-upload': { unavailable: missing },
        'files-download': { unavailable: missing },
      };
    } finally {
      await channel.close();
    }
  },
};
