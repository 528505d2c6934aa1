// The Capsule kit disk: a small read-only ext4 image mounted at /opt/capsule in
// every guest. It carries tini, the agent bundle and node-pty's native addon
// beside it, a private copy of node with its own libraries (and the addon's)
// and loader (so the agent never depends on the guest's libc and any root
// filesystem can run it), and capsule-guest-helper, built static here from
// guest/, for the system calls node cannot make.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { runCommand } from '../launcher.js';
import { agentBundle, agentPtyAddon, guestHelperSource } from '../repo-paths.js';
import { CacheKey } from './cache-key.js';
import { pruneSiblings, tempSibling, treeBytes } from './files.js';

const TINI = '/usr/bin/tini-static';
const LOADER = 'ld-linux-x86-64.so.2';

/** Shared libraries named by `ldd` output, and the dynamic loader. */
export function parseLdd(output: string): { libraries: string[]; loader: string | undefined } {
  const libraries: string[] = [];
  let loader: string | undefined;
  for (const line of output.split('\n')) {
    const linked = /=>\s+(\/\S+)/.exec(line);
    if (linked?.[1]) libraries.push(linked[1]);
    else {
      const bare = /^\s*(\/\S*ld-linux[^\s]*)/.exec(line);
      if (bare?.[1]) loader = bare[1];
    }
  }
  return { libraries, loader };
}

export async function ensureKit(cacheDir: string, report: (msg: string) => void): Promise<string> {
  for (const file of [agentBundle, agentPtyAddon]) {
    if (!fs.existsSync(file)) throw new Error(`${file} is missing; run npm run build`);
  }
  const node = fs.realpathSync(process.execPath);
  const { stdout } = await runCommand('ldd', [node]);
  const { libraries: nodeLibraries, loader } = parseLdd(stdout);
  if (!loader) throw new Error(`ldd ${node} named no dynamic loader`);
  // The addon is loaded into node with the kit's library path: its libraries
  // must be there too (today they are node's own: libstdc++, libgcc_s, libc).
  const addonLibraries = parseLdd((await runCommand('ldd', [agentPtyAddon])).stdout).libraries;
  const libraries = [...new Set([...nodeLibraries, ...addonLibraries])];

  const { stdout: gccVersion } = await runCommand('gcc', ['--version']);
  const key = new CacheKey()
    .add('format', 'kit-v2')
    .addFile('node', node)
    .addFile('tini', TINI)
    .addFile('agent', agentBundle)
    .addFile('pty-addon', agentPtyAddon)
    .addFile('helper', guestHelperSource)
    .add('gcc', gccVersion);
  for (const lib of libraries) key.addFile(lib, lib);
  key.addFile('loader', loader);
  const name = `kit-${key.digest()}.ext4`;
  const dir = path.join(cacheDir, 'kit');
  const target = path.join(dir, name);
  if (fs.existsSync(target)) return target;

  report('building the kit disk (node, agent, node-pty addon, tini, guest helper)');
  const staging = fs.mkdtempSync(path.join(os.tmpdir(), 'capsule-kit-'));
  try {
    for (const sub of ['bin', 'node/lib', 'agent']) fs.mkdirSync(path.join(staging, sub), { recursive: true });
    fs.copyFileSync(TINI, path.join(staging, 'bin', 'tini'));
    fs.copyFileSync(node, path.join(staging, 'node', 'node'));
    for (const lib of libraries) fs.copyFileSync(lib, path.join(staging, 'node', 'lib', path.basename(lib)));
    fs.copyFileSync(loader, path.join(staging, 'node', LOADER));
    fs.copyFileSync(agentBundle, path.join(staging, 'agent', 'capsule-agent.cjs'));
    fs.copyFileSync(agentPtyAddon, path.join(staging, 'agent', 'pty.node'));
    await runCommand('gcc', ['-static', '-O2', '-Wall', '-s', '-o', path.join(staging, 'bin', 'capsule-guest-helper'), guestHelperSource]);
    for (const f of ['bin/tini', 'node/node', `node/${LOADER}`]) fs.chmodSync(path.join(staging, f), 0o755);

    const sizeMiB = Math.ceil((treeBytes(staging) * 1.15) / 1048576) + 16;
    fs.mkdirSync(dir, { recursive: true });
    const temp = tempSibling(target);
    await runCommand('mkfs.ext4', ['-q', '-F', '-L', 'capsule-kit', '-O', '^has_journal', '-d', staging, temp, `${sizeMiB}M`]);
    fs.renameSync(temp, target);
  } finally {
    fs.rmSync(staging, { recursive: true, force: true });
  }
  pruneSiblings(dir, (other) => other.startsWith('kit-'), name);
  return target;
}
