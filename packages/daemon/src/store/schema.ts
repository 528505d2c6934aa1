// The store's tables as Kysely sees them. The store holds what a sandbox *is*
// (identity, spec, state and its history); what is currently true of a running
// VM (pid, sockets) lives in its runtime folder and is never stored here.
import type { Generated } from 'kysely';

export interface SandboxRow {
  id: string;
  name: string | null;
  template: string;
  state: string;
  state_reason: string;
  state_message: string | null;
  vcpus: number;
  memory_mib: number;
  accel: string;
  metadata: string;
  env: string;
  created_at: string;
  boot_ms: number | null;
  /** 0: no timeout. */
  timeout_ms: number;
  /** ISO time after which the reaper kills the sandbox; null when it has no timeout or is not running. */
  expires_at: string | null;
  /** What the reaper does when the timeout passes. */
  on_timeout: 'kill' | 'pause' | 'stop';
  /** What the user last asked of it (running, paused, stopped): what a host reboot brings it back to. */
  desired_state: 'running' | 'paused' | 'stopped';
  /** 1: the guest's link is up; 0: cut (no network at all). */
  internet_access: number;
  /** JSON arrays of CIDRs the guest may (allow) or may not (deny) reach; TAP mode only. */
  egress_allow: string;
  egress_deny: string;
  /** JSON array of its SSH server's public host keys; null until the server first ran (sandboxes/ssh-server.ts). */
  ssh_host_keys: string | null;
}

export interface SandboxEventRow {
  id: Generated<number>;
  sandbox_id: string;
  state: string;
  reason: string;
  message: string | null;
  at: string;
}

export interface TemplateRow {
  name: string;
  kernel: string;
  initramfs: string;
  kit: string;
  rootfs: string;
  default_vcpus: number;
  default_memory_mib: number;
  created_at: string;
}

export interface ApiKeyRow {
  id: string;
  name: string;
  /** sha256 of the whole key, hex. */
  key_hash: string;
  /** The key's start and end, enough for a person to tell keys apart. */
  mask: string;
  created_at: string;
  last_used_at: string | null;
}

export interface ImageRow {
  /** Digest of the linux/amd64 manifest. */
  digest: string;
  config_digest: string;
  /** JSON: the manifest's layer descriptors. */
  layers: string;
  /** JSON: the parts of the image config Capsule uses. */
  config: string;
  size_bytes: number;
  /** `registry` or `archive`. */
  source: string;
  created_at: string;
}

export interface ImageRefRow {
  ref: string;
  digest: string;
  updated_at: string;
}

export interface TemplateImageRow {
  template: string;
  image_digest: string | null;
  image_ref: string;
  /** JSON string map from the image config's Env. */
  env: string;
  user: string;
  workdir: string | null;
  /** JSON argv of START, run in the template's VM before its warm snapshot. */
  start_cmd: string | null;
  /** JSON argv of READY, retried until it exits 0. */
  ready_cmd: string | null;
  ready_timeout_ms: number | null;
  /** `image` (template create --image) or `capsulefile` (template build). */
  source_kind: string;
}

/** TAP mode: one sandbox's network namespace and the host-side addresses allocated to it. */
export interface NetworkLeaseRow {
  sandbox_id: string;
  /** Index into the link address pool; unique, so two sandboxes never share addresses. */
  slot: number;
  netns: string;
  /** The host end of the veth pair that links the namespace to the host. */
  host_ifname: string;
  host_address: string;
  netns_address: string;
  created_at: string;
}

export interface SandboxPortRow {
  sandbox_id: string;
  host_ip: string;
  host_port: number;
  guest_port: number;
}

export interface TemplateSnapshotRow {
  template: string;
  /** The sandbox whose state it is. */
  source_sandbox: string;
  /** Folder of its warm snapshot (snapshot.json, memory, state, disk.qcow2). */
  dir: string;
}

