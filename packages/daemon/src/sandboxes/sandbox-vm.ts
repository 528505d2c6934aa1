// A sandbox's running VM as the sandboxes hold it: the VMM's handle (vmm/) and
// the agent in its guest (agent/), with the one flag that joins them: whether
// the guest has answered yet. It adds no behaviour of its own.
import type { AgentClient, AgentInitRequest } from '../agent/client.js';
import type { BulkChannel } from '../agent/bulk-channel.js';
import { GuestAgent } from '../agent/guest-agent.js';
import type { VmHandle } from '../vmm/driver.js';

export class SandboxVm {
  /** Set until the agent first answered; a VM that dies meanwhile is its starter's failure to report. */
  booting = true;
  readonly guest: GuestAgent;

  constructor(
    readonly handle: VmHandle,
    guest?: GuestAgent,
  ) {
    this.guest = guest ?? new GuestAgent(handle.guestPorts, () => handle.alive);
  }

  get pid(): number {
    return this.handle.pid;
  }

  get alive(): boolean {
    return this.handle.alive;
  }

  /** Set while the daemon itself is stopping (or saving) the VM, so its exit is not a crash. */
  get stopping(): boolean {
    return this.handle.stopping;
  }

  set stopping(value: boolean) {
    this.handle.stopping = value;
  }

  get agent(): AgentClient {
    return this.guest.client;
  }

  get bulk(): BulkChannel | undefined {
    return this.guest.bulk;
  }

  /** After a cold boot: waits for the guest to open the agent port, then for the agent to answer. */
  async waitForBoot(deadline: number): Promise<void> {
    await this.handle.waitForAgentPort(deadline);
    await this.guest.waitUntilHealthy(deadline);
    this.booting = false;
  }

  async waitForHealthyAgent(deadline: number): Promise<void> {
    await this.guest.waitUntilHealthy(deadline);
  }

  /** Tells a restored guest who it is now (GuestAgent.init). */
  async initGuest(request: AgentInitRequest, deadline?: number): Promise<void> {
    await this.guest.init(request, deadline);
    this.booting = false;
  }

  /** Lets go of the VM without stopping it (daemon shutdown: the next daemon adopts it). */
  detach(): void {
    this.guest.close();
    this.handle.detach();
  }

  /** Stops the VM and closes the agent's sessions. */
  async stop(): Promise<void> {
    await this.handle.stop();
    this.guest.close();
  }
}
