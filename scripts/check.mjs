#!/usr/bin/env node
// `npm run check`: the static checks CI runs before any test.
//  1. types of every package and every test file (tsc, strict);
//  2. generated protocol code matches the .proto files;
//  3. client code (sdk, cli, dashboard) never imports daemon or agent code: they meet
//     only in @capsule/protocol;
//  4. the daemon's folder rules and no cycle between its folders
//     (scripts/check-folders.mjs);
//  5. lint and format (Biome, biome.json): `npm run format` fixes what it can.
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';

const root = path.resolve(path.dirname(new URL(import.meta.url).pathname), '..');
let failed = false;

function run(title, file, args) {
  process.stderr.write(`check: ${title}\n`);
  try {
    execFileSync(file, args, { cwd: root, stdio: 'inherit' });
  } catch {
    failed = true;
    process.stderr.write(`check: ${title} FAILED\n`);
  }
}

run('types', 'npx', ['tsc', '-b', 'packages/cli', 'packages/daemon', 'packages/agent']);
run('types of the dashboard', 'npx', ['tsc', '-p', 'packages/dashboard']);
run('types of tests', 'npx', ['tsc', '-p', 'tsconfig.tests.json']);
run('generated protocol code is fresh', 'node', ['packages/protocol/scripts/check-generated.mjs']);
run("the daemon's folder rules, no cycle between folders", 'node', ['scripts/check-folders.mjs']);
run('lint and format (Biome)', 'npx', ['biome', 'ci', '--colors=off', '.']);

process.stderr.write('check: client packages import no daemon or agent code\n');
const forbidden =
  /(?:from\s+|import\s*\(\s*|require\s*\(\s*)['"](@capsule\/(?:daemon|agent)(?:\/[^'"]*)?|(?:\.\.\/)+(?:daemon|agent)\/[^'"]*)['"]/g;
for (const pkg of ['sdk', 'cli', 'dashboard']) {
  const manifest = JSON.parse(fs.readFileSync(path.join(root, 'packages', pkg, 'package.json'), 'utf8'));
  for (const dep of Object.keys({ ...manifest.dependencies, ...manifest.devDependencies })) {
    if (dep === '@capsule/daemon' || dep === '@capsule/agent') {
      failed = true;
      process.stderr.write(`  packages/${pkg}/package.json depends on ${dep}\n`);
    }
  }
  const walk = (dir) => {
    for (const entry of fs.readdirSync(dir, { withFileTypes: true })) {
      const p = path.join(dir, entry.name);
      if (entry.isDirectory()) walk(p);
      else if (/\.(ts|tsx|mts|js|mjs)$/.test(entry.name)) {
        for (const match of fs.readFileSync(p, 'utf8').matchAll(forbidden)) {
          failed = true;
          process.stderr.write(`  ${path.relative(root, p)} imports ${match[1]}\n`);
        }
      }
    }
  };
  walk(path.join(root, 'packages', pkg, 'src'));
}

if (failed) {
  process.stderr.write('check: FAILED\n');
  process.exit(1);
}
process.stderr.write('check: all passed\n');
