// The guest side of every sandbox's network: one address, gateway, DNS server
// and MAC address shared by all sandboxes in every mode, so that a VM restored
// from a template's warm snapshot (taken with this configuration applied) needs
// no reconfiguration. Isolation comes from each sandbox having its own network
// backend (its own slirp instance, or its own namespace), never from addresses.
// Shared by network/ (firewall, description) and vmm/ (the NIC, the kernel
// option), which must not import each other; it holds data, never behaviour.

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

/**
 * What the NIC is plugged into on the host. `user`: QEMU's own user-mode
 * stack (slirp), private to the VM, run inside `netns` when the daemon
 * isolates user-mode sandboxes (see user-network.ts); `tap`: a tap device in the sandbox's
 * network namespace, which QEMU is started inside; `none`: nothing (the
 * template VM of a warm snapshot: slirp saves its own state in the VM's, and
 * a state with it would not load into a VM plugged into a tap).
 */
export type NicBackend = { type: 'user'; netns?: string } | { type: 'tap'; ifname: string; netns: string } | { type: 'none' };
