// Files inside a volume's ext4 image, read and written with debugfs (e2b's
// volume file API): the image is never mounted on the host, and debugfs, a
// parser of a filesystem a guest wrote, runs confined (confined.ts). A path is
// the client's and a name the guest's: neither reaches a debugfs command line
// unchecked, and debugfs resolves every path, symlinks too, inside the image.
import { CapsuleError } from '../errors.js';
import { runConfined } from './confined.js';

export type VolumeEntryType = 'file' | 'directory' | 'symlink' | 'unknown';

export interface VolumeEntry {
  name: string;
  /** From the volume's root, starting with `/`. */
  path: string;
  type: VolumeEntryType;
  size: number;
  /** Permission bits only (as e2b answers them). */
  mode: number;
  uid: number;
  gid: number;
  atime: Date;
  mtime: Date;
  ctime: Date;
  /** A fast symlink's target (one under 60 bytes, kept in its inode); longer ones are left out. */
  target?: string;
}

/** Who a new file or folder belongs to and its permission bits; unset, it takes the volume root's owner and e2b's modes. */
export interface NewEntryOptions {
  uid?: number;
  gid?: number;
  mode?: number;
  /** Parents are made as needed; a file is replaced, a folder that exists is fine. */
  force: boolean;
}

/** e2b's modes for what its volume API makes. */
const DEFAULT_FILE_MODE = 0o666;
const DEFAULT_DIR_MODE = 0o777;
const MAX_PATH_BYTES = 4096;
const MAX_NAME_BYTES = 255;
/** The most entries one listing or one removal walks: beyond it the client is told to ask for less. */
const MAX_VOLUME_ENTRIES = 20_000;
export const MAX_LIST_DEPTH = 10;
/** The one line debugfs writes to stderr on every run. */
const BANNER = /^debugfs \d/;
/** One line of `ls -p`: /inode/mode/uid/gid/name/size/ (a name never holds a slash). */
const LS_LINE = /^\/(\d+)\/([0-7]+)\/(\d+)\/(\d+)\/([^/]*)\/(\d*)\/$/;

function invalid(message: string): CapsuleError {
  return new CapsuleError('invalid_argument', message, { hint: 'give a path inside the volume, such as /data/file.txt' });
}

function pathNotFound(path: string): CapsuleError {
  return new CapsuleError('not_found', `no file or folder ${path} in the volume`);
}

/**
 * A client's path as `/a/b`, from the volume's root: `.` and empty parts
 * dropped; `..`, NUL and line breaks refused (a line break would end a
 * debugfs command), as are paths and names longer than ext4 takes.
 */
export function volumePath(path: string): string {
  if (/[\0\n\r]/.test(path)) throw invalid('a volume path may not hold NUL or line breaks');
  if (Buffer.byteLength(path) > MAX_PATH_BYTES) throw invalid(`a volume path is at most ${MAX_PATH_BYTES} bytes`);
  const parts = path.split('/').filter((part) => part !== '' && part !== '.');
  if (parts.includes('..')) throw invalid('a volume path may not hold ".."');
  if (parts.some((part) => Buffer.byteLength(part) > MAX_NAME_BYTES)) throw invalid(`a name is at most ${MAX_NAME_BYTES} bytes`);
  return `/${parts.join('/')}`;
}

function parentOf(path: string): string {
  return path.slice(0, path.lastIndexOf('/')) || '/';
}

function baseName(path: string): string {
  return path.slice(path.lastIndexOf('/') + 1) || '/';
}

function joinPath(dir: string, name: string): string {
  return dir === '/' ? `/${name}` : `${dir}/${name}`;
}

/** A debugfs argument: in double quotes, a quote doubled (its parser's rule); the caller has refused line breaks. */
function quoted(path: string): string {
  return `"${path.replaceAll('"', '""')}"`;
}

/** An inode as debugfs names it: never read as a path, so nothing of a guest's names goes into a command. */
function inode(ino: number): string {
  return `<${ino}>`;
}

/** debugfs on a volume's image, a file of data bound beside it when given; commands go in on stdin, one a line. */
export class VolumeFiles {
  constructor(
    private readonly image: string,
    private readonly confine: boolean,
  ) {}

  private async debugfs(
    commands: (dataPath: string) => string[],
    { writable, data }: { writable: boolean; data?: { path: string; writable: boolean } },
  ): Promise<{ stdout: string; errors: string[] }> {
    const files = [
      { path: this.image, inside: 'volume.ext4', writable },
      ...(data ? [{ path: data.path, inside: 'data', writable: data.writable }] : []),
    ];
    const { stdout, stderr } = await runConfined(
      files,
      ([image = '']) => ['debugfs', ...(writable ? ['-w'] : []), '-f', '-', image],
      this.confine,
      { input: `${commands(this.confine ? '/data' : (data?.path ?? '')).join('\n')}\n` },
    );
    return { stdout, errors: stderr.split('\n').filter((line) => line.trim() !== '' && !BANNER.test(line)) };
  }

