import { describe, expect, it } from 'vitest';
import { choosePlatform, parseManifest } from './manifest.js';
import { formatReference, isLoopbackRegistry, parseReference } from './reference.js';
import { parseChallenge } from './registry-client.js';

const digest = `sha256:${'a'.repeat(64)}`;

describe('image references', () => {
  it("applies Docker's defaults for registry, library/ and tag", () => {
    expect(parseReference('debian')).toEqual({
      registry: 'registry-1.docker.io',
      repository: 'library/debian',
      tag: 'latest',
      digest: undefined,
    });
    expect(formatReference(parseReference('debian:12'))).toBe('docker.io/library/debian:12');
    expect(parseReference('localhost:5000/team/app:1.0')).toMatchObject({ registry: 'localhost:5000', repository: 'team/app', tag: '1.0' });
    expect(parseReference(`ghcr.io/x/y@${digest}`)).toMatchObject({ registry: 'ghcr.io', repository: 'x/y', tag: undefined, digest });
  });

  it('refuses what is not a reference', () => {
    for (const bad of ['', 'UPPER/case', 'a b', 'x@sha256:short', 'repo:bad tag']) {
      expect(() => parseReference(bad)).toThrow(/not an image reference/);
    }
  });

  it('treats registries on this host as plain HTTP', () => {
    expect(isLoopbackRegistry('localhost:5000')).toBe(true);
    expect(isLoopbackRegistry('127.0.0.1:41234')).toBe(true);
    expect(isLoopbackRegistry('[::1]:5000')).toBe(true);
    expect(isLoopbackRegistry('registry.example.com')).toBe(false);
  });
});

describe('registry challenges and indexes', () => {
  it('parses a bearer challenge with quoted and escaped values', () => {
    expect(parseChallenge('Bearer realm="https://auth.example/token",service="reg",scope="repository:a/b:pull"')).toEqual({
      scheme: 'bearer',
      params: { realm: 'https://auth.example/token', service: 'reg', scope: 'repository:a/b:pull' },
    });
    expect(parseChallenge('Basic realm="x \\"y\\""')).toEqual({ scheme: 'basic', params: { realm: 'x "y"' } });
  });

  it('chooses linux/amd64 from an index and names the platforms when it is missing', () => {
    const index = (archs: string[]) =>
      parseManifest(
        Buffer.from(
          JSON.stringify({
            schemaVersion: 2,
            manifests: archs.map((a) => ({ digest, size: 1, platform: { os: 'linux', architecture: a } })),
          }),
        ),
      );
    const both = index(['arm64', 'amd64']);
    if (both.kind !== 'index') throw new Error('expected an index');
    expect(choosePlatform(both.index, 'x').platform?.architecture).toBe('amd64');
    const arm = index(['arm64', 's390x']);
    if (arm.kind !== 'index') throw new Error('expected an index');
    expect(() => choosePlatform(arm.index, 'x')).toThrow(
      expect.objectContaining({ code: 'image_platform_unsupported', hint: expect.stringContaining('linux/arm64, linux/s390x') }),
    );
  });

  it('refuses manifests with bad digests or schema 1', () => {
    expect(() => parseManifest(Buffer.from('{"schemaVersion":1,"fsLayers":[]}'))).toThrow(/schema 1/);
    expect(() => parseManifest(Buffer.from(JSON.stringify({ config: { digest: 'md5:x', size: 1 }, layers: [] })))).toThrow(/digest/);
    expect(() => parseManifest(Buffer.from('not json'))).toThrow(/not valid JSON/);
  });
});
