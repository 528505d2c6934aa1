import { describe, expect, it } from 'vitest';
import { NON_PUBLIC_NETWORKS } from '../../packages/daemon/src/network/egress-policy.ts';
import { benchNetworkNames, HOST_ADDRESS, namespacesToRemove, SERVER_ADDRESS, setupCommands } from './bench-network.mjs';

describe('the bench network', () => {
  const names = benchNetworkNames(4242);

  it('is made of namespaces of its own, never the machine’s: every command names one of them', () => {
    for (const args of setupCommands(names)) {
      const ns = args[0] === 'netns' ? args[2] : args[1];
      expect([names.hostNs, names.serverNs], args.join(' ')).toContain(ns);
    }
    expect(benchNetworkNames(4243).hostNs).not.toBe(names.hostNs);
  });

  it('puts the server address in the server namespace and the host one in the host namespace, on one link', () => {
    const addresses = setupCommands(names).filter((args) => args[2] === 'addr');
    expect(addresses).toEqual([
      ['-n', names.hostNs, 'addr', 'add', `${HOST_ADDRESS}/24`, 'dev', 'bench0'],
      ['-n', names.serverNs, 'addr', 'add', `${SERVER_ADDRESS}/24`, 'dev', 'bench0'],
    ]);
    // No default route: from the daemon's namespace only the server's network is reachable.
    expect(setupCommands(names).some((args) => args.includes('route'))).toBe(false);
  });

  it("serves an address outside every network a root daemon's firewall refuses", () => {
    const value = (address) => address.split('.').reduce((acc, o) => acc * 256 + Number(o), 0);
    const inside = (address, cidr) => {
      const [network, prefix] = cidr.split('/');
      const size = 2 ** (32 - Number(prefix));
      return Math.floor(value(address) / size) === Math.floor(value(network) / size);
    };
    expect(NON_PUBLIC_NETWORKS.length).toBeGreaterThan(0);
    expect(NON_PUBLIC_NETWORKS.filter((cidr) => inside(SERVER_ADDRESS, cidr))).toEqual([]);
  });

  it('removes its own namespaces and its daemons’, and nobody else’s', () => {
    const existing = [names.hostNs, names.serverNs, 'capsule-abc123-user', 'capsule-def456-user', 'capbench-1-host', 'other'];
    expect(namespacesToRemove(existing, names, ['abc123'])).toEqual([names.hostNs, names.serverNs, 'capsule-abc123-user']);
    expect(namespacesToRemove(existing, names, [])).toEqual([names.hostNs, names.serverNs]);
  });
});
