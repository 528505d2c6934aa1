// Tests only: a sandbox row as a create first writes it (state `starting`),
// for tests that need rows in a real store without booting anything.
import type { SandboxRecord } from './store.js';

export function startingSandboxRow(id: string, name: string | null = null): SandboxRecord {
  return {
    id,
    name,
    template: 'base',
    state: 'starting',
    state_reason: 'user',
    state_message: null,
    vcpus: 1,
    memory_mib: 512,
    accel: 'tcg',
    metadata: '{}',
    env: '{}',
    created_at: new Date().toISOString(),
    boot_ms: null,
    timeout_ms: 0,
    expires_at: null,
    on_timeout: 'kill',
    desired_state: 'running',
    internet_access: 1,
    egress_allow: '[]',
    egress_deny: '[]',
    ssh_host_keys: null,
  };
}