  /** Runs commands that change the image; any complaint of debugfs fails the call. */
  private async change(commands: (dataPath: string) => string[], data?: { path: string; writable: boolean }): Promise<void> {
    const { errors } = await this.debugfs(commands, { writable: true, data });
    if (errors.length > 0) throw new CapsuleError('internal', `debugfs could not change the volume: ${errors.slice(0, 3).join('; ')}`);
  }

  /** The entry at `path` (a final symlink not followed), or undefined when there is none. */
  async stat(path: string): Promise<VolumeEntry | undefined> {
    return (await this.statWithInode(path))?.entry;
  }

  private async statWithInode(path: string): Promise<{ entry: VolumeEntry; ino: number } | undefined> {
    const { stdout } = await this.debugfs(() => [`stat ${quoted(path)}`], { writable: false });
    const stat = parseStat(stdout);
    const ino = /^Inode: (\d+)/m.exec(stdout)?.[1];
    return stat && ino ? { entry: { name: baseName(path), path, ...stat }, ino: Number(ino) } : undefined;
  }

  private async existing(path: string): Promise<VolumeEntry> {
    const entry = await this.stat(path);
    if (!entry) throw pathNotFound(path);
    return entry;
  }

  /** The entries under folder `path`, `depth` levels down (1: its own entries), in e2b's order: by name, each folder followed by what it holds. */
  async list(path: string, depth: number): Promise<VolumeEntry[]> {
    if (!Number.isInteger(depth) || depth < 1 || depth > MAX_LIST_DEPTH)
      throw invalid(`depth is a whole number from 1 to ${MAX_LIST_DEPTH}`);
    const dir = await this.statWithInode(path);
    if (!dir) throw pathNotFound(path);
    if (dir.entry.type !== 'directory') throw invalid(`${path} is a ${dir.entry.type}, not a folder`);
    const children = new Map<string, VolumeEntry[]>();
    let level = [{ ino: dir.ino, path }];
    let count = 0;
    for (let d = 1; d <= depth && level.length > 0; d++) {
      const listed = await this.listFolders(level);
      const next: { ino: number; path: string }[] = [];
      for (const folder of level) {
        const entries = listed.get(folder.ino) ?? [];
        count += entries.length;
        if (count > MAX_VOLUME_ENTRIES) throw invalid(`more than ${MAX_VOLUME_ENTRIES} entries under ${path}: list fewer levels`);
        children.set(
          folder.path,
          entries.map((e) => e.entry).sort((a, b) => Buffer.compare(Buffer.from(a.name), Buffer.from(b.name))),
        );
        for (const e of entries) if (e.entry.type === 'directory') next.push({ ino: e.ino, path: e.entry.path });
      }
      level = next;
    }
    const ordered: VolumeEntry[] = [];
    const walk = (folder: string) => {
      for (const entry of children.get(folder) ?? []) {
        ordered.push(entry);
        if (entry.type === 'directory') walk(entry.path);
      }
    };
    walk(path);
    return ordered;
  }

  /**
   * The entries of each folder (by inode), with their stat. Output is split
   * at the echo of each command, which names inodes only; a guest's name with
   * a line break in it would break a listing line, so any line that is
   * neither refuses the listing rather than be read as an entry.
   */
  private async listFolders(folders: { ino: number; path: string }[]): Promise<Map<number, { ino: number; entry: VolumeEntry }[]>> {
    const listed = new Map<number, { ino: number; name: string }[]>();
    const { stdout } = await this.debugfs(() => folders.map((f) => `ls -p ${inode(f.ino)}`), { writable: false });
    let current: { ino: number; name: string }[] | undefined;
    for (const line of stdout.split('\n')) {
      const echo = /^debugfs: ls -p <(\d+)>$/.exec(line);
      if (echo) {
        current = [];
        listed.set(Number(echo[1]), current);
        continue;
      }
      if (line.trim() === '') continue;
      const m = LS_LINE.exec(line);
      if (!m || !current) throw unlistable();
      const name = m[5] ?? '';
      if (name === '.' || name === '..') continue;
      if (/[\0-\x1f\x7f]/.test(name)) throw unlistable();
      current.push({ ino: Number(m[1]), name });
    }
    if (listed.size !== folders.length) throw unlistable();
    const inodes = [...listed.values()].flat().map((e) => e.ino);
    const stats = await this.statInodes(inodes);
    const result = new Map<number, { ino: number; entry: VolumeEntry }[]>();
    for (const folder of folders) {
      result.set(
        folder.ino,
        (listed.get(folder.ino) ?? []).flatMap(({ ino, name }) => {
          const stat = stats.get(ino);
          return stat ? [{ ino, entry: { name, path: joinPath(folder.path, name), ...stat } }] : [];
        }),
      );
    }
    return result;
  }

