// The cache of template build steps: the disk after each step, keyed by the
// hash of everything the step depends on (the previous step's key, the
// instruction, the files a COPY reads, the ENV/USER/WORKDIR state). A disk is
// a qcow2 delta over the previous step's disk (or over the FROM's disk), so a
// rebuild boots from the last unchanged step instead of from scratch. Entries
// are only ever added with new file names, never rewritten in place: a chain
// another build is reading never changes under it.
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { isProcessAlive, runCommand } from '../launcher.js';
import { writeFileAtomic } from '../guest/files.js';

export interface StepEntry {
  /** The disk after the step (a qcow2 chain); undefined: the FROM's disk, unchanged. */
  disk: string | undefined;
  createdAt: number;
}

export class BuildStepCache {
  constructor(readonly dir: string) {}

  private entryFile(key: string): string {
    return path.join(this.dir, `${key}.json`);
  }

  /**
   * The step's entry if it is usable: every file of its disk's backing chain
   * is there and none was rewritten after the entry was made (a FROM whose
   * disk was rebuilt at the same path must not be read under a stale delta).
   */
  async lookup(key: string): Promise<(StepEntry & { chain: string[] }) | undefined> {
    let entry: StepEntry;
    try {
      entry = JSON.parse(fs.readFileSync(this.entryFile(key), 'utf8')) as StepEntry;
    } catch {
      return undefined;
    }
    let chain: string[] = [];
    if (entry.disk !== undefined) {
      try {
        const { stdout } = await runCommand('qemu-img', ['info', '-U', '--backing-chain', '--output=json', entry.disk]);
        chain = (JSON.parse(stdout) as { filename: string }[]).map((image) => image.filename);
        if (chain.some((file) => fs.statSync(file).mtimeMs > entry.createdAt)) return undefined;
      } catch {
        return undefined;
      }
    }
    return { ...entry, chain };
  }

  /**
   * Protects files a running build reads (the chain it boots from, the disks
   * it commits before flattening the last one) from `prune` by another daemon
   * until `release`; a lease of a daemon that died protects nothing.
   */
  lease(): { add(files: readonly string[]): void; release(): void } {
    fs.mkdirSync(this.dir, { recursive: true });
    const file = path.join(this.dir, `.lease-${process.pid}-${randomBytes(6).toString('hex')}.json`);
    const files: string[] = [];
    return {
      add: (more) => {
        files.push(...more);
        writeFileAtomic(file, JSON.stringify(files));
      },
      release: () => fs.rmSync(file, { force: true }),
    };
  }

  /** A file name for a new overlay of a running build, in the cache's folder (renamed by `commit`). */
  newOverlayPath(): string {
    fs.mkdirSync(this.dir, { recursive: true });
    return path.join(this.dir, `.overlay-${process.pid}-${randomBytes(6).toString('hex')}.qcow2`);
  }

  /**
   * Records the steps a build ran, in order. `delta` is the frozen overlay
   * holding a step's writes (nothing for ENV and USER); the first one's
   * backing is already `startDisk` (or the FROM's disk), later ones are
   * pointed at the delta before them. Returns the last step's disk.
   */
  async commit(
    startDisk: string | undefined,
    steps: { key: string; delta?: string | undefined }[],
    onNamed: (file: string) => void = () => {},
  ): Promise<string | undefined> {
    let disk = startDisk;
    let previousDelta: string | undefined;
    for (const step of steps) {
      if (step.delta !== undefined) {
        const final = path.join(this.dir, `${step.key}-${randomBytes(4).toString('hex')}.qcow2`);
        onNamed(final);
        fs.renameSync(step.delta, final);
        // The build VM's uid owned it while it wrote it; a uid is reused by later VMs, a cached disk is the daemon's.
        fs.chownSync(final, process.getuid?.() ?? 0, process.getgid?.() ?? 0);
        // Its header names the overlay file the VM had before (in the sandbox's folder or a temporary name).
        if (previousDelta !== undefined)
          await runCommand('qemu-img', ['rebase', '-u', '-f', 'qcow2', '-F', 'qcow2', '-b', previousDelta, final]);
        previousDelta = final;
        disk = final;
      }
      writeFileAtomic(this.entryFile(step.key), JSON.stringify({ disk, createdAt: Date.now() } satisfies StepEntry));
    }
    return disk;
  }

  /** Removes the overlays and leases of builds whose daemon died before committing and releasing them. */
  removeAbandoned(): void {
    for (const name of fs.existsSync(this.dir) ? fs.readdirSync(this.dir) : []) {
      const pid = Number(/^\.(?:overlay|lease)-(\d+)-/.exec(name)?.[1]);
      if (pid > 0 && pid !== process.pid && !isProcessAlive(pid)) fs.rmSync(path.join(this.dir, name), { force: true });
    }
  }

  /**
   * Removes every cached step except what builds still running use (their
   * overlays and leases carry their daemon's pid).
   */
  prune(): { entries: number; bytes: number } {
    let entries = 0;
    let bytes = 0;
    const names = fs.existsSync(this.dir) ? fs.readdirSync(this.dir) : [];
    const running = (name: string) => {
      const pid = Number(/^\.(?:overlay|lease)-(\d+)-/.exec(name)?.[1]);
      return pid > 0 && isProcessAlive(pid);
    };
    const leased = new Set<string>();
    for (const name of names.filter((n) => n.startsWith('.lease-') && running(n))) {
      try {
        for (const file of JSON.parse(fs.readFileSync(path.join(this.dir, name), 'utf8')) as string[]) leased.add(file);
      } catch {
        // Being written or released meanwhile.
      }
    }
    for (const name of names) {
      const file = path.join(this.dir, name);
      if (running(name) || leased.has(file)) continue;
      try {
        bytes += fs.statSync(file).blocks * 512;
        fs.rmSync(file, { force: true });
        if (name.endsWith('.json') && !name.startsWith('.')) entries++;
      } catch {
        // Gone meanwhile.
      }
    }
    return { entries, bytes };
  }
}
