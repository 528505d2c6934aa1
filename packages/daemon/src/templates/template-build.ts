// `capsule template build`: a Capsulefile's steps run inside a real sandbox
// booted from its FROM (a template, or an image pulled if need be); the
// sandbox's disk is then flattened into the new template's root filesystem.
// Each step's disk is cached by the hash of its inputs (build-step-cache.ts),
// so a rebuild reruns only from the first changed step, and an unchanged
// build boots nothing. A failing step ends the build with that step's output
// (the steps before it stay cached); the build sandbox never outlives the build.
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import type { BuildEvent } from '@capsule/protocol';
import { CapsuleError, errorMessage } from '../errors.js';
import { CacheKey } from '../guest/cache-key.js';
import { runCommand } from '../launcher.js';
import type { Logger } from '../log.js';
import type { Store, TemplateRecord } from '../store/store.js';
import { deleteTemplate, insertTemplate } from '../store/templates.js';
import { BuildStepCache } from './build-step-cache.js';
import type { BuildStep, Capsulefile } from './capsulefile.js';
import { loadImage } from '../images/image-records.js';
import { getTemplateImage } from '../store/templates.js';
import { serviceOf, type TemplateImageDefaults } from './template-records.js';
import type { SandboxRunner } from './templates.js';

/** Output of a failing step quoted in its error. */
const ERROR_OUTPUT_BYTES = 4096;
const FORMAT = 'build-v2';
/** Raw bytes per COPY exec: their base64 stays well under the agent's 4 MiB message cap. */
const COPY_CHUNK_BYTES = 2 * 1024 * 1024;

export interface BuildBase {
  /** The template the build sandbox boots from (maybe a temporary one for an image). */
  template: TemplateRecord;
  defaults: TemplateImageDefaults | undefined;
  imageDigest: string | null;
  /** Removes what was made only for this build. */
  release(): Promise<void>;
}

/** What a template's VM runs before its warm snapshot (see template-service.ts). */
export interface ServiceCommands {
  start: string[];
  ready?: { cmd: string[]; timeoutMs: number } | undefined;
}

export interface BuildResult {
  rootfs: string;
  defaults: TemplateImageDefaults;
  from: string;
  imageDigest: string | null;
  base: TemplateRecord;
  service: ServiceCommands | undefined;
}

/** What commands of a build run with; ENV, USER and WORKDIR change it. */
interface BuildState {
  env: Record<string, string>;
  user: string | undefined;
  cwd: string | undefined;
}

interface PlannedStep {
  step: BuildStep;
  /** 1-based, as the build log numbers steps. */
  index: number;
  key: string;
  /** The state the step runs in. */
  state: BuildState;
}

/** Steps that write to the disk; ENV and USER only change the state. */
function writesDisk(step: BuildStep): boolean {
  return step.kind === 'RUN' || step.kind === 'COPY' || step.kind === 'WORKDIR';
}

export interface BuildRequest {
  name: string;
  /** A parsed Capsulefile, or the steps another front door (the e2b API) translated into one. */
  file: Capsulefile;
  contextDir: string | undefined;
  /** Steps from this one (1-based) on are run again, whatever the cache holds (e2b's skipCache and force). */
  noCacheFrom?: number | undefined;
}

/** The files a COPY names, resolved inside the build folder (never outside it), with their contents' place in the key. */
function copySources(contextDir: string | undefined, source: string): { file: string; relative: string }[] {
  if (!contextDir)
    throw new CapsuleError('invalid_argument', 'COPY needs a build folder', {
      hint: 'pass the folder with the Capsulefile (the CLI sends its own folder)',
    });
  const root = path.resolve(contextDir);
  const start = path.resolve(root, source);
  if (start !== root && !start.startsWith(`${root}${path.sep}`))
    throw new CapsuleError('invalid_argument', `COPY ${source} points outside the build folder`);
  let stat: fs.Stats;
  try {
    stat = fs.lstatSync(start);
  } catch {
    throw new CapsuleError('invalid_argument', `COPY ${source}: no such file in ${root}`);
  }
  if (stat.isFile()) return [{ file: start, relative: '' }];
  if (!stat.isDirectory()) throw new CapsuleError('invalid_argument', `COPY ${source} is neither a file nor a folder`);
  const out: { file: string; relative: string }[] = [];
  const walk = (dir: string) => {
    for (const entry of fs.readdirSync(dir, { withFileTypes: true }).sort((a, b) => a.name.localeCompare(b.name))) {
      const full = path.join(dir, entry.name);
      if (entry.isDirectory()) walk(full);
      else if (entry.isFile()) out.push({ file: full, relative: path.relative(start, full) });
    }
  };
  walk(start);
  return out;
}

