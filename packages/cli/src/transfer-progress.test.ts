import { describe, expect, it } from 'vitest';
import { TransferProgress } from './transfer-progress.js';

describe('TransferProgress', () => {
  it('sums bytes and counts finished layers across layers', () => {
    const bar = new TransferProgress('Pulling x', { enabled: false });
    bar.onEvent({
      type: 'resolved',
      digest: 'sha256:m',
      layers: [
        { digest: 'a', sizeBytes: 1024 },
        { digest: 'b', sizeBytes: 3072 },
      ],
    });
    expect(bar.line()).toBe(`Pulling x [${'-'.repeat(30)}] 0 B / 4.0 KiB, 0/2 layers, 0 unpacked`);
    bar.onEvent({ type: 'progress', digest: 'a', doneBytes: 1024, totalBytes: 1024 });
    bar.onEvent({ type: 'progress', digest: 'b', doneBytes: 1024, totalBytes: 3072 });
    bar.onEvent({ type: 'unpacked', index: 0, layers: 2 });
    expect(bar.line()).toBe(`Pulling x [${'#'.repeat(15)}${'-'.repeat(15)}] 2.0 KiB / 4.0 KiB, 1/2 layers, 1 unpacked`);
  });
});
