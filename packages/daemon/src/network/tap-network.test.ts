import { describe, expect, it } from 'vitest';
import { NON_PUBLIC_NETWORKS } from './egress-policy.js';
import { hostResolver, hostRuleset, namespaceRuleset, parseLinkNames, poolSlots, slotAddresses } from './tap-network.js';

describe('TAP networking (pure parts)', () => {
  it('hands out /30 slots of the pool: the host end first, the namespace end second', () => {
    expect(slotAddresses('10.201.0.0/16', 0)).toEqual({ host: '10.201.0.1', netns: '10.201.0.2' });
    expect(slotAddresses('10.201.0.0/16', 65)).toEqual({ host: '10.201.1.5', netns: '10.201.1.6' });
    expect(poolSlots('10.201.0.0/16')).toBe(16384);
    expect(poolSlots('10.0.0.0/31')).toBe(0);
    expect(() => slotAddresses('10.201.0.0/29', 2)).toThrow(/no slot 2/);
  });

  it('finds a resolver a namespace can reach, skipping loopback ones', () => {
    expect(hostResolver('# x\nnameserver 127.0.0.53\nnameserver 10.255.255.53\n')).toBe('10.255.255.53');
    expect(hostResolver('nameserver 127.0.0.53\nnameserver ::1\n')).toBeUndefined();
  });

  it('filters egress as E2B does: allowed first, then denied, then everything else through; DNS always', () => {
    const rules = namespaceRuleset({ internet: true, allow: ['203.0.113.0/24'], deny: ['0.0.0.0/0'] }, '10.255.255.53');
    const egress = rules
      .slice(rules.indexOf('chain egress'))
      .split('\n')
      .map((l) => l.trim());
    expect(egress.slice(1, 6)).toEqual([
      'ct original ip daddr 10.0.2.3 accept',
      'ip daddr 203.0.113.0/24 accept',
      'ip daddr 0.0.0.0/0 drop',
      // The host's private networks and link-local metadata: only an allow-list entry above opens them.
      `ip daddr { ${NON_PUBLIC_NETWORKS.join(', ')} } drop`,
      'accept',
    ]);
    expect(rules).toContain('dnat to 10.255.255.53');
    // Replaced whole in one transaction: the table is created (so the delete cannot fail), deleted and written again.
    expect(rules.startsWith('table ip capsule\ndelete table ip capsule\n')).toBe(true);
    expect(namespaceRuleset({ internet: true, allow: [], deny: [] }, undefined)).not.toContain('dnat');
  });

  it("keeps the host's table to the daemon's own links", () => {
    const rules = hostRuleset('capsule_abc123', 'csabc123', '10.201.0.0/16');
    expect(rules).toContain('ip saddr 10.201.0.0/16 oifname != "csabc123*" masquerade');
    expect(rules).toContain('iifname "csabc123*" oifname "csabc123*" drop');
  });

  it('reads link names from `ip -o link`, veth peers included', () => {
    const out = '1: lo: <LOOPBACK,UP> mtu 65536\n7: csb6e92a0@if2: <BROADCAST> mtu 1500\n9: csb6e92azy@csb6e92azz: <BROADCAST>\n';
    expect(parseLinkNames(out)).toEqual(['lo', 'csb6e92a0', 'csb6e92azy']);
  });
});
