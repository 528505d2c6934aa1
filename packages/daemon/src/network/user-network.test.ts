import { describe, expect, it } from 'vitest';
import { NON_PUBLIC_NETWORKS } from './egress-policy.js';
import { userNamespaceRuleset } from './user-network.js';

describe('the user-mode namespace firewall', () => {
  const rules = userNamespaceRuleset('10.255.255.53', '10.201.0.1');
  const output = rules
    .slice(rules.indexOf('chain output'), rules.indexOf('chain input'))
    .split('\n')
    .map((l) => l.trim());

  it('lets out DNS to the resolver only, then refuses the host link and every non-public network', () => {
    expect(output.slice(2, 6)).toEqual([
      'oifname "lo" accept',
      'ip daddr 10.255.255.53 meta l4proto { tcp, udp } th dport 53 accept',
      'ip daddr 10.201.0.1 reject',
      `ip daddr { ${NON_PUBLIC_NETWORKS.join(', ')} } reject`,
    ]);
    // Whatever resolver slirp read from resolv.conf (a loopback stub too), its queries go to the reachable one.
    expect(rules).toContain('ip daddr != 10.255.255.53 meta l4proto { tcp, udp } th dport 53 dnat to 10.255.255.53');
  });

  it('covers loopback, private, CGNAT and link-local ranges, and offers no DNS when there is no resolver', () => {
    expect(NON_PUBLIC_NETWORKS).toEqual(
      expect.arrayContaining(['127.0.0.0/8', '10.0.0.0/8', '172.16.0.0/12', '192.168.0.0/16', '100.64.0.0/10', '169.254.0.0/16']),
    );
    expect(userNamespaceRuleset(undefined, '10.201.0.1')).not.toContain('dport 53');
  });
});
