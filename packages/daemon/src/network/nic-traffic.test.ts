import { describe, expect, it } from 'vitest';
import { nicTrafficOf, readTapTraffic } from './nic-traffic.js';

// A /proc/net/dev of a TAP sandbox's namespace, as the kernel writes it (tap0 is the host's end of the guest's link).
const NET_DEV = [
  'Inter-|   Receive                                                |  Transmit',
  ' face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed',
  '    lo:     120       2    0    0    0     0          0         0      120       2    0    0    0     0       0          0',
  'uplink0: 9000000    6100    0    0    0     0          0         0   410000    4000    0    0    0     0       0          0',
  '  tap0:  400123    3900    0    0    0     0          0         0  8800456    6000    0    0    0     0       0          0',
  '',
].join('\n');

describe('nicTrafficOf', () => {
  it("turns the tap's counters around into the guest's view: what the tap sent, the guest received", () => {
    expect(nicTrafficOf(NET_DEV, 'tap0')).toEqual({ receivedBytes: 8_800_456, transmittedBytes: 400_123 });
  });

  it('finds nothing for a namespace without the interface (a user-mode QEMU) or a line it cannot read', () => {
    expect(nicTrafficOf(NET_DEV, 'tap1')).toBeUndefined();
    expect(nicTrafficOf('  tap0: 12 x\n', 'tap0')).toBeUndefined();
    // A name that only contains the interface's is another interface.
    expect(nicTrafficOf(NET_DEV.replace('  tap0:', 'xtap0:'), 'tap0')).toBeUndefined();
  });

  it('reads nothing of a process that is gone', () => {
    expect(readTapTraffic(999_999_999)).toBeUndefined();
  });
});
