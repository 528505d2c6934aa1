// The guest agent's wire contract as the daemon and the agent import it
// (`@capsule/protocol/agent`): envd-compatible Connect services generated from
// proto/ plus the few plain-HTTP facts both sides quote. Generated code is
// re-exported, never edited; nothing here may import daemon or agent code.

import { constants } from 'node:os';
export * from './gen/process/process_pb.js';
export * from './gen/filesystem/filesystem_pb.js';

/** Name of the virtio-serial port the agent serves on (QEMU `virtserialport name=`). */
export const AGENT_PORT_NAME = 'capsule.agent';

/**
 * The second virtio-serial port: the bytes of large `/files` transfers,
 * copied by capsule-guest-helper in the guest, while the request itself (user,
 * path, permissions, errors) stays on the agent's HTTP/2 port. The daemon
 * offers it by sending {@link bulkHeaders} `id` on a `/files` request:
 *   POST (sent as {@link bulkUploadContentType}, the path in the query): the
 *     body is not on HTTP/2; it comes on the bulk port after the header
 *     "CAPSBULK" + id as frames, each a 4-byte big-endian length (at most
 *     {@link bulkMaxFrameBytes}) and that many bytes, ended by an empty frame.
 *     The daemon sends the end frame only once the client's whole body was
 *     read and found well formed, so a transfer without it is dropped. The
 *     answer is the usual one. The content type makes an agent that does not
 *     speak {@link bulkProtocolVersion} refuse it (400) rather than write a
 *     wrong file.
 *   GET: the agent may take it (a plain whole-file GET of at least
 *     {@link bulkMinBytes}): it answers with `id` and `size` headers and no
 *     body on HTTP/2, writes "CAPSBULK" + id and exactly `size` bytes to the
 *     bulk port, and ends the stream once they are written (a reset if not).
 *     Otherwise it answers as usual, with the body on HTTP/2.
 */
export const BULK_PORT_NAME = 'capsule.bulk';
/**
 * The version of the contract above, recorded with each VM (its agent speaks
 * it). Version 1 sent uploads as one block of announced size; the daemon
 * sends a version-1 agent downloads only.
 */
export const bulkProtocolVersion = 2;
export const bulkHeaders = { id: 'capsule-bulk-id', size: 'capsule-bulk-size' } as const;
export const bulkUploadContentType = 'application/x-capsule-bulk-frames';
export const bulkMaxFrameBytes = 16 * 1024 * 1024;
/** What starts every transfer on the bulk port, followed by the 32 hex digits of its id. */
export const bulkMagic = 'CAPSBULK';
export const bulkIdPattern = /^[0-9a-f]{32}$/;
/**
 * Smallest transfer worth the bulk port: each costs the guest a helper process
 * start (tens of ms under TCG), which HTTP/2 spends on a MiB or two.
 */
export const bulkMinBytes = 2 * 1024 * 1024;

/**
 * The envd version whose API the agent implements, as reported to e2b SDKs
 * (they gate features on it: octet-stream uploads from 0.5.7, closeStdin
 * from 0.5.2, recursive watches from 0.1.4).
 */
export const envdCompatVersion = '0.5.7';

/** Plain-HTTP routes served next to the Connect services, as envd has them. */
export const agentHttpPaths = {
  /** 204 No Content while the agent is serving. */
  health: '/health',
  metrics: '/metrics',
  /** GET ?path=&username= downloads a file; POST uploads (multipart/form-data or application/octet-stream). */
  files: '/files',
  /** POST {@link AgentInitRequest}; answers 204. */
  init: '/init',
  /**
   * Capsule, not envd: `POST /capsule/tunnel?port=N` opens a TCP connection to
   * port N on the guest's loopback and relays bytes both ways on the one
   * HTTP/2 stream (request body in, response body out). 200 once connected;
   * 502 `{code, message}` with {@link tunnelErrorHeader} `refused` when nothing
   * listens; 429 when the agent holds too many tunnels; 400 for a bad port.
   */
  tunnel: '/capsule/tunnel',
} as const;

/** Response header on a failed tunnel: `refused`, `limit`, `bad_port` or `failed`. */
export const tunnelErrorHeader = 'capsule-tunnel-error';
/** Tunnels one agent holds open at once; more are refused with 429. */
export const maxAgentTunnels = 1024;

