import type { IncomingMessage } from 'node:http';
import { describe, expect, it } from 'vitest';
import { headersForService, PortTargetError, portTarget, scopedCookie } from './port-proxy.js';

const id = 'sb_abcdefghijklmnopqrst';

describe('portTarget', () => {
  it('reads the path form, with the rest of the path and the query for the service', () => {
    expect(portTarget(`/v1/sandboxes/${id}/ports/8080/a/b?x=1`, 'localhost', 'localhost')).toEqual({
      kind: 'http',
      sandboxId: id,
      port: 8080,
      path: '/a/b?x=1',
      form: 'path',
    });
    expect(portTarget(`/v1/sandboxes/${id}/ports/80`, undefined, 'localhost')).toMatchObject({ port: 80, path: '/' });
    expect(portTarget(`/v1/sandboxes/${id}/ports/80?q`, undefined, 'localhost')).toMatchObject({ port: 80, path: '/?q' });
  });

  it('reads the host-name form `<port>-<id>.<domain>`, with or without ports on either side, in any case', () => {
    expect(portTarget('/x?y', `3000-${id}.localhost`, 'localhost')).toEqual({
      kind: 'http',
      sandboxId: id,
      port: 3000,
      path: '/x?y',
      form: 'host',
    });
    expect(portTarget('/', `3000-${id}.Capsule.Example:8443`, 'capsule.example')).toMatchObject({ sandboxId: id, port: 3000 });
    expect(portTarget('/', `3000-${id.toUpperCase()}.capsule.example`, 'capsule.example:3000')).toMatchObject({
      sandboxId: id,
      port: 3000,
    });
  });

  it('reads the raw tunnel form', () => {
    expect(portTarget(`/v1/sandboxes/${id}/tunnel/22`, undefined, 'localhost')).toEqual({ kind: 'tunnel', sandboxId: id, port: 22 });
  });

  it('leaves other requests alone: the API, the agent proxy, other hosts', () => {
    expect(portTarget('/v1/sandboxes', 'localhost:3000', 'localhost')).toBeUndefined();
    expect(portTarget(`/v1/sandboxes/${id}/envd/health`, '127.0.0.1:3000', 'localhost')).toBeUndefined();
    expect(portTarget('/', `3000-${id}.other.example`, 'capsule.example')).toBeUndefined();
    expect(portTarget('/', 'capsule.example', 'capsule.example')).toBeUndefined();
  });

  it('refuses a malformed percent-encoding in the sandbox id with invalid_argument, in both path forms', () => {
    for (const url of ['/v1/sandboxes/%E0%A4%A/ports/80/', '/v1/sandboxes/%/tunnel/22']) {
      expect(() => portTarget(url, undefined, 'localhost')).toThrow(PortTargetError);
    }
  });

  it('refuses ports out of range and malformed host names with invalid_argument', () => {
    for (const [url, host] of [
      [`/v1/sandboxes/${id}/ports/0/`, undefined],
      [`/v1/sandboxes/${id}/ports/65536/`, undefined],
      [`/v1/sandboxes/${id}/ports/http/`, undefined],
      [`/v1/sandboxes/${id}/tunnel/99999`, undefined],
      ['/', `99999-${id}.localhost`],
      ['/', `0-${id}.localhost`],
      ['/', 'www.localhost'],
      ['/', `8080_${id}.localhost`],
      ['/', `8080-${id}.a.localhost`],
      ['/', `8080-${'x'.repeat(300)}.localhost`],
    ] as const) {
      let error: unknown;
      try {
        portTarget(url, host, 'localhost');
      } catch (err) {
        error = err;
      }
      expect(error, `${url} ${host}`).toBeInstanceOf(PortTargetError);
      expect((error as PortTargetError).code).toBe('invalid_argument');
    }
  });
});

describe('scopedCookie: a sandbox sets cookies for its own port only', () => {
  const byHost = { form: 'host', sandboxId: 'sb_1', port: 8000 } as const;
  const byPath = { form: 'path', sandboxId: 'sb_1', port: 8000 } as const;

  it('drops Domain (any case, with or without a dot), keeping the rest', () => {
    expect(scopedCookie('a=1; Domain=localhost; Path=/; HttpOnly', byHost)).toBe('a=1; Path=/; HttpOnly');
    expect(scopedCookie('a=1; path=/x; DOMAIN=.capsule.example; Secure', byHost)).toBe('a=1; path=/x; Secure');
    expect(scopedCookie('a=1', byHost)).toBe('a=1');
  });

  it("by path, puts the cookie's Path under the port's prefix", () => {
    expect(scopedCookie('a=1; Domain=localhost; Path=/app', byPath)).toBe('a=1; Path=/v1/sandboxes/sb_1/ports/8000/app');
    expect(scopedCookie('a=1; HttpOnly', byPath)).toBe('a=1; HttpOnly; Path=/v1/sandboxes/sb_1/ports/8000/');
  });
});

describe('headersForService', () => {
  const forwarded = (rawHeaders: string[]) =>
    headersForService({ headers: {}, rawHeaders, socket: { remoteAddress: '127.0.0.1' } } as unknown as IncomingMessage, false);

  it("keeps the daemon's credentials from the service: its API key and the dashboard's session cookie, the service's own cookies passed on", () => {
    const out = forwarded(['Cookie', 'a=1; capsule_session=SECRET; b=2', 'X-API-Key', 'key', 'Accept', '*/*']);
    expect(out).toContainEqual(['Cookie', 'a=1; b=2']);
    expect(out).toContainEqual(['Accept', '*/*']);
    expect(JSON.stringify(out)).not.toMatch(/SECRET|key/);
    // A Cookie header that held only the session is left out altogether.
    expect(forwarded(['cookie', 'capsule_session=SECRET']).some(([name]) => name.toLowerCase() === 'cookie')).toBe(false);
  });
});
