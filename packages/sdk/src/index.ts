// The public API of @capsule/sdk. Anything not exported here is internal and may change.
export { Sandbox, type SandboxCreateOptions, type SandboxConnectOptions, type SandboxListOptions } from './sandbox.js';
export {
  Commands,
  DEFAULT_COMMAND_TIMEOUT_MS,
  toArgv,
  type CommandConnectOptions,
  type CommandResult,
  type CommandRunOptions,
  type ProcessInfo,
} from './commands.js';
export { CommandHandle, MAX_KEPT_OUTPUT_CHARS, type OutputCallbacks } from './command-handle.js';
export type { ProcessSignal } from './process-exit.js';
export { SandboxAgent, type AgentRequestOptions, type AgentUserOptions } from './agent-call.js';
export {
  Files,
  WatchHandle,
  type EntryInfo,
  type FileReadOptions,
  type FileType,
  type FilesystemEvent,
  type FilesystemEventType,
  type ReadFormat,
  type WatchOptions,
  type WriteData,
  type WriteInfo,
} from './files.js';
export { DEFAULT_PTY_COMMAND, DEFAULT_PTY_TIMEOUT_MS, Pty, PtyHandle, type PtyCreateOptions, type PtyResult, type PtySize } from './pty.js';
export {
  CapsuleClient,
  DEFAULT_CREATE_TIMEOUT_MS,
  DEFAULT_REQUEST_TIMEOUT_MS,
  defaultSocketPath,
  type CallOptions,
  type ConnectionOptions,
  type EventStreamOptions,
  type ExecStreamEvent,
  type ImageCallOptions,
  type PortRequestInit,
} from './client.js';
export { AgentConnection } from './agent-connection.js';
export { verifyWebhookSignature } from './event-stream.js';
export { HOST_ENV, daemonAddressOf, parseDaemonUrl } from './daemon-address.js';
export type { DaemonAddress, TlsTrust } from './daemon-tls.js';
export { fetchDaemonCertificate, normalizeFingerprint } from './daemon-tls.js';
export type { PortTunnelOptions } from './port-tunnel.js';
export { HttpTransport, type HttpTransportOptions, type Transport, type TransportRequest, type TransportResponse } from './transport.js';
export {
  CapsuleError,
  CommandExitError,
  ConnectionError,
  InvalidArgumentError,
  NotFoundError,
  TimeoutError,
  errorFromWire,
  type CapsuleErrorDetails,
  type AgentErrorCode,
  type LocalErrorCode,
} from './errors.js';
export type {
  CreateSandboxRequest,
  DaemonInfo,
  DiskUsage,
  JailSupport,
  ExecEvent,
  ExecRequest,
  ExecResult,
  Image as ImageInfo,
  ImageEvent,
  BuildEvent,
  PortRequest,
  PublishedPort,
  BuildTemplateRequest,
  CreateTemplateRequest,
  Sandbox as SandboxInfo,
  SandboxMetrics,
  SandboxMetricsPoint,
  GuestMetrics,
  SandboxState,
  StateTransition,
  Template as TemplateInfo,
  TemplateDetails,
  PruneResult,
  Volume as VolumeInfo,
  VolumeAttachment,
  VolumeMountRequest,
  VolumeSnapshot as VolumeSnapshotInfo,
  CapsuleEvent,
  CreatedWebhook,
  CreateWebhookRequest,
  Webhook as WebhookInfo,
  WebhookDelivery,
  WebhookPayload,
  ApplyWorkloadsRequest,
  ApplyWorkloadsResult,
  WorkloadChange,
  WorkloadCondition,
  Workload as WorkloadInfo,
} from '@capsule/protocol';