export class TemplateBuilder {
  private readonly steps: BuildStepCache;

  constructor(
    private readonly store: Store,
    private readonly sandboxes: SandboxRunner,
    private readonly rootfsDir: string,
    stepsDir: string,
    /** The image store's staging folder (same filesystem as `rootfsDir`), swept of dead daemons' folders at start. */
    private readonly tmpDir: string,
    private readonly log: Logger,
  ) {
    this.steps = new BuildStepCache(stepsDir);
  }

  /**
   * Runs the build and returns the root filesystem, defaults and service of
   * the new template; `resolveBase` resolves the FROM. The caller records the template.
   */
  async build(
    request: BuildRequest,
    resolveBase: (from: string, emit: BuildEmit) => Promise<BuildBase>,
    emit: BuildEmit,
    signal: AbortSignal,
  ): Promise<BuildResult> {
    const file = request.file;
    const copies = new Map<BuildStep, { file: string; relative: string }[]>();
    for (const step of file.steps) if (step.kind === 'COPY') copies.set(step, copySources(request.contextDir, step.source));
    const base = await resolveBase(file.from, emit);
    try {
      // Checked before any step runs: a bad START or READY must not cost a build.
      const service = await this.resolveService(file, base);
      const plan = this.plan(base, file.steps, copies, request.noCacheFrom);
      const finalKey = plan.at(-1)?.key ?? this.baseKey(base);
      const target = path.join(this.rootfsDir, `build-${finalKey}.ext4`);
      const defaults = this.finalDefaults(base.defaults, file.steps);
      if (fs.existsSync(target)) {
        for (const planned of plan) emit({ type: 'step', index: planned.index, instruction: describeStep(planned.step), cached: true });
        emit({ type: 'log', stream: 'stdout', text: `the steps are unchanged since an earlier build: using ${path.basename(target)}\n` });
      } else {
        await this.runSteps(base, plan, copies, target, emit, signal);
      }
      return { rootfs: target, defaults, from: file.from, imageDigest: base.imageDigest, base: base.template, service };
    } finally {
      await base.release();
    }
  }

  /**
   * START and READY of the new template: the Capsulefile's, else the FROM
   * template's. A bare START is the FROM image's Entrypoint + Cmd.
   */
  private async resolveService(file: Capsulefile, base: BuildBase): Promise<ServiceCommands | undefined> {
    const inherited = serviceOf(await getTemplateImage(this.store, base.template.name));
    let start: string[] | undefined;
    if (file.start && 'cmd' in file.start) start = file.start.cmd;
    else if (file.start) start = await this.imageStartCommand(base.imageDigest, file.from);
    else start = inherited?.start;
    // A new START drops the READY that checked the old one.
    const ready = file.ready ?? (file.start ? undefined : inherited?.ready);
    if (ready && !start)
      throw new CapsuleError('invalid_argument', 'READY needs a START command', {
        hint: 'add START cmd to the Capsulefile: READY checks the service START runs',
      });
    return start ? { start, ...(ready ? { ready } : {}) } : undefined;
  }

  /** The image config's Entrypoint followed by its Cmd, the way docker runs them. */
  async imageStartCommand(imageDigest: string | null, from: string): Promise<string[]> {
    const image = imageDigest ? await loadImage(this.store, imageDigest) : undefined;
    const argv = [...(image?.config.entrypoint ?? []), ...(image?.config.cmd ?? [])];
    if (argv.length === 0 || argv[0] === '') {
      throw new CapsuleError(
        'invalid_argument',
        `a bare START runs the image's Entrypoint and Cmd, but ${from} ${image ? 'has neither' : 'is not an image'}`,
        {
          hint: 'give START a command, e.g. START ["/srv/app", "--port", "8080"]',
        },
      );
    }
    return argv;
  }

