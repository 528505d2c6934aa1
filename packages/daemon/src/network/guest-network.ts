// The guest side of every sandbox's network: one address, gateway, DNS server
// and MAC address shared by all sandboxes in every mode, so that a VM restored
// from a template's warm snapshot (taken with this configuration applied) needs
// no reconfiguration. Isolation comes from each sandbox having its own network
// backend (its own slirp instance, or its own namespace), never from addresses.

export const GUEST_NETWORK = {
  address: '10.0.2.15',
  prefixLength: 24,
  gateway: '10.0.2.2',
  dns: '10.0.2.3',
  /** A locally administered unicast MAC; the guest's init finds its NIC by it. */
  mac: '52:54:00:c0:ff:ee',
  /**
   * TAP mode: the gateway's MAC in every namespace. A forked or resumed guest
   * keeps the gateway's MAC in its ARP cache, so a new namespace must answer to the same one.
   */
  gatewayMac: '52:54:00:c0:ff:01',
} as const;

/** QEMU ids of the NIC and its backend: `set_link` names the NIC. */
export const NIC_DEVICE_ID = 'nic0';
export const NETDEV_ID = 'net0';

/** The kernel option guest/init reads: `capsule.net=ADDRESS/PREFIX,GATEWAY,DNS,MAC`. */
export function guestNetworkKernelArg(): string {
  const n = GUEST_NETWORK;
  return `capsule.net=${n.address}/${n.prefixLength},${n.gateway},${n.dns},${n.mac}`;
}

/**
 * What the NIC is plugged into on the host. `user`: QEMU's own user-mode
 * stack (slirp), private to the VM, run inside `netns` when the daemon
 * isolates user-mode sandboxes (see user-network.ts); `tap`: a tap device in the sandbox's
 * network namespace, which QEMU is started inside; `none`: nothing (the
 * template VM of a warm snapshot: slirp saves its own state in the VM's, and
 * a state with it would not load into a VM plugged into a tap).
 */
export type NicBackend = { type: 'user'; netns?: string } | { type: 'tap'; ifname: string; netns: string } | { type: 'none' };

/** QEMU's -netdev and -device arguments for the guest NIC on `backend`. */
export function nicArgs(backend: NicBackend): string[] {
  const n = GUEST_NETWORK;
  const device = `virtio-net-device,mac=${n.mac},id=${NIC_DEVICE_ID}`;
  if (backend.type === 'none') return ['-device', device];
  const netdev =
    backend.type === 'user'
      ? // Same addresses as the guest is configured with; IPv6 off so that every sandbox has exactly the address above.
        `user,id=${NETDEV_ID},ipv4=on,ipv6=off,net=10.0.2.0/${n.prefixLength},host=${n.gateway},dns=${n.dns}`
      : // No vnet header: the NIC then offers the guest the same features as on user-mode networking, so a
        // device state saved on one (the warm snapshot) loads into the other.
        `tap,id=${NETDEV_ID},ifname=${backend.ifname},script=no,downscript=no,vnet_hdr=off`;
  return ['-netdev', netdev, '-device', `${device},netdev=${NETDEV_ID}`];
}
