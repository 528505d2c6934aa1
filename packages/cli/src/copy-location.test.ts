import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { linkTargetFor, localPathFor, parseCopyLocation } from './copy-location.js';

describe('parseCopyLocation', () => {
  it('reads ID:path as a sandbox side, with any path after the first colon', () => {
    expect(parseCopyLocation('sb_abc:/srv/app')).toEqual({ kind: 'sandbox', sandbox: 'sb_abc', path: '/srv/app' });
    expect(parseCopyLocation('web:notes.txt')).toEqual({ kind: 'sandbox', sandbox: 'web', path: 'notes.txt' });
    expect(parseCopyLocation('web:/a:b')).toEqual({ kind: 'sandbox', sandbox: 'web', path: '/a:b' });
    expect(parseCopyLocation('web:')).toEqual({ kind: 'sandbox', sandbox: 'web', path: '' });
  });

  it('keeps paths that start with /, . or ~, or have no usable prefix, local', () => {
    for (const local of ['/tmp/a:b', './x:y', '../x:y', '~/f:g', 'plain.txt', 'dir/', ':nothing', 'a b:c']) {
      expect(parseCopyLocation(local)).toEqual({ kind: 'local', path: local });
    }
  });
});

describe('localPathFor', () => {
  it('places an entry under the local root by its path relative to the remote root', () => {
    expect(localPathFor('/srv/app', '/srv/app/bin/run.sh', '/home/me/app', path.join)).toBe('/home/me/app/bin/run.sh');
    expect(localPathFor('/srv/app/', '/srv/app/x', 'out', path.join)).toBe('out/x');
  });

  it('refuses what a lying guest could send to escape the destination', () => {
    for (const entry of [
      '/srv/app',
      '/srv/other/x',
      '/srv/app/../../etc/passwd',
      '/srv/app/a/./b',
      '/srv/app//x',
      '/srv/application/x',
      '/srv/app/x\0y',
    ]) {
      expect(localPathFor('/srv/app', entry, '/home/me/app', path.join)).toBeUndefined();
    }
  });
});

describe('linkTargetFor', () => {
  it('makes a link into the copied tree relative again, and leaves others as the sandbox resolved them', () => {
    expect(linkTargetFor('/srv/app/readme.txt', '/srv/app/link', '/srv/app')).toBe('readme.txt');
    expect(linkTargetFor('/srv/app/lib/x.so', '/srv/app/bin/x', '/srv/app')).toBe('../lib/x.so');
    expect(linkTargetFor('/srv/app', '/srv/app/self', '/srv/app')).toBe('.');
    expect(linkTargetFor('/etc/hosts', '/srv/app/hosts', '/srv/app')).toBe('/etc/hosts');
    expect(linkTargetFor('/srv/application', '/srv/app/l', '/srv/app')).toBe('/srv/application');
  });
});