  private baseKey(base: BuildBase): string {
    return new CacheKey()
      .add('format', FORMAT)
      .add('base', `${base.template.rootfs}:${fs.statSync(base.template.rootfs).size}`)
      .add('defaults', JSON.stringify(base.defaults ?? null))
      .digest();
  }

  /** Each step's key (chained from the one before it) and the state it runs in. */
  private plan(
    base: BuildBase,
    steps: BuildStep[],
    copies: Map<BuildStep, { file: string; relative: string }[]>,
    noCacheFrom = Infinity,
  ): PlannedStep[] {
    let parent = this.baseKey(base);
    // Keys are chained: a key no build made before misses the cache for its step and every later one.
    const uncached = randomBytes(16).toString('hex');
    // Steps run as root unless the FROM says otherwise (as docker builds do), not as the agent's default user.
    const state: BuildState = { env: { ...base.defaults?.env }, user: base.defaults?.user ?? 'root', cwd: base.defaults?.workdir };
    return steps.map((step, i) => {
      const key = new CacheKey().add('parent', parent).add('step', JSON.stringify(step)).add('state', JSON.stringify(state));
      for (const f of copies.get(step) ?? []) key.add(`copy:${f.relative}`, fs.readFileSync(f.file));
      if (i + 1 >= noCacheFrom) key.add('uncached', uncached);
      parent = key.digest();
      const planned: PlannedStep = { step, index: i + 1, key: parent, state: { ...state, env: { ...state.env } } };
      if (step.kind === 'ENV') state.env[step.name] = step.value;
      if (step.kind === 'USER') state.user = step.user;
      if (step.kind === 'WORKDIR') state.cwd = step.path;
      return planned;
    });
  }

  private finalDefaults(base: TemplateImageDefaults | undefined, steps: BuildStep[]): TemplateImageDefaults {
    const defaults: TemplateImageDefaults = {
      imageDigest: base?.imageDigest ?? '',
      env: { ...base?.env },
      user: base?.user ?? 'root',
      workdir: base?.workdir,
    };
    for (const step of steps) {
      if (step.kind === 'ENV') defaults.env[step.name] = step.value;
      if (step.kind === 'USER') defaults.user = step.user;
      if (step.kind === 'WORKDIR') defaults.workdir = step.path;
    }
    return defaults;
  }

  /**
   * Runs the steps after the last cached one in a build sandbox booted from
   * that step's disk, freezing the disk after each step that writes to it;
   * records those steps in the cache (also when a later one fails) and
   * flattens the last disk into `target`.
   */
  private async runSteps(
    base: BuildBase,
    plan: PlannedStep[],
    copies: Map<BuildStep, { file: string; relative: string }[]>,
    target: string,
    emit: BuildEmit,
    signal: AbortSignal,
  ): Promise<void> {
    let cached = 0;
    let startDisk: string | undefined;
    const lease = this.steps.lease();
    try {
      for (let i = plan.length - 1; i >= 0; i--) {
        const entry = await this.steps.lookup(plan[i]!.key);
        if (entry) {
          lease.add(entry.chain);
          cached = i + 1;
          startDisk = entry.disk;
          break;
        }
      }
      await this.runFrom(base, plan, cached, startDisk, copies, target, emit, signal, lease);
    } finally {
      lease.release();
    }
  }

