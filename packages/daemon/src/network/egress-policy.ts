// A sandbox's egress policy: whether it has a network at all, and (TAP mode)
// which IPv4 networks it may or may not reach. Parsed and normalised here from
// requests, and turned to and from the store's columns; never trusted as sent.
import type { EgressRules } from '@capsule/protocol';
import { CapsuleError } from '../errors.js';
import type { SandboxRecord } from '../store/store.js';

export interface EgressPolicy {
  internet: boolean;
  /** Normalised CIDRs (`a.b.c.d/n`, host bits cleared). A destination in `allow` is reached, else one in `deny` is not. */
  allow: string[];
  deny: string[];
}

export const OPEN_POLICY: EgressPolicy = { internet: true, allow: [], deny: [] };

/**
 * IPv4 networks that are not the internet: this host and its loopback,
 * private and shared (CGNAT) ranges, link-local (cloud metadata lives at
 * 169.254.169.254), benchmarking, multicast and reserved. No sandbox reaches
 * them unless its allow-list names them (TAP mode). The documentation
 * ranges (TEST-NET-1..3) are left alone: they route nowhere real.
 */
export const NON_PUBLIC_NETWORKS: readonly string[] = [
  '0.0.0.0/8',
  '10.0.0.0/8',
  '100.64.0.0/10',
  '127.0.0.0/8',
  '169.254.0.0/16',
  '172.16.0.0/12',
  '192.0.0.0/24',
  '192.168.0.0/16',
  '198.18.0.0/15',
  '224.0.0.0/4',
  '240.0.0.0/4',
];

/** `a.b.c.d[/n]` as a normalised CIDR (host bits cleared), or an invalid_argument error. */
export function parseCidr(text: string): string {
  const match = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})(?:\/(\d{1,2}))?$/.exec(text);
  const octets = match ? match.slice(1, 5).map(Number) : [];
  const prefix = match?.[5] === undefined ? 32 : Number(match[5]);
  if (!match || octets.some((o) => o > 255) || prefix > 32) {
    throw new CapsuleError('invalid_argument', `"${text}" is not an IPv4 network`, {
      hint: 'write networks as a.b.c.d/n, e.g. 10.0.0.0/8 or 1.2.3.4',
    });
  }
  const value = octets.reduce((acc, o) => acc * 256 + o, 0);
  const mask = prefix === 0 ? 0 : (0xffffffff << (32 - prefix)) >>> 0;
  const network = (value & mask) >>> 0;
  return `${[24, 16, 8, 0].map((shift) => (network >>> shift) & 255).join('.')}/${prefix}`;
}

function parseList(list: readonly string[] | undefined): string[] {
  return [...new Set((list ?? []).map(parseCidr))];
}

/** The policy a create or an update asks for; lists need a mode that can enforce them. */
export function egressPolicyFrom(
  request: { internet?: boolean | undefined; egress?: EgressRules | undefined },
  listsSupported: boolean,
  base: EgressPolicy = OPEN_POLICY,
): EgressPolicy {
  const policy: EgressPolicy = {
    internet: request.internet ?? base.internet,
    allow: request.egress ? parseList(request.egress.allow) : base.allow,
    deny: request.egress ? parseList(request.egress.deny) : base.deny,
  };
  if (!listsSupported && (policy.allow.length > 0 || policy.deny.length > 0)) {
    throw new CapsuleError('invalid_argument', 'egress allow and deny lists need TAP networking', {
      hint: 'run capsuled as root with CAPSULE_NETWORK=tap, or switch the whole network with internet: true/false',
    });
  }
  return policy;
}

export function egressPolicyOf(record: Pick<SandboxRecord, 'internet_access' | 'egress_allow' | 'egress_deny'>): EgressPolicy {
  return {
    internet: record.internet_access !== 0,
    allow: JSON.parse(record.egress_allow) as string[],
    deny: JSON.parse(record.egress_deny) as string[],
  };
}

export function egressPolicyColumns(policy: EgressPolicy): Pick<SandboxRecord, 'internet_access' | 'egress_allow' | 'egress_deny'> {
  return { internet_access: policy.internet ? 1 : 0, egress_allow: JSON.stringify(policy.allow), egress_deny: JSON.stringify(policy.deny) };
}
