#!/usr/bin/env node
// Fails (exit 1) when packages/protocol/src/gen is not exactly what
// `buf generate` makes from proto/ today, so stale or hand-edited generated
// code never lands. Generates into a temp folder; never touches src/gen.
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';

const packageDir = join(dirname(fileURLToPath(import.meta.url)), '..');
const committedDir = join(packageDir, 'src', 'gen');
const scratchDir = mkdtempSync(join(tmpdir(), 'capsule-protocol-gen-'));

function listFiles(root) {
  const files = [];
  const walk = (dir) => {
    for (const name of readdirSync(dir)) {
      const path = join(dir, name);
      if (statSync(path).isDirectory()) walk(path);
      else files.push(relative(root, path));
    }
  };
  try {
    walk(root);
  } catch (error) {
    if (error.code !== 'ENOENT') throw error;
  }
  return files.sort();
}

try {
  // `-o` prefixes every `out:` of buf.gen.yaml, so the same template (and so
  // the same plugin options) writes a fresh copy under scratchDir/src/gen.
  const result = spawnSync('npx', ['--no-install', 'buf', 'generate', '-o', scratchDir], {
    cwd: packageDir,
    encoding: 'utf8',
  });
  if (result.status !== 0) {
    console.error(`check-generated: buf generate failed (exit ${result.status}):\n${result.stderr}${result.stdout}`);
    process.exit(1);
  }

  const freshDir = join(scratchDir, 'src', 'gen');
  const fresh = listFiles(freshDir);
  const committed = listFiles(committedDir);
  const problems = [];
  for (const file of fresh) {
    if (!committed.includes(file)) problems.push(`missing: src/gen/${file}`);
    else if (!readFileSync(join(freshDir, file)).equals(readFileSync(join(committedDir, file)))) problems.push(`differs: src/gen/${file}`);
  }
  for (const file of committed) if (!fresh.includes(file)) problems.push(`not generated from proto/: src/gen/${file}`);

  if (problems.length > 0) {
    console.error('check-generated: packages/protocol/src/gen is stale:');
    for (const problem of problems) console.error(`  ${problem}`);
    console.error('Run `npm run generate` at the repository root and commit the result.');
    process.exit(1);
  }
  console.log(`check-generated: src/gen matches proto/ (${fresh.length} files)`);
} finally {
  rmSync(scratchDir, { recursive: true, force: true });
}