  private async runFrom(
    base: BuildBase,
    plan: PlannedStep[],
    cached: number,
    startDisk: string | undefined,
    copies: Map<BuildStep, { file: string; relative: string }[]>,
    target: string,
    emit: BuildEmit,
    signal: AbortSignal,
    lease: { add(files: readonly string[]): void },
  ): Promise<void> {
    for (const planned of plan.slice(0, cached))
      emit({ type: 'step', index: planned.index, instruction: describeStep(planned.step), cached: true });
    const remaining = plan.slice(cached);
    const done: { key: string; delta?: string }[] = [];
    const overlays: string[] = [];
    let failure: unknown;
    if (remaining.some((p) => writesDisk(p.step))) {
      const from = startDisk ? await this.templateOfDisk(base.template, startDisk) : undefined;
      try {
        emit({
          type: 'step',
          index: 0,
          instruction: `booting a build sandbox from ${from ? `the disk of step ${cached}` : base.template.name}`,
        });
        const sandbox = await this.sandboxes.create({
          template: (from ?? base.template).name,
          timeoutMs: 0,
          metadata: { 'capsule.build': 'true' },
        });
        try {
          let active = path.join(this.sandboxes.stateDir(sandbox.id), 'overlay.qcow2');
          for (const planned of remaining) {
            await this.runStep(sandbox.id, planned, copies, emit, signal);
            if (!writesDisk(planned.step)) {
              done.push({ key: planned.key });
              continue;
            }
            // Flushed and frozen: the overlay holds exactly this step's writes (the first one also the boot's).
            await this.exec(sandbox.id, ['sync'], { ...planned.state, user: 'root' }, planned.index, undefined, emit, signal);
            // In the sandbox's folder: the only one its (jailed) QEMU sees besides its runtime folder. It
            // goes with the sandbox, so each frozen overlay is kept in the cache's folder as well.
            const next = path.join(this.sandboxes.stateDir(sandbox.id), `.step-${planned.index}.qcow2`);
            await this.sandboxes.snapshotRootDisk(sandbox.id, next);
            const frozen = this.steps.newOverlayPath();
            overlays.push(frozen);
            linkOrCopy(active, frozen);
            done.push({ key: planned.key, delta: frozen });
            active = next;
          }
        } catch (err) {
          failure = err;
        } finally {
          await this.sandboxes
            .remove(sandbox.id)
            .catch((err: unknown) => this.log.error({ sandbox: sandbox.id, err: errorMessage(err) }, 'could not remove a build sandbox'));
        }
      } finally {
        if (from) await deleteTemplate(this.store, from.name);
      }
    } else {
      for (const planned of remaining) {
        emit({ type: 'step', index: planned.index, instruction: describeStep(planned.step) });
        done.push({ key: planned.key });
      }
    }
    try {
      // QEMU is gone: the frozen overlays can be renamed and their headers pointed at each other.
      const disk = await this.steps.commit(startDisk, done, (file) => lease.add([file]));
      if (failure !== undefined) throw failure;
      // Flattened in a folder named after this daemon under the image store's tmp, which the next
      // daemon sweeps at start when this one was killed mid-way (ImageService.start): a temp
      // beside the target would be left for good, and it is a root filesystem's size.
      fs.mkdirSync(this.tmpDir, { recursive: true });
      const staging = fs.mkdtempSync(path.join(this.tmpDir, `rootfs-${process.pid}-`));
      try {
        const temp = path.join(staging, path.basename(target));
        await runCommand('qemu-img', ['convert', '-f', disk ? 'qcow2' : 'raw', '-O', 'raw', disk ?? base.template.rootfs, temp]);
        fs.mkdirSync(path.dirname(target), { recursive: true });
        fs.renameSync(temp, target);
      } finally {
        fs.rmSync(staging, { recursive: true, force: true });
      }
    } finally {
      for (const overlay of overlays) fs.rmSync(overlay, { force: true });
    }
  }

  /** A template that exists only while a build boots from a cached step's disk. */
  private async templateOfDisk(base: TemplateRecord, disk: string): Promise<TemplateRecord> {
    const record: TemplateRecord = {
      ...base,
      name: `${BUILD_TEMPLATE_PREFIXES[1]}${randomBytes(6).toString('hex')}`,
      rootfs: disk,
      created_at: new Date().toISOString(),
    };
    await insertTemplate(this.store, record);
    return record;
  }

  private async runStep(
    id: string,
    planned: PlannedStep,
    copies: Map<BuildStep, { file: string; relative: string }[]>,
    emit: BuildEmit,
    signal: AbortSignal,
  ): Promise<void> {
    const { step, index, state } = planned;
    if (signal.aborted) throw new CapsuleError('invalid_argument', 'the build was cancelled');
    emit({ type: 'step', index, instruction: describeStep(step) });
    switch (step.kind) {
      case 'ENV':
      case 'USER':
        break;
      case 'WORKDIR':
        await this.exec(id, ['mkdir', '-p', step.path], { ...state, user: 'root' }, index, step, emit, signal);
        break;
      case 'RUN':
        await this.exec(id, ['/bin/sh', '-c', step.command], { ...state, user: step.user ?? state.user }, index, step, emit, signal);
        break;
      case 'COPY':
        for (const f of copies.get(step) ?? []) {
          const destination =
            f.relative === '' ? step.destination : path.posix.join(step.destination, f.relative.split(path.sep).join('/'));
          // In pieces: one message to the agent is capped (4 MiB), a file is not.
          const bytes = fs.readFileSync(f.file);
          for (let offset = 0; offset === 0 || offset < bytes.length; offset += COPY_CHUNK_BYTES) {
            const write = offset === 0 ? 'mkdir -p "$(dirname "$1")" && base64 -d > "$1"' : 'base64 -d >> "$1"';
            await this.exec(
              id,
              ['/bin/sh', '-c', write, 'sh', destination],
              { ...state, user: 'root', stdin: bytes.subarray(offset, offset + COPY_CHUNK_BYTES).toString('base64') },
              index,
              step,
              emit,
              signal,
            );
          }
        }
        break;
    }
  }