/**
 * The JSON body of `POST /init`: envd's fields (the e2b orchestrator sends
 * the same ones) plus Capsule's `hostname` and `entropy`. Every field is
 * optional; a call may come after every restore, and each call overrides the
 * previous one's values (env vars are merged). The agent answers 204 No
 * Content, 400/413 with `{ code, message }` for bad input (nothing applied),
 * 500 when the clock or CRNG could not be set.
 */
export interface AgentInitRequest {
  /** Merged into the environment of every process started later. */
  envVars?: Record<string, string>;
  /** Kept for later requests (envd's X-Access-Token); absent or null clears it. */
  accessToken?: string | null;
  /** The host's current time, RFC 3339 (`2026-01-02T03:04:05.123456789Z`); the guest clock is set when it lags. */
  timestamp?: string;
  /** User for requests that name none; empty keeps the current one. */
  defaultUser?: string;
  /** cwd / path for requests that leave it empty; empty keeps the current one. */
  defaultWorkdir?: string;
  /** Capsule: the guest's kernel hostname, 1-63 of [a-z0-9-], not starting or ending with '-'. */
  hostname?: string;
  /** Capsule: hex of 32-512 random bytes, credited to the guest kernel's CRNG, which is then reseeded. */
  entropy?: string;
}

/**
 * The JSON body of `GET /metrics`, with envd's field names: `ts` in Unix
 * seconds, CPU use in percent (two decimals) since the previous call, memory
 * (`used` = total - available) and the root filesystem (`used` = total - what
 * an unprivileged user could still write) in bytes; the `_mib` fields are the
 * deprecated ones envd still sends.
 */
export interface AgentMetrics {
  ts: number;
  cpu_count: number;
  cpu_used_pct: number;
  mem_total_mib: number;
  mem_used_mib: number;
  mem_total: number;
  mem_used: number;
  disk_used: number;
  disk_total: number;
}

/** Limits the agent enforces on `POST /init` (the daemon should stay well inside them). */
export const agentInitLimits = {
  maxBodyBytes: 64 * 1024,
  maxEnvVars: 1024,
  maxEnvVarNameBytes: 1024,
  maxEnvVarValueBytes: 32 * 1024,
  maxAccessTokenBytes: 4096,
  minEntropyBytes: 32,
  maxEntropyBytes: 512,
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

/**
 * Go's descriptions of the Linux signals (its syscall signal table), as envd
 * writes them in an end event's status ("signal: killed"): the agent writes
 * them and the daemon reads them back. Numbers are Linux x86/arm64 ones.
 */
export const goSignalDescriptions: Readonly<Record<number, string>> = {
  1: 'hangup',
  2: 'interrupt',
  3: 'quit',
  4: 'illegal instruction',
  5: 'trace/breakpoint trap',
  6: 'aborted',
  7: 'bus error',
  8: 'floating point exception',
  9: 'killed',
  10: 'user defined signal 1',
  11: 'segmentation fault',
  12: 'user defined signal 2',
  13: 'broken pipe',
  14: 'alarm clock',
  15: 'terminated',
  16: 'stack fault',
  17: 'child exited',
  18: 'continued',
  19: 'stopped (signal)',
  20: 'stopped',
  21: 'stopped (tty input)',
  22: 'stopped (tty output)',
  23: 'urgent I/O condition',
  24: 'CPU time limit exceeded',
  25: 'file size limit exceeded',
  26: 'virtual timer expired',
  27: 'profiling timer expired',
  28: 'window changed',
  29: 'I/O possible',
  30: 'power failure',
  31: 'bad system call',
};

/**
 * Signal names by Go's description, the reverse of the table above. The first
 * name of a number wins (SIGABRT before its alias SIGIOT).
 */
const signalByDescription = new Map<string, NodeJS.Signals>();
for (const [name, number] of Object.entries(constants.signals) as [NodeJS.Signals, number][]) {
  const description = goSignalDescriptions[number];
  if (description !== undefined && !signalByDescription.has(description)) signalByDescription.set(description, name);
}

/** Reads a signal name out of an envd status ("signal: killed" → SIGKILL). */
export function signalFromStatus(status: string): NodeJS.Signals | undefined {
  const match = /^signal: (.+)$/.exec(status);
  return match?.[1] ? signalByDescription.get(match[1]) : undefined;
}

/** Shell convention: a command killed by signal N reports 128 + N. */
export function exitCodeForSignal(signal: NodeJS.Signals): number {
  return 128 + (constants.signals[signal] ?? 0);
}