  /** `stat` of each inode, in one run; split at each command's echo, and refused if a symlink's target forged one. */
  private async statInodes(inodes: number[]): Promise<Map<number, Omit<VolumeEntry, 'name' | 'path'>>> {
    const unique = [...new Set(inodes)];
    const stats = new Map<number, Omit<VolumeEntry, 'name' | 'path'>>();
    if (unique.length === 0) return stats;
    const { stdout } = await this.debugfs(() => unique.map((ino) => `stat ${inode(ino)}`), { writable: false });
    const blocks = stdout.split(/^debugfs: stat <(\d+)>$/m);
    if ((blocks.length - 1) / 2 !== unique.length) throw unlistable();
    for (let i = 1; i < blocks.length; i += 2) {
      const stat = parseStat(blocks[i + 1] ?? '');
      if (stat) stats.set(Number(blocks[i]), stat);
    }
    return stats;
  }

  /** Copies the file at `path` out to `out` (a file that exists, empty). Only regular files are read. */
  async read(path: string, out: string): Promise<VolumeEntry> {
    const entry = await this.existing(path);
    if (entry.type !== 'file') throw invalid(`${path} is a ${entry.type}, not a file`);
    const { errors } = await this.debugfs((data) => [`dump ${quoted(path)} ${data}`], {
      writable: false,
      data: { path: out, writable: true },
    });
    if (errors.length > 0) throw new CapsuleError('internal', `debugfs could not read ${path}: ${errors.slice(0, 3).join('; ')}`);
    return entry;
  }

  /** Makes the folder `path`; with `force` its parents too, and one that exists already is fine. */
  async makeDir(path: string, options: NewEntryOptions): Promise<VolumeEntry> {
    if (path === '/') {
      if (options.force) return await this.existing(path);
      throw new CapsuleError('name_taken', 'the volume root exists already');
    }
    const owner = await this.ownerFor(options);
    const existing = await this.stat(path);
    if (existing) {
      if (options.force && existing.type === 'directory') return existing;
      throw new CapsuleError('name_taken', `${path} exists already (a ${existing.type})`);
    }
    await this.prepareParent(path, owner, options.force);
    await this.change(() => [`mkdir ${quoted(path)}`, ...setOwner(path, owner, 0o040000 | (options.mode ?? DEFAULT_DIR_MODE))]);
    return await this.existing(path);
  }

  /** Writes the host file `source` as the file `path`; `force` replaces one that exists and makes missing parents. */
  async write(path: string, source: string, options: NewEntryOptions): Promise<VolumeEntry> {
    if (path === '/') throw invalid('the volume root is a folder, not a file');
    const owner = await this.ownerFor(options);
    const existing = await this.stat(path);
    if (existing && !options.force) throw new CapsuleError('name_taken', `${path} exists already: write with force to replace it`);
    if (existing?.type === 'directory') throw new CapsuleError('name_taken', `${path} is a folder`);
    await this.prepareParent(path, owner, options.force);
    await this.change(
      (data) => [
        ...(existing ? [`rm ${quoted(path)}`] : []),
        `write ${data} ${quoted(path)}`,
        ...setOwner(path, owner, 0o100000 | (options.mode ?? DEFAULT_FILE_MODE)),
      ],
      { path: source, writable: false },
    );
    return await this.existing(path);
  }

  /** Changes who owns `path` and its permission bits, each only when given. */
  async setMetadata(path: string, change: { uid?: number; gid?: number; mode?: number }): Promise<VolumeEntry> {
    checkOwnerOptions(change);
    const entry = await this.existing(path);
    const typeBits = { file: 0o100000, directory: 0o040000, symlink: 0o120000, unknown: -1 }[entry.type];
    if (change.mode !== undefined && typeBits < 0) throw invalid(`${path} is no file, folder or link: its mode is left as it is`);
    await this.change(() => [
      ...(change.uid !== undefined ? [`sif ${quoted(path)} uid ${change.uid}`] : []),
      ...(change.gid !== undefined ? [`sif ${quoted(path)} gid ${change.gid}`] : []),
      ...(change.mode !== undefined ? [`sif ${quoted(path)} mode 0${(typeBits | change.mode).toString(8)}`] : []),
    ]);
    return await this.existing(path);
  }

