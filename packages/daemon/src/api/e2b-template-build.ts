// An e2b template build (the SDK's `Template()` steps as it sends them to
// POST /v2/templates/{id}/builds/{buildID}) translated into Capsulefile steps,
// so that e2b's builds run on Capsule's one builder (templates/template-build.ts)
// with its step cache, START/READY and warm snapshot. Pure: it reads no files
// (the uploaded COPY sources are looked up through `sourceKind`) and runs nothing.
import path from 'node:path';
import { Type, type Static } from '@sinclair/typebox';
import { CapsuleError } from '../errors.js';
import type { RegistryCredentials } from '../images/registry-client.js';
import {
  DEFAULT_READY_TIMEOUT_MS,
  ENV_NAME,
  MAX_BUILD_STEPS,
  USER_NAME,
  type BuildStep,
  type Capsulefile,
} from '../templates/capsulefile.js';

const Text = (maxLength: number) => Type.String({ maxLength });
/** The SDK also sends forceUpload, resolveSymlinks and gzip on a COPY: they shaped the upload, not the build. */
const E2bStep = Type.Object({
  type: Text(32),
  args: Type.Optional(Type.Array(Text(65_536), { maxItems: 1024 })),
  filesHash: Type.Optional(Text(128)),
  force: Type.Optional(Type.Union([Type.Boolean(), Type.Null()])),
});
export const E2bBuildStart = Type.Object({
  fromImage: Type.Optional(Text(1024)),
  fromTemplate: Type.Optional(Text(256)),
  fromImageRegistry: Type.Optional(
    Type.Object({ type: Text(32), username: Type.Optional(Text(1024)), password: Type.Optional(Text(65_536)) }),
  ),
  startCmd: Type.Optional(Text(65_536)),
  readyCmd: Type.Optional(Text(65_536)),
  steps: Type.Optional(Type.Array(E2bStep, { maxItems: MAX_BUILD_STEPS })),
  force: Type.Optional(Type.Boolean()),
});
export type E2bBuildStart = Static<typeof E2bBuildStart>;

/** E2B's base image; Capsule's own base template is its counterpart (and `Template().fromBaseImage()` needs no registry). */
const E2B_BASE_IMAGE = /^(docker\.io\/)?e2bdev\/base(:latest)?$/;

export interface TranslatedBuild {
  file: Capsulefile;
  credentials: RegistryCredentials | undefined;
  /** The first step (1-based) the cache may not answer: e2b's `force` (skipCache). */
  noCacheFrom: number | undefined;
  /** For each Capsulefile step (index 0 is step 1), the e2b step (1-based) it came from: how the SDK points at the line that failed. */
  origins: number[];
}

/** What an uploaded COPY source is, by its path under the uploads' folder (`<filesHash>/<src>`); undefined when absent. */
export type SourceKind = (relativePath: string) => 'file' | 'directory' | undefined;

function refused(message: string, hint?: string): CapsuleError {
  return new CapsuleError('invalid_argument', message, hint ? { hint } : {});
}

