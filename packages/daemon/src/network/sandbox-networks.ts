// Each sandbox's network as the sandbox manager sees it: which backend its
// NIC is plugged into, applying its egress policy to a running VM, and
// freeing what it held when it goes. The manager calls this; this never
// decides a sandbox's state or touches its VM beyond the network.
import type { SandboxNetwork } from '@capsule/protocol';
import type { Logger } from '../log.js';
import type { QmpClient } from '../vmm/qmp.js';
import type { EgressPolicy } from './egress-policy.js';
import { GUEST_NETWORK, NIC_DEVICE_ID, type NicBackend } from './guest-network.js';

export type NetworkMode = 'user' | 'tap';

export class SandboxNetworks {
  constructor(
    readonly mode: NetworkMode,
    private readonly log: Logger,
  ) {}

  /** Whether allow/deny lists can be enforced (a user-mode NIC can only be cut as a whole). */
  get listsSupported(): boolean {
    return this.mode === 'tap';
  }

  /** What sandbox `id`'s NIC is plugged into. */
  async backendFor(_id: string): Promise<NicBackend> {
    return { type: 'user' };
  }

  /**
   * Applies `policy` to a VM. Internet off cuts the NIC's link in QEMU
   * (`set_link`): QEMU then drops every frame the guest sends and never
   * delivers one to it, and the guest cannot raise a link the host holds
   * down. The link state is part of the saved device state, but is set
   * anyway on every start so that a policy changed while paused holds.
   */
  async apply(id: string, qmp: QmpClient, policy: EgressPolicy): Promise<void> {
    await qmp.execute('set_link', { name: NIC_DEVICE_ID, up: policy.internet });
    this.log.debug({ sandbox: id, internet: policy.internet }, 'egress policy applied');
  }

  /** Frees what sandbox `id`'s network held; safe to call for one that held nothing. */
  async release(_id: string): Promise<void> {}

  describe(_id: string, policy: EgressPolicy): SandboxNetwork {
    return {
      mode: this.mode,
      internet: policy.internet,
      allow: policy.allow,
      deny: policy.deny,
      guestAddress: `${GUEST_NETWORK.address}/${GUEST_NETWORK.prefixLength}`,
      gateway: GUEST_NETWORK.gateway,
      dns: GUEST_NETWORK.dns,
    };
  }
}
