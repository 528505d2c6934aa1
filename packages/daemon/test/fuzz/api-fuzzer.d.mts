// Types of api-fuzzer.mjs (plain JS so that bench/ runs it without a build).
import type net from 'node:net';

export interface FuzzTarget {
  sandboxId?: string;
  apiKey?: string;
  accessToken?: string;
  trafficToken?: string;
  domain?: string;
}
export interface FuzzEndpoint {
  name: string;
  connect: () => net.Socket;
}
export interface UndocumentedAnswer {
  endpoint: string;
  kind: string;
  method: string;
  path: string;
  status: number;
  answer: string;
}
export interface FuzzResult {
  sent: number;
  byStatus: Record<string, number>;
  byOutcome: Record<string, number>;
  byKind: Record<string, number>;
  undocumented: UndocumentedAnswer[];
  /** Requests that had no answer within requestTimeoutMs (the first 20). */
  unanswered: Array<{ endpoint: string; kind: string; method: string; path: string; truncated: boolean; head: string }>;
  stoppedByTime: boolean;
}
export interface SeededRandom {
  next(): number;
  int(n: number): number;
  pick<T>(list: readonly T[]): T;
  chance(p: number): boolean;
  bytes(n: number): Buffer;
}
/** What hostileRequest aims at, as its `kind`. */
export const REQUEST_KINDS: readonly string[];
export function seededRandom(seed: number): SeededRandom;
export function hostileRequest(
  rng: SeededRandom,
  target?: FuzzTarget,
): { kind: string; method: string; path: string; truncated: boolean; bytes: Buffer };
export function isDocumentedStatus(status: number): boolean;
export function runFuzz(options: {
  seed: number;
  requests: number;
  timeLimitMs: number;
  endpoints: FuzzEndpoint[];
  target?: FuzzTarget;
  concurrency?: number;
  requestTimeoutMs?: number;
  /** Only requests of these kinds (REQUEST_KINDS), to chase one bug. */
  kinds?: string[];
}): Promise<FuzzResult>;
export function daemonEndpoints(options: { tcpHost?: string; tcpPort?: number; socketPath?: string }): FuzzEndpoint[];
