import { describe, expect, it } from 'vitest';
import { collectPublish, parseForwardSpec } from './option-parsers.js';

describe('-p / --publish', () => {
  it("takes docker's forms: GUEST, HOST:GUEST, IP:HOST:GUEST, [IPv6]:HOST:GUEST, /tcp", () => {
    expect(collectPublish('80')).toEqual([{ guestPort: 80 }]);
    expect(collectPublish('8080:80')).toEqual([{ hostPort: 8080, guestPort: 80 }]);
    expect(collectPublish('0.0.0.0:8080:80/tcp')).toEqual([{ hostIp: '0.0.0.0', hostPort: 8080, guestPort: 80 }]);
    expect(collectPublish('[::1]:0:80')).toEqual([{ hostIp: '::1', hostPort: 0, guestPort: 80 }]);
    expect(collectPublish('81', collectPublish('80'))).toEqual([{ guestPort: 80 }, { guestPort: 81 }]);
  });

  it('refuses ports out of range and other shapes', () => {
    for (const bad of ['0', '65536', '8080:0', '70000:80', 'a:80', '80/udp', '1:2:3:4', ''])
      expect(() => collectPublish(bad), bad).toThrow();
  });
});

describe('port-forward [LOCAL:]REMOTE', () => {
  it('defaults the local port to the remote one; 0 picks a free one', () => {
    expect(parseForwardSpec('80')).toEqual({ localPort: 80, remotePort: 80 });
    expect(parseForwardSpec('8080:80')).toEqual({ localPort: 8080, remotePort: 80 });
    expect(parseForwardSpec('0:80')).toEqual({ localPort: 0, remotePort: 80 });
  });

  it('refuses bad ports', () => {
    for (const bad of ['0', '80:0', '80:65536', 'x', '1:2:3']) expect(() => parseForwardSpec(bad), bad).toThrow();
  });
});
