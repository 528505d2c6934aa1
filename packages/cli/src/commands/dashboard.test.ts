// Where `capsule dashboard` sends the browser: the daemon's TCP address, with
// the scheme its listener speaks, a wildcard address read as this host.
import { describe, expect, it } from 'vitest';
import { dashboardOrigin } from './dashboard.js';

const tls = { fingerprintSha256: 'AB:CD', certificatePath: '/x', generated: true };

describe('dashboardOrigin', () => {
  it('is the TCP address, https when it serves TLS, loopback for a wildcard', () => {
    expect(dashboardOrigin({ tcpAddress: '127.0.0.1:8443', tls })).toBe('https://127.0.0.1:8443');
    expect(dashboardOrigin({ tcpAddress: '10.0.0.5:80' })).toBe('http://10.0.0.5:80');
    expect(dashboardOrigin({ tcpAddress: '0.0.0.0:7070', tls })).toBe('https://127.0.0.1:7070');
    expect(dashboardOrigin({ tcpAddress: '[::]:7070' })).toBe('http://[::1]:7070');
  });

  it('says how to make the daemon listen on TCP when it does not', () => {
    expect(() => dashboardOrigin({})).toThrow(/does not listen on TCP/);
  });
});
