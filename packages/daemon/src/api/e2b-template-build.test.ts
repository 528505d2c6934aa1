import { describe, expect, it } from 'vitest';
import { Template, waitForFile, waitForPort, waitForProcess, waitForTimeout, waitForURL, type TemplateClass } from 'e2b';
import { CapsuleError } from '../errors.js';
import { translateE2bBuild, type E2bBuildStart, type SourceKind } from './e2b-template-build.js';

const HASH = 'a'.repeat(64);
/** What the uploads' folder holds in these tests: under HASH, a file a.txt and a folder app/. */
const uploaded: SourceKind = (relative) =>
  ({ [`${HASH}/a.txt`]: 'file', [`${HASH}/app`]: 'directory', [`${HASH}/src`]: 'directory', [HASH]: 'directory' })[relative] as
    | 'file'
    | 'directory'
    | undefined;

/** The body the pinned SDK sends to start a build, every COPY given HASH as its files hash. */
async function bodyOf(template: TemplateClass): Promise<E2bBuildStart> {
  const body = JSON.parse(await Template.toJSON(template, false)) as E2bBuildStart;
  for (const step of body.steps ?? []) if (step.type === 'COPY') step.filesHash = HASH;
  return body;
}

async function translate(template: TemplateClass) {
  return translateE2bBuild(await bodyOf(template), uploaded);
}

function refusal(body: E2bBuildStart): CapsuleError {
  try {
    translateE2bBuild(body, uploaded);
  } catch (err) {
    expect(err).toBeInstanceOf(CapsuleError);
    expect((err as CapsuleError).code).toBe('invalid_argument');
    return err as CapsuleError;
  }
  throw new Error('the build was not refused');
}