  private async exec(
    id: string,
    cmd: string[],
    state: { env: Record<string, string>; user?: string | undefined; cwd?: string | undefined; stdin?: string },
    index: number,
    step: BuildStep | undefined,
    emit: BuildEmit,
    signal: AbortSignal,
  ): Promise<void> {
    const events = await this.sandboxes.execStream(
      id,
      {
        cmd,
        env: state.env,
        ...(state.user ? { user: state.user } : {}),
        ...(state.cwd ? { cwd: state.cwd } : {}),
        ...(state.stdin !== undefined ? { stdin: state.stdin } : {}),
      },
      signal,
    );
    let tail = '';
    for await (const event of events) {
      if (event.type === 'stdout' || event.type === 'stderr') {
        const text = Buffer.from(event.data, 'base64').toString('utf8');
        tail = (tail + text).slice(-ERROR_OUTPUT_BYTES);
        await emit({ type: 'log', stream: event.type, text });
      } else if (event.type === 'exit') {
        if (event.exitCode !== 0 || event.signal) {
          const what = step ? describeStep(step) : cmd.join(' ');
          throw new CapsuleError(
            'build_step_failed',
            `step ${index} (${what}) ${event.signal ? `was killed by ${event.signal}` : `exited with code ${event.exitCode}`}${tail ? `:\n${tail.trimEnd()}` : ''}`,
            {
              hint: 'fix the step in the Capsulefile; the steps before it are cached, so the next build starts from there',
            },
          );
        }
      } else if (event.type === 'error') {
        throw new CapsuleError('build_step_failed', `step ${index} could not run: ${event.message}`, {
          ...(event.hint ? { hint: event.hint } : {}),
        });
      }
    }
  }
}

/**
 * Hands a build event to the client. It may return a promise that settles
 * once the client has taken what it was sent (or is gone): the build waits
 * for it after each piece of a step's output, so a client that stops reading
 * holds the step's command back (exec's flow control) instead of growing
 * the daemon.
 */
export type BuildEmit = (event: BuildEvent) => Promise<void> | void;

export function describeStep(step: BuildStep): string {
  switch (step.kind) {
    case 'RUN':
      return step.user ? `RUN (as ${step.user}) ${step.command}` : `RUN ${step.command}`;
    case 'COPY':
      return `COPY ${step.source} ${step.destination}`;
    case 'ENV':
      return `ENV ${step.name}=${step.value}`;
    case 'WORKDIR':
      return `WORKDIR ${step.path}`;
    case 'USER':
      return `USER ${step.user}`;
  }
}

/** Templates that exist only while a build runs are named with these prefixes, which users' templates may not take. */
export const BUILD_TEMPLATE_PREFIXES = ['build-base-', 'build-step-'] as const;

/** A name for a template that exists only while a build boots from an image. */
export function temporaryTemplateName(): string {
  return `${BUILD_TEMPLATE_PREFIXES[0]}${randomBytes(6).toString('hex')}`;
}

/** Refuses a template name that only builds may use. */
export function checkTemplateName(name: string): void {
  const prefix = BUILD_TEMPLATE_PREFIXES.find((p) => name.startsWith(p));
  if (prefix)
    throw new CapsuleError('invalid_argument', `template names starting with "${prefix}" are kept for template builds`, {
      hint: 'pick another name',
    });
}

/** A second name for a frozen file (it no longer changes), or a copy where the two folders lie on different file systems. */
function linkOrCopy(from: string, to: string): void {
  try {
    fs.linkSync(from, to);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EXDEV') throw err;
    fs.copyFileSync(from, to);
  }
}
