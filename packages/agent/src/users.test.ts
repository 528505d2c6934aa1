import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Code, ConnectError } from '@connectrpc/connect';
import { afterAll, describe, expect, it } from 'vitest';
import { lookupUser, parsePasswd, resolveRequestUser, usernameFromAuthorization } from './users.js';

const dir = mkdtempSync(join(tmpdir(), 'capsule-agent-users-'));
const passwd = join(dir, 'passwd');
writeFileSync(
  passwd,
  ['root:x:0:0:root:/root:/bin/bash', '# a comment', 'user:x:1000:1001::/home/user:/bin/sh', 'broken-line', 'nohome:x:7:7::::', ''].join(
    '\n',
  ),
);
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const basic = (value: string) => `Basic ${Buffer.from(value).toString('base64')}`;

describe('users', () => {
  it('parses passwd entries and skips lines that are not entries', () => {
    const users = parsePasswd(`root:x:0:0:root:/root:/bin/bash\nbad\nuser:x:1000:1001::/home/user:/bin/sh\n`);
    expect(users).toEqual([
      { name: 'root', uid: 0, gid: 0, home: '/root', shell: '/bin/bash' },
      { name: 'user', uid: 1000, gid: 1001, home: '/home/user', shell: '/bin/sh' },
    ]);
    expect(lookupUser('nohome', passwd)).toMatchObject({ uid: 7, home: '/' });
    expect(lookupUser('missing', passwd)).toBeUndefined();
  });

  it('sees users added to passwd after an earlier lookup', () => {
    const file = join(dir, 'passwd-growing');
    writeFileSync(file, 'root:x:0:0:root:/root:/bin/bash\n');
    expect(lookupUser('late', file)).toBeUndefined();
    writeFileSync(file, 'root:x:0:0:root:/root:/bin/bash\nlate:x:1500:1500::/home/late:/bin/sh\n');
    expect(lookupUser('late', file)).toMatchObject({ uid: 1500 });
    // Same size, new contents: still noticed.
    writeFileSync(file, 'root:x:0:0:root:/root:/bin/bash\nlate:x:1600:1600::/home/late:/bin/sh\n');
    expect(lookupUser('late', file)).toMatchObject({ uid: 1600 });
  });

  it('takes the user from an envd-style Basic header', () => {
    expect(usernameFromAuthorization(basic('user:'))).toBe('user');
    expect(usernameFromAuthorization(basic('user:secret'))).toBe('user');
    expect(usernameFromAuthorization(`basic ${Buffer.from('root:').toString('base64')}`)).toBe('root');
    expect(usernameFromAuthorization(basic(':'))).toBeUndefined();
    expect(usernameFromAuthorization('Bearer abc')).toBeUndefined();
    expect(usernameFromAuthorization(null)).toBeUndefined();
  });

  it('falls back to the default user and refuses unknown users as Unauthenticated', () => {
    expect(resolveRequestUser(null, 'root', passwd).uid).toBe(0);
    expect(resolveRequestUser(basic('user:'), 'root', passwd)).toMatchObject({ uid: 1000, gid: 1001, home: '/home/user' });
    for (const [header, fallback] of [
      [basic('ghost:'), 'root'],
      [null, 'ghost'],
    ] as const) {
      const error = (() => {
        try {
          resolveRequestUser(header, fallback, passwd);
        } catch (caught) {
          return caught;
        }
        return undefined;
      })();
      expect(error).toBeInstanceOf(ConnectError);
      expect((error as ConnectError).code).toBe(Code.Unauthenticated);
    }
  });
});
