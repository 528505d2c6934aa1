// The guest agent's wire contract as the daemon and the agent import it
// (`@capsule/protocol/agent`): envd-compatible Connect services generated from
// proto/ plus the few plain-HTTP facts both sides quote. Generated code is
// re-exported, never edited; nothing here may import daemon or agent code.

export * from './gen/process/process_pb.js';
export * from './gen/filesystem/filesystem_pb.js';

/** Name of the virtio-serial port the agent serves on (QEMU `virtserialport name=`). */
export const AGENT_PORT_NAME = 'capsule.agent';

/** Plain-HTTP routes served next to the Connect services, as envd has them. */
export const agentHttpPaths = {
  /** 204 No Content while the agent is serving. */
  health: '/health',
  metrics: '/metrics',
  files: '/files',
  init: '/init',
} as const;

/**
 * Request headers the agent understands, with envd's names and meanings:
 * the Unix user for an operation travels as HTTP Basic auth (`user:`), and
 * streaming calls name their idle keepalive interval in seconds.
 */
export const agentHeaders = {
  authorization: 'authorization',
  keepalivePingInterval: 'keepalive-ping-interval',
} as const;