/** A named disk that outlives sandboxes (volumes/): its file is `<stateDir>/volumes/<name>.ext4`. */
export interface VolumeRow {
  name: string;
  size_bytes: number;
  created_at: string;
}

/** A copy of a volume as it was, kept in `<stateDir>/volumes/snapshots/<volume>/<name>.ext4`; goes with its volume. */
export interface VolumeSnapshotRow {
  volume: string;
  name: string;
  size_bytes: number;
  created_at: string;
}

/** A volume attached to a sandbox at its create; the attachment holds while the sandbox is live (not killed or failed). */
export interface SandboxVolumeRow {
  sandbox_id: string;
  volume: string;
  /** Its order in the sandbox's create: the guest finds it by the disk serial `capsule-vol-<position>`. */
  position: number;
  mount: string;
  /** 1: attached read-only. */
  read_only: number;
}

/** A template or image event (sandbox events are sandbox_events rows). */
export interface ResourceEventRow {
  id: Generated<number>;
  /** template.created, template.built, template.removed, image.pulled, image.imported, image.removed. */
  type: string;
  template: string | null;
  image: string | null;
  /** Set on workload.* events (migration 0012). */
  workload: string | null;
  reason: string;
  message: string | null;
  at: string;
}

/** A declared workload (workloads/): its spec, what it should be, and its conditions summed up from its replicas. */
export interface WorkloadRow {
  name: string;
  /** The label of the file it was applied from, for --prune. */
  source: string | null;
  /** JSON of the normalised WorkloadSpec. */
  spec: string;
  /** Hash of the spec's fields that need a new VM. */
  spec_hash: string;
  /** running | stopped: what it should be. */
  state: string;
  /** JSON array of WorkloadCondition. */
  conditions: string;
  created_at: string;
  updated_at: string;
}

/** One replica of a workload (migration 0014): a place the reconciler keeps one sandbox running in, with its own restart count. */
export interface WorkloadReplicaRow {
  workload: string;
  /** Its number among the workload's replicas (the lowest free one when it was made). */
  slot: number;
  /** Its sandbox, once made. */
  sandbox_id: string | null;
  /** The workload's spec_hash it was made for; a replica of another hash is replaced, one at a time. */
  spec_hash: string;
  /** starting, health_pending, ready, backoff, crash_loop, exited, completed, stopped. */
  phase: string;
  message: string | null;
  restarts: number;
  /** Failures in a row since it was last stable; past maxRetries it is crash_loop. */
  failures: number;
  /** JSON of the last exit (reason, exitCode, message, at), or null. */
  last_exit: string | null;
  created_at: string;
  updated_at: string;
}

export interface WebhookRow {
  id: string;
  url: string;
  secret: string;
  /** JSON array of event types or families; empty: every event. */
  events: string;
  created_at: string;
}

export interface WebhookDeliveryRow {
  id: Generated<number>;
  webhook_id: string;
  event_id: string;
  event_type: string;
  /** pending, delivered, failed. */
  status: string;
  attempts: number;
  http_status: number | null;
  error: string | null;
  created_at: string;
  updated_at: string;
}

export interface Database {
  sandboxes: SandboxRow;
  sandbox_events: SandboxEventRow;
  templates: TemplateRow;
  api_keys: ApiKeyRow;
  images: ImageRow;
  image_refs: ImageRefRow;
  template_images: TemplateImageRow;
  network_leases: NetworkLeaseRow;
  sandbox_ports: SandboxPortRow;
  template_snapshots: TemplateSnapshotRow;
  volumes: VolumeRow;
  sandbox_volumes: SandboxVolumeRow;
  volume_snapshots: VolumeSnapshotRow;
  resource_events: ResourceEventRow;
  webhooks: WebhookRow;
  webhook_deliveries: WebhookDeliveryRow;
  workloads: WorkloadRow;
  workload_replicas: WorkloadReplicaRow;
}