/** For `sh -c`: one word, whatever it holds. */
function shellQuote(text: string): string {
  return `'${text.replace(/'/g, `'\\''`)}'`;
}

const GLOB = /[*?[{]/;

export function translateE2bBuild(body: E2bBuildStart, sourceKind: SourceKind): TranslatedBuild {
  if ((body.fromImage ? 1 : 0) + (body.fromTemplate ? 1 : 0) !== 1)
    throw refused(
      'an e2b build needs exactly one of fromImage and fromTemplate',
      'start the template with fromTemplate(...) or fromImage(...)',
    );
  const from = body.fromTemplate ?? (E2B_BASE_IMAGE.test(body.fromImage!) ? 'base' : body.fromImage!);
  const steps: BuildStep[] = [];
  const origins: number[] = [];
  let noCacheFrom = body.force ? 1 : undefined;
  // What the steps so far set: relative paths resolve against the workdir, COPY's files belong to the user.
  let workdir: string | undefined;
  let user: string | undefined;

  const absolute = (target: string, what: string): string => {
    if (target.startsWith('/')) return path.posix.normalize(target);
    if (workdir === undefined)
      throw refused(
        `${what} "${target}" is relative, and no setWorkdir comes before it`,
        'give an absolute path, or call setWorkdir first',
      );
    return path.posix.resolve(workdir, target);
  };
  const userName = (name: string): string => {
    if (!USER_NAME.test(name)) throw refused(`"${name.slice(0, 80)}" is not a user name`);
    return name;
  };

  (body.steps ?? []).forEach((step, i) => {
    const args = step.args ?? [];
    const first = steps.length + 1;
    switch (step.type) {
      case 'RUN': {
        if (!args[0]) throw refused(`step ${i + 1}: runCmd needs a command`);
        steps.push({ kind: 'RUN', command: args[0], ...(args[1] ? { user: userName(args[1]) } : {}) });
        break;
      }
      case 'ENV': {
        if (args.length === 0 || args.length % 2 !== 0) throw refused(`step ${i + 1}: setEnvs sends names and values in pairs`);
        for (let a = 0; a < args.length; a += 2) {
          const name = args[a]!;
          if (!ENV_NAME.test(name)) throw refused(`step ${i + 1}: "${name.slice(0, 80)}" is not an environment variable name`);
          steps.push({ kind: 'ENV', name, value: args[a + 1]! });
        }
        break;
      }
      case 'WORKDIR':
        if (!args[0]) throw refused(`step ${i + 1}: setWorkdir needs a path`);
        workdir = absolute(args[0], 'the workdir');
        steps.push({ kind: 'WORKDIR', path: workdir });
        break;
      case 'USER':
        user = userName(args[0] ?? '');
        steps.push({ kind: 'USER', user });
        break;
      case 'COPY':
        steps.push(...copySteps(i + 1, args, step.filesHash, sourceKind, absolute, user));
        break;
      default:
        throw refused(
          `step ${i + 1}: the e2b build step ${JSON.stringify(step.type.slice(0, 32))} is not supported`,
          'Capsule builds RUN, COPY, ENV, WORKDIR and USER steps (runCmd, copy, setEnvs, setWorkdir, setUser and what is made of them)',
        );
    }
    if (step.force && noCacheFrom === undefined) noCacheFrom = first;
    while (origins.length < steps.length) origins.push(i + 1);
  });
  if (steps.length > MAX_BUILD_STEPS) throw refused(`the build makes more than ${MAX_BUILD_STEPS} steps`);

  const file: Capsulefile = { from, steps };
  if (body.startCmd) file.start = { cmd: ['/bin/sh', '-c', body.startCmd] };
  if (body.readyCmd) file.ready = { cmd: ['/bin/sh', '-c', body.readyCmd], timeoutMs: DEFAULT_READY_TIMEOUT_MS };
  return { file, credentials: registryCredentials(body), noCacheFrom, origins };
}

function registryCredentials(body: E2bBuildStart): RegistryCredentials | undefined {
  const registry = body.fromImageRegistry;
  if (!registry) return undefined;
  if (registry.type !== 'registry' || !registry.username || !registry.password)
    throw refused(
      `registry credentials of type "${registry.type.slice(0, 32)}" are not supported`,
      'pass a username and password to fromImage(image, {username, password}); AWS and GCP registry logins are not supported',
    );
  if (!body.fromImage) throw refused('registry credentials come with fromImage only');
  return { username: registry.username, password: registry.password };
}

/**
 * A COPY of uploaded files (args: src, dest, user, mode), as Capsule's COPY
 * from `<filesHash>/<src>` under the uploads' folder, then a RUN as root
 * giving the files their owner and mode.
 */
function copySteps(
  index: number,
  args: string[],
  filesHash: string | undefined,
  sourceKind: SourceKind,
  absolute: (target: string, what: string) => string,
  currentUser: string | undefined,
): BuildStep[] {
  const [src, dest, owner, mode] = args;
  if (!src || !dest) throw refused(`step ${index}: copy needs a source and a destination`);
  if (!filesHash)
    throw refused(`step ${index}: copy ${src} has no filesHash`, 'the e2b SDK sends one for each copy; upload its files first');
  const normalized = path.posix.normalize(src);
  if (normalized.startsWith('/') || normalized === '..' || normalized.startsWith('../'))
    throw refused(
      `step ${index}: copy source "${src.slice(0, 200)}" is outside the build's files`,
      'copy paths relative to the template file',
    );
  // A glob's files were uploaded at their paths: what lies under its fixed part is what it matched.
  const segments = normalized.split('/');
  const globAt = segments.findIndex((s) => GLOB.test(s));
  const within = (globAt === -1 ? segments : segments.slice(0, globAt)).filter((s) => s !== '.').join('/');
  const source = within === '' ? filesHash : `${filesHash}/${within}`;
  const kind = sourceKind(source);
  if (!kind)
    throw refused(
      `step ${index}: the files of copy ${src.slice(0, 200)} were not uploaded`,
      'upload them at the URL GET /templates/{id}/files/{hash} gives',
    );
  let destination = absolute(dest, 'the copy destination');
  if (kind === 'file' && globAt === -1 && dest.endsWith('/')) destination = path.posix.join(destination, path.posix.basename(normalized));
  const steps: BuildStep[] = [{ kind: 'COPY', source, destination }];

  const fix: string[] = [];
  if (owner && !USER_NAME.test(owner)) throw refused(`step ${index}: "${owner.slice(0, 80)}" is not a user name`);
  // Capsule's COPY writes as root; e2b's files belong to the copy's user, else to the build's current one.
  const user = owner || currentUser;
  if (user && user !== 'root') fix.push(`chown -R ${shellQuote(`${user}:`)} ${shellQuote(destination)}`);
  if (mode) {
    if (!/^0?[0-7]{3}$/.test(mode)) throw refused(`step ${index}: copy mode "${mode.slice(0, 16)}" is not an octal file mode`);
    fix.push(
      kind === 'file' && globAt === -1
        ? `chmod ${mode} ${shellQuote(destination)}`
        : `find ${shellQuote(destination)} -type f -exec chmod ${mode} {} +`,
    );
  }
  if (fix.length > 0) steps.push({ kind: 'RUN', command: fix.join(' && '), user: 'root' });
  return steps;
}
