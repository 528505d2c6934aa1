import { describe, expect, it } from 'vitest';
import { CapsuleError } from '../errors.js';
import { egressPolicyColumns, egressPolicyFrom, egressPolicyOf, OPEN_POLICY, parseCidr } from './egress-policy.js';

describe('egress policy', () => {
  it('normalises networks: a bare address is /32, host bits are cleared', () => {
    expect(parseCidr('1.2.3.4')).toBe('1.2.3.4/32');
    expect(parseCidr('10.1.2.3/8')).toBe('10.0.0.0/8');
    expect(parseCidr('0.0.0.0/0')).toBe('0.0.0.0/0');
    expect(parseCidr('192.168.7.255/23')).toBe('192.168.6.0/23');
  });

  it('refuses what is not an IPv4 network, with a hint', () => {
    for (const bad of ['example.com', '1.2.3', '256.1.1.1', '1.2.3.4/33', '::1/128', '1.2.3.4/']) {
      const error = (() => {
        try {
          parseCidr(bad);
        } catch (err) {
          return err;
        }
        return undefined;
      })();
      expect(error, bad).toBeInstanceOf(CapsuleError);
      expect((error as CapsuleError).code).toBe('invalid_argument');
      expect((error as CapsuleError).hint).toContain('a.b.c.d/n');
    }
  });

  it('keeps what an update leaves out, and replaces both lists when it names them', () => {
    const base = { internet: false, allow: ['10.0.0.0/8'], deny: ['0.0.0.0/0'] };
    expect(egressPolicyFrom({}, true, base)).toEqual(base);
    expect(egressPolicyFrom({ internet: true }, true, base)).toEqual({ ...base, internet: true });
    expect(egressPolicyFrom({ egress: { deny: ['1.2.3.4', '1.2.3.4/32'] } }, true, base)).toEqual({
      internet: false,
      allow: [],
      deny: ['1.2.3.4/32'],
    });
  });

  it('refuses lists where they cannot be enforced (user-mode networking)', () => {
    expect(() => egressPolicyFrom({ egress: { deny: ['0.0.0.0/0'] } }, false)).toThrow(/need TAP networking/);
    expect(egressPolicyFrom({ internet: false, egress: {} }, false)).toEqual({ ...OPEN_POLICY, internet: false });
  });

  it('round-trips through the store columns', () => {
    const policy = { internet: false, allow: ['10.0.0.0/8'], deny: ['0.0.0.0/0'] };
    expect(egressPolicyColumns(policy)).toEqual({ internet_access: 0, egress_allow: '["10.0.0.0/8"]', egress_deny: '["0.0.0.0/0"]' });
    expect(egressPolicyOf(egressPolicyColumns(policy))).toEqual(policy);
  });
});