describe('translateE2bBuild: the SDK’s build steps as Capsulefile steps', () => {
  it('maps runCmd, setEnvs, setWorkdir, setUser and the commands the SDK makes of makeDir, remove, rename and makeSymlink', async () => {
    const built = await translate(
      Template()
        .fromTemplate('base')
        .runCmd(['apt-get update', 'true'])
        .runCmd('whoami', { user: 'user' })
        .setEnvs({ A: '1', B: 'two words' })
        .setWorkdir('/srv')
        .setWorkdir('app')
        .setUser('user')
        .makeDir('/srv/data', { mode: 0o700 })
        .remove('/tmp/x', { recursive: true, force: true })
        .rename('/a b', '/c')
        .makeSymlink('/srv/app', '/app'),
    );
    expect(built.file).toEqual({
      from: 'base',
      steps: [
        { kind: 'RUN', command: 'apt-get update && true' },
        { kind: 'RUN', command: 'whoami', user: 'user' },
        { kind: 'ENV', name: 'A', value: '1' },
        { kind: 'ENV', name: 'B', value: 'two words' },
        { kind: 'WORKDIR', path: '/srv' },
        { kind: 'WORKDIR', path: '/srv/app' },
        { kind: 'USER', user: 'user' },
        { kind: 'RUN', command: 'mkdir -p -m 0700 /srv/data' },
        { kind: 'RUN', command: 'rm -r -f /tmp/x' },
        { kind: 'RUN', command: "mv '/a b' /c" },
        { kind: 'RUN', command: 'ln -s /srv/app /app' },
      ],
    });
    // setEnvs is one e2b step and two Capsule steps: a failure points at the SDK's line.
    expect(built.origins).toEqual([1, 2, 3, 3, 4, 5, 6, 7, 8, 9, 10]);
    expect(built.noCacheFrom).toBeUndefined();
    expect(built.credentials).toBeUndefined();
  });

  it('maps setStartCmd with each ready check onto START and READY', async () => {
    const ready = [
      waitForPort(8080),
      waitForURL('http://localhost:3000/health'),
      waitForProcess('srv'),
      waitForFile('/tmp/up'),
      waitForTimeout(5000),
    ];
    for (const check of ready) {
      const { file } = await translate(Template().fromTemplate('base').setStartCmd('python3 -m http.server 8080', check));
      expect(file.start).toEqual({ cmd: ['/bin/sh', '-c', 'python3 -m http.server 8080'] });
      expect(file.ready).toEqual({ cmd: ['/bin/sh', '-c', check.getCmd()], timeoutMs: 60_000 });
    }
    expect((await translate(Template().fromTemplate('base'))).file).toEqual({ from: 'base', steps: [] });
  });

  it('copies an uploaded file or folder from its files hash, to a folder when the destination ends in /, owned and moded as asked', async () => {
    const { file, origins } = await translate(
      Template()
        .fromTemplate('base')
        .setWorkdir('/home/user')
        .copy('a.txt', '/etc/app/')
        .copy('a.txt', 'renamed.txt', { user: 'user', mode: 0o600 })
        .copyItems([{ src: 'app', dest: '/srv/app', mode: 0o644 }])
        .copy('src/*.js', '/srv/js'),
    );
    expect(file.steps).toEqual([
      { kind: 'WORKDIR', path: '/home/user' },
      { kind: 'COPY', source: `${HASH}/a.txt`, destination: '/etc/app/a.txt' },
      { kind: 'COPY', source: `${HASH}/a.txt`, destination: '/home/user/renamed.txt' },
      { kind: 'RUN', command: "chown -R 'user:' '/home/user/renamed.txt' && chmod 0600 '/home/user/renamed.txt'", user: 'root' },
      { kind: 'COPY', source: `${HASH}/app`, destination: '/srv/app' },
      { kind: 'RUN', command: "find '/srv/app' -type f -exec chmod 0644 {} +", user: 'root' },
      // A glob's files were uploaded at their paths; what is under its fixed part is what it matched.
      { kind: 'COPY', source: `${HASH}/src`, destination: '/srv/js' },
    ]);
    expect(origins).toEqual([1, 2, 3, 3, 4, 4, 5]);
  });

  it('gives copied files to the build’s current user', async () => {
    const { file } = await translate(Template().fromTemplate('base').setUser('user').copy('a.txt', '/home/user/a.txt'));
    expect(file.steps.at(-1)).toEqual({ kind: 'RUN', command: "chown -R 'user:' '/home/user/a.txt'", user: 'root' });
  });

  it('runs again from the first step after skipCache, or from step 1 with force', async () => {
    const template = Template().fromTemplate('base').setEnvs({ A: '1', B: '2' }).skipCache().runCmd('date').runCmd('true');
    expect((await translate(template)).noCacheFrom).toBe(3);
    expect(translateE2bBuild({ ...(await bodyOf(template)), force: true }, uploaded).noCacheFrom).toBe(1);
  });

  it('builds fromImage with registry credentials, and e2b’s base image as Capsule’s base template', async () => {
    const fromRegistry = await translate(Template().fromImage('127.0.0.1:5000/app:v1', { username: 'u', password: 'p' }).runCmd('true'));
    expect(fromRegistry.file.from).toBe('127.0.0.1:5000/app:v1');
    expect(fromRegistry.credentials).toEqual({ username: 'u', password: 'p' });
    expect((await translate(Template().fromBaseImage())).file.from).toBe('base');
  });

  it('takes fromDockerfile as the SDK parses it', async () => {
    const { file } = await translate(
      Template().fromDockerfile(
        'FROM e2bdev/base\nENV A=1\nWORKDIR /srv\nRUN echo hi\nCOPY a.txt /srv/\nCMD ["python3", "-m", "http.server"]',
      ),
    );
    expect(file.from).toBe('base');
    expect(file.steps).toContainEqual({ kind: 'COPY', source: `${HASH}/a.txt`, destination: '/srv/a.txt' });
    expect(file.start).toEqual({ cmd: ['/bin/sh', '-c', 'python3 -m http.server'] });
  });

  it('refuses what it cannot build with invalid_argument and a message naming the step', async () => {
    const base = { fromTemplate: 'base' };
    expect(refusal({}).message).toMatch(/exactly one of fromImage and fromTemplate/);
    expect(refusal({ fromTemplate: 'base', fromImage: 'alpine' }).message).toMatch(/exactly one/);
    expect(refusal({ ...base, steps: [{ type: 'ADD', args: ['x', '/y'] }] }).message).toMatch(
      /step 1: the e2b build step "ADD" is not supported/,
    );
    expect(refusal({ ...base, steps: [{ type: 'RUN', args: [] }] }).message).toMatch(/step 1: runCmd needs a command/);
    expect(refusal({ ...base, steps: [{ type: 'RUN', args: ['true', 'bad user!'] }] }).message).toMatch(/is not a user name/);
    expect(refusal({ ...base, steps: [{ type: 'ENV', args: ['A'] }] }).message).toMatch(/in pairs/);
    expect(refusal({ ...base, steps: [{ type: 'ENV', args: ['1A', 'x'] }] }).message).toMatch(/not an environment variable name/);
    expect(refusal({ ...base, steps: [{ type: 'WORKDIR', args: ['rel'] }] }).message).toMatch(/relative, and no setWorkdir/);
    expect(refusal({ ...base, steps: [{ type: 'COPY', args: ['a.txt', '/x'] }] }).message).toMatch(/no filesHash/);
    const copy = (args: string[], filesHash = HASH) => refusal({ ...base, steps: [{ type: 'COPY', args, filesHash }] }).message;
    expect(copy(['missing.txt', '/x'])).toMatch(/were not uploaded/);
    expect(copy(['a.txt', '/x'], 'b'.repeat(64))).toMatch(/were not uploaded/);
    expect(copy(['../etc/passwd', '/x'])).toMatch(/outside the build's files/);
    expect(copy(['app/../../x', '/x'])).toMatch(/outside the build's files/);
    expect(copy(['/etc/passwd', '/x'])).toMatch(/outside the build's files/);
    expect(copy(['a.txt', 'rel'])).toMatch(/relative, and no setWorkdir/);
    expect(copy(['a.txt', '/x', '', '4755'])).toMatch(/not an octal file mode/);
    expect(copy(['a.txt', '/x', 'x;rm -rf /'])).toMatch(/not a user name/);
    const aws = { fromImage: 'x', fromImageRegistry: { type: 'aws' } };
    expect(refusal(aws).message).toMatch(/credentials of type "aws" are not supported/);
    expect(refusal({ ...base, steps: Array.from({ length: 129 }, () => ({ type: 'ENV', args: ['A', '1', 'B', '2'] })) }).message).toMatch(
      /more than 256 steps/,
    );
  });
});
