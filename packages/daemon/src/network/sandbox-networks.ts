// Each sandbox's network as the sandbox manager sees it: which backend its
// NIC is plugged into, applying its egress policy to a running VM, and
// freeing what it held when it goes. The manager calls this; this never
// decides a sandbox's state or touches its VM beyond the network.
import type { SandboxNetwork } from '@capsule/protocol';
import type { Logger } from '../log.js';
import type { Store } from '../store/store.js';
import type { EgressPolicy } from './egress-policy.js';
import { GUEST_NETWORK, type NicBackend } from '../guest-network.js';
import { TapNetwork } from './tap-network.js';
import { UserNetworkNamespace } from './user-network.js';

export type NetworkMode = 'user' | 'tap';

export interface NetworkSettings {
  mode: NetworkMode;
  /** TAP mode: the pool the host-side link addresses are allocated from. */
  tapPool: string;
  stateDir: string;
  /** TAP mode: the group that may attach to the devices (jailed QEMUs share it; none when QEMU runs as root). */
  tapGroup?: number | undefined;
}

export class SandboxNetworks {
  readonly mode: NetworkMode;
  private readonly tap: TapNetwork | undefined;
  /** User mode with root: the one namespace every user-mode VM runs in; undefined when the host cannot isolate. */
  private userNamespace: UserNetworkNamespace | undefined;
  /** Set when sandboxes are NOT kept off the host and private networks: what they can reach, and why. */
  isolationWarning: string | undefined;

  constructor(
    private readonly settings: NetworkSettings,
    store: Store,
    private readonly log: Logger,
  ) {
    this.mode = settings.mode;
    this.tap = settings.mode === 'tap' ? new TapNetwork(store, log, settings.stateDir, settings.tapPool, settings.tapGroup) : undefined;
  }

  /** Whether allow/deny lists can be enforced (a user-mode NIC can only be cut as a whole). */
  get listsSupported(): boolean {
    return this.tap !== undefined;
  }

  /**
   * At daemon start, before any VM is started: checks the host can do what the
   * mode needs, and removes what a crashed daemon left of sandboxes that
   * `keep` says are gone.
   */
  async start(keep: (sandboxId: string) => Promise<boolean>): Promise<void> {
    if (this.tap) {
      await TapNetwork.checkHost();
      await this.tap.start(keep);
      return;
    }
    const unavailable = await UserNetworkNamespace.unavailableReason();
    if (unavailable) {
      this.isolationWarning = `sandboxes reach this host's loopback services (the API, other sandboxes' published ports) through 10.0.2.2, and its private and link-local networks: ${unavailable}`;
      this.log.warn(
        { hint: 'run capsuled as root to keep sandboxes off the host and private networks' },
        `NETWORK NOT ISOLATED: ${this.isolationWarning}`,
      );
      return;
    }
    this.userNamespace = new UserNetworkNamespace(this.log, this.settings.stateDir, this.settings.tapPool);
    await this.userNamespace.start();
  }

  /** At daemon stop, after VMs were let go of: removes what no running VM needs any more. */
  async stop(): Promise<void> {
    await this.userNamespace?.stop();
  }

  /** What sandbox `id`'s NIC is plugged into; sets up its namespace (TAP) or the shared one (user mode) if missing. */
  async backendFor(id: string): Promise<NicBackend> {
    if (this.tap) {
      const lease = await this.tap.ensure(id);
      return { type: 'tap', ifname: 'tap0', netns: lease.netns };
    }
    if (!this.userNamespace) return { type: 'user' };
    await this.userNamespace.ensure();
    return { type: 'user', netns: this.userNamespace.netns };
  }

  /**
   * Applies `policy` to a VM. Internet off cuts the NIC's link in the VMM
   * (QEMU's `set_link`): QEMU then drops every frame the guest sends and never
   * delivers one to it, and the guest cannot raise a link the host holds
   * down. The link state is part of the saved device state, but is set
   * anyway on every start so that a policy changed while paused holds. In
   * TAP mode the namespace's firewall enforces the allow/deny lists.
   */
  async apply(id: string, nic: { setLink(up: boolean): Promise<void> }, policy: EgressPolicy): Promise<void> {
    await this.tap?.applyPolicy(id, policy);
    await nic.setLink(policy.internet);
    this.log.debug({ sandbox: id, internet: policy.internet, allow: policy.allow, deny: policy.deny }, 'egress policy applied');
  }

  /** Frees what sandbox `id`'s network held; safe to call for one that held nothing. */
  async release(id: string): Promise<void> {
    await this.tap?.release(id);
  }

  describe(id: string, policy: EgressPolicy): SandboxNetwork {
    const lease = this.tap?.lease(id);
    return {
      mode: this.mode,
      internet: policy.internet,
      allow: policy.allow,
      deny: policy.deny,
      guestAddress: `${GUEST_NETWORK.address}/${GUEST_NETWORK.prefixLength}`,
      gateway: GUEST_NETWORK.gateway,
      dns: GUEST_NETWORK.dns,
      ...(lease ? { hostAddress: lease.hostAddress } : {}),
    };
  }
}