  /** Removes the file, link or folder (with all it holds) at `path`; the root cannot be removed. */
  async remove(path: string): Promise<void> {
    if (path === '/') throw invalid('the volume root cannot be removed');
    const entry = await this.existing(path);
    if (entry.type !== 'directory') {
      await this.change(() => [`rm ${quoted(path)}`]);
      return;
    }
    const inside = await this.list(path, MAX_LIST_DEPTH);
    if (inside.some((e) => e.type === 'directory' && e.path.split('/').length - path.split('/').length >= MAX_LIST_DEPTH))
      throw invalid(`${path} is more than ${MAX_LIST_DEPTH} levels deep: remove its deepest folders first`);
    // Deepest first, so each folder is empty when its turn comes.
    const commands = [...inside, entry]
      .sort((a, b) => b.path.split('/').length - a.path.split('/').length)
      .map((e) => `${e.type === 'directory' ? 'rmdir' : 'rm'} ${quoted(e.path)}`);
    await this.change(() => commands);
  }

  /** Makes `path`'s parent (and its parents) with `force`; without, it must be a folder that exists. */
  private async prepareParent(path: string, owner: { uid: number; gid: number }, force: boolean): Promise<void> {
    const parent = parentOf(path);
    const found = await this.stat(parent);
    if (found?.type === 'directory') return;
    if (found) throw invalid(`${parent} is a ${found.type}, not a folder`);
    if (!force) throw pathNotFound(parent);
    await this.prepareParent(parent, owner, true);
    await this.change(() => [`mkdir ${quoted(parent)}`, ...setOwner(parent, owner, 0o040000 | DEFAULT_DIR_MODE)]);
  }

  /** The owner a new entry gets: the one asked for, else the volume root's (whom Capsule gave a fresh volume to). */
  private async ownerFor(options: NewEntryOptions): Promise<{ uid: number; gid: number }> {
    checkOwnerOptions(options);
    if (options.uid !== undefined && options.gid !== undefined) return { uid: options.uid, gid: options.gid };
    const root = await this.existing('/');
    return { uid: options.uid ?? root.uid, gid: options.gid ?? root.gid };
  }
}

function checkOwnerOptions(options: { uid?: number; gid?: number; mode?: number }): void {
  for (const [key, value] of [
    ['uid', options.uid],
    ['gid', options.gid],
  ] as const)
    if (value !== undefined && (!Number.isInteger(value) || value < 0 || value > 0xffffffff)) throw invalid(`${key} is a whole number`);
  if (options.mode !== undefined && (!Number.isInteger(options.mode) || options.mode < 0 || options.mode > 0o7777))
    throw invalid('mode is a number of permission bits, at most 0o7777');
}

function setOwner(path: string, owner: { uid: number; gid: number }, mode: number): string[] {
  return [`sif ${quoted(path)} uid ${owner.uid}`, `sif ${quoted(path)} gid ${owner.gid}`, `sif ${quoted(path)} mode 0${mode.toString(8)}`];
}

function unlistable(): CapsuleError {
  return new CapsuleError('invalid_argument', 'a name in this folder holds a control character, which the volume file API cannot list', {
    hint: 'rename it from a sandbox that mounts the volume',
  });
}

const TYPES: Record<string, VolumeEntryType> = { regular: 'file', directory: 'directory', symlink: 'symlink' };

/**
 * The fields of debugfs's `stat` of one inode; undefined when it printed none
 * (no such path). Each field is the first match, so a symlink's target,
 * printed last, cannot stand in for one.
 */
export function parseStat(text: string): Omit<VolumeEntry, 'name' | 'path'> | undefined {
  const head = /Type: (\S+)\s+Mode:\s+([0-7]+)/.exec(text);
  const user = /User:\s+(\d+)\s+Group:\s+(\d+)(?:\s+Project:\s+\d+)?\s+Size:\s+(\d+)/.exec(text);
  if (!head || !user) return undefined;
  const time = (field: string) => {
    const m = new RegExp(`^\\s*${field}: 0x([0-9a-f]+)(?::([0-9a-f]+))?`, 'm').exec(text);
    if (!m) return new Date(0);
    // Seconds are signed 32 bits; the extra field's low two bits extend the epoch, the rest are nanoseconds.
    const extra = m[2] ? parseInt(m[2], 16) : 0;
    const seconds = (parseInt(m[1] ?? '0', 16) | 0) + (extra & 3) * 2 ** 32;
    return new Date(seconds * 1000 + Math.floor((extra >>> 2) / 1e6));
  };
  const link = text.indexOf('Fast link dest: "');
  const end = text.lastIndexOf('"');
  return {
    type: TYPES[head[1] ?? ''] ?? 'unknown',
    mode: parseInt(head[2] ?? '0', 8) & 0o7777,
    uid: Number(user[1]),
    gid: Number(user[2]),
    size: Number(user[3]),
    atime: time('atime'),
    mtime: time('mtime'),
    ctime: time('ctime'),
    ...(link >= 0 && end > link + 16 ? { target: text.slice(link + 17, end) } : {}),
  };
}
