// Bytes through a TAP sandbox's NIC, read where the host sees them: the
// kernel's counters of the tap device in the sandbox's own namespace, through
// /proc/<QEMU pid>/net/dev (QEMU runs inside that namespace, so the file lists
// its devices; one small read, no process started). It only reads; it never
// trusts a counter the guest could write, and never guesses a user-mode NIC's.
import fs from 'node:fs';
import { TAP_IFNAME } from './tap-network.js';

/** Bytes as the guest sees them: what its NIC received and what it sent, Ethernet headers included. */
export interface NicTraffic {
  receivedBytes: number;
  transmittedBytes: number;
}

/**
 * The traffic of the tap in the namespace of process `pid` (a TAP sandbox's
 * QEMU), or undefined when the process is gone or has no tap. The counters
 * live as long as the tap, which is as long as the sandbox: they keep
 * counting across pause and resume, and a fork's namespace starts at zero.
 */
export function readTapTraffic(pid: number): NicTraffic | undefined {
  let netDev: string;
  try {
    netDev = fs.readFileSync(`/proc/${pid}/net/dev`, 'utf8');
  } catch {
    return undefined;
  }
  return nicTrafficOf(netDev, TAP_IFNAME);
}

/**
 * The counters of interface `ifname` in a /proc/net/dev table. The tap is
 * the host's end of the link: what it transmits, the guest receives.
 */
export function nicTrafficOf(netDev: string, ifname: string): NicTraffic | undefined {
  for (const line of netDev.split('\n')) {
    const colon = line.indexOf(':');
    if (colon < 0 || line.slice(0, colon).trim() !== ifname) continue;
    const fields = line
      .slice(colon + 1)
      .trim()
      .split(/\s+/)
      .map(Number);
    // Eight receive columns (bytes first), then eight transmit columns (bytes first).
    const [tapReceived, tapTransmitted] = [fields[0], fields[8]];
    if (!Number.isSafeInteger(tapReceived) || !Number.isSafeInteger(tapTransmitted)) return undefined;
    return { receivedBytes: tapTransmitted!, transmittedBytes: tapReceived! };
  }
  return undefined;
}
