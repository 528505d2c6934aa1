// `capsule template build`: a Capsulefile's steps run inside a real sandbox
// booted from its FROM (a template, or an image pulled if need be); the
// sandbox's disk is then flattened into the new template's root filesystem.
// The result is cached by the hash of every input (base, steps, copied files),
// so an unchanged build is a cache hit. A failing step ends the build with
// that step's output; the build sandbox never outlives the build.
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import type { BuildEvent } from '@capsule/protocol';
import { CapsuleError, errorMessage } from '../errors.js';
import { CacheKey } from '../guest/cache-key.js';
import { tempSibling } from '../guest/files.js';
import { runCommand } from '../launcher.js';
import type { Logger } from '../log.js';
import type { SandboxManager } from '../sandboxes/manager.js';
import type { Store, TemplateRecord } from '../store/store.js';
import { parseCapsulefile, type BuildStep } from './capsulefile.js';
import { templateImageDefaults, type TemplateImageDefaults } from './image-records.js';

/** Output of a failing step quoted in its error. */
const ERROR_OUTPUT_BYTES = 4096;
const FORMAT = 'build-v1';
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

export interface BuildRequest {
  name: string;
  capsulefile: string;
  contextDir: string | undefined;
}

/** The files a COPY names, resolved inside the build folder (never outside it), with their contents' place in the key. */
function copySources(contextDir: string | undefined, source: string): { file: string; relative: string }[] {
  if (!contextDir) throw new CapsuleError('invalid_argument', 'COPY needs a build folder', { hint: 'pass the folder with the Capsulefile (the CLI sends its own folder)' });
  const root = path.resolve(contextDir);
  const start = path.resolve(root, source);
  if (start !== root && !start.startsWith(`${root}${path.sep}`)) throw new CapsuleError('invalid_argument', `COPY ${source} points outside the build folder`);
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
  constructor(
    private readonly store: Store,
    private readonly manager: SandboxManager,
    private readonly rootfsDir: string,
    private readonly log: Logger,
  ) {}

  /**
   * Runs the build and returns the root filesystem and defaults of the new
   * template; `base` resolves the FROM. The caller records the template.
   */
  async build(
    request: BuildRequest,
    resolveBase: (from: string, emit: (event: BuildEvent) => void) => Promise<BuildBase>,
    emit: (event: BuildEvent) => void,
    signal: AbortSignal,
  ): Promise<{ rootfs: string; defaults: TemplateImageDefaults; from: string; imageDigest: string | null; base: TemplateRecord }> {
    const file = parseCapsulefile(request.capsulefile);
    const copies = new Map<BuildStep, { file: string; relative: string }[]>();
    for (const step of file.steps) if (step.kind === 'COPY') copies.set(step, copySources(request.contextDir, step.source));
    const base = await resolveBase(file.from, emit);
    try {
      const key = new CacheKey().add('format', FORMAT).add('base', `${base.template.rootfs}:${fs.statSync(base.template.rootfs).size}`).add('steps', JSON.stringify(file.steps));
      for (const files of copies.values()) for (const f of files) key.add(f.relative, fs.readFileSync(f.file));
      const target = path.join(this.rootfsDir, `build-${key.digest()}.ext4`);
      const defaults = this.finalDefaults(base.defaults, file.steps);
      if (fs.existsSync(target)) {
        emit({ type: 'log', stream: 'stdout', text: `the steps are unchanged since an earlier build: using ${path.basename(target)}\n` });
      } else {
        await this.runSteps(base, file.steps, copies, target, emit, signal);
      }
      return { rootfs: target, defaults, from: file.from, imageDigest: base.imageDigest, base: base.template };
    } finally {
      await base.release();
    }
  }

  private finalDefaults(base: TemplateImageDefaults | undefined, steps: BuildStep[]): TemplateImageDefaults {
    const defaults: TemplateImageDefaults = { imageDigest: base?.imageDigest ?? '', env: { ...base?.env }, user: base?.user ?? 'root', workdir: base?.workdir };
    for (const step of steps) {
      if (step.kind === 'ENV') defaults.env[step.name] = step.value;
      if (step.kind === 'USER') defaults.user = step.user;
      if (step.kind === 'WORKDIR') defaults.workdir = step.path;
    }
    return defaults;
  }

  private async runSteps(
    base: BuildBase,
    steps: BuildStep[],
    copies: Map<BuildStep, { file: string; relative: string }[]>,
    target: string,
    emit: (event: BuildEvent) => void,
    signal: AbortSignal,
  ): Promise<void> {
    emit({ type: 'step', index: 0, instruction: `booting a build sandbox from ${base.template.name}` });
    const sandbox = await this.manager.create({ template: base.template.name, timeoutMs: 0, metadata: { 'capsule.build': 'true' } });
    const defaults = await templateImageDefaults(this.store, base.template.name);
    const state = { env: { ...defaults?.env }, user: defaults?.user, cwd: defaults?.workdir };
    try {
      for (const [i, step] of steps.entries()) {
        if (signal.aborted) throw new CapsuleError('invalid_argument', 'the build was cancelled');
        emit({ type: 'step', index: i + 1, instruction: describeStep(step) });
        switch (step.kind) {
          case 'ENV':
            state.env[step.name] = step.value;
            break;
          case 'USER':
            state.user = step.user;
            break;
          case 'WORKDIR':
            await this.exec(sandbox.id, ['mkdir', '-p', step.path], { ...state, user: 'root' }, i + 1, step, emit, signal);
            state.cwd = step.path;
            break;
          case 'RUN':
            await this.exec(sandbox.id, ['/bin/sh', '-c', step.command], state, i + 1, step, emit, signal);
            break;
          case 'COPY':
            for (const f of copies.get(step) ?? []) {
              const destination = f.relative === '' ? step.destination : path.posix.join(step.destination, f.relative.split(path.sep).join('/'));
              // In pieces: one message to the agent is capped (4 MiB), a file is not.
              const bytes = fs.readFileSync(f.file);
              for (let offset = 0; offset === 0 || offset < bytes.length; offset += COPY_CHUNK_BYTES) {
                const write = offset === 0 ? 'mkdir -p "$(dirname "$1")" && base64 -d > "$1"' : 'base64 -d >> "$1"';
                await this.exec(
                  sandbox.id,
                  ['/bin/sh', '-c', write, 'sh', destination],
                  { ...state, user: 'root', stdin: bytes.subarray(offset, offset + COPY_CHUNK_BYTES).toString('base64') },
                  i + 1,
                  step,
                  emit,
                  signal,
                );
              }
            }
            break;
        }
      }
      await this.exec(sandbox.id, ['sync'], { ...state, user: 'root' }, steps.length + 1, undefined, emit, signal);
      // Paused, the VM is gone and its disk overlay is consistent: flatten it (and its backing files) into one image.
      await this.manager.pause(sandbox.id);
      const temp = tempSibling(target);
      fs.mkdirSync(path.dirname(target), { recursive: true });
      try {
        await runCommand('qemu-img', ['convert', '-f', 'qcow2', '-O', 'raw', path.join(this.manager.stateDir(sandbox.id), 'overlay.qcow2'), temp]);
        fs.renameSync(temp, target);
      } finally {
        fs.rmSync(temp, { force: true });
      }
    } finally {
      await this.manager.remove(sandbox.id).catch((err: unknown) => this.log.error({ sandbox: sandbox.id, err: errorMessage(err) }, 'could not remove a build sandbox'));
    }
  }

  private async exec(
    id: string,
    cmd: string[],
    state: { env: Record<string, string>; user?: string | undefined; cwd?: string | undefined; stdin?: string },
    index: number,
    step: BuildStep | undefined,
    emit: (event: BuildEvent) => void,
    signal: AbortSignal,
  ): Promise<void> {
    const events = await this.manager.execStream(
      id,
      { cmd, env: state.env, ...(state.user ? { user: state.user } : {}), ...(state.cwd ? { cwd: state.cwd } : {}), ...(state.stdin !== undefined ? { stdin: state.stdin } : {}) },
      signal,
    );
    let tail = '';
    for await (const event of events) {
      if (event.type === 'stdout' || event.type === 'stderr') {
        const text = Buffer.from(event.data, 'base64').toString('utf8');
        tail = (tail + text).slice(-ERROR_OUTPUT_BYTES);
        emit({ type: 'log', stream: event.type, text });
      } else if (event.type === 'exit') {
        if (event.exitCode !== 0 || event.signal) {
          const what = step ? describeStep(step) : cmd.join(' ');
          throw new CapsuleError('build_step_failed', `step ${index} (${what}) ${event.signal ? `was killed by ${event.signal}` : `exited with code ${event.exitCode}`}${tail ? `:\n${tail.trimEnd()}` : ''}`, {
            hint: 'fix the step in the Capsulefile; the steps before it are not kept',
          });
        }
      } else if (event.type === 'error') {
        throw new CapsuleError('build_step_failed', `step ${index} could not run: ${event.message}`, { ...(event.hint ? { hint: event.hint } : {}) });
      }
    }
  }
}

export function describeStep(step: BuildStep): string {
  switch (step.kind) {
    case 'RUN':
      return `RUN ${step.command}`;
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

/** A name for a template that exists only while a build boots from an image. */
export function temporaryTemplateName(): string {
  return `build-base-${randomBytes(6).toString('hex')}`;
}
