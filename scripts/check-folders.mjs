#!/usr/bin/env node
// The daemon's folder rules, run by `npm run check`: which folder of
// packages/daemon/src may import which (the table below, lowest layer first),
// and no cycle between folders, so each folder can be read, tested and
// replaced from the bottom up; and no SQL outside store/ (every query is a
// named function there). Imports are read with TypeScript's own
// pre-processor, not a regular expression. Test files are leaves and exempt.
// Usage: node scripts/check-folders.mjs   (exit 1 on any broken rule or cycle)
import fs from 'node:fs';
import path from 'node:path';
import ts from 'typescript';

/** Folder -> the folders it may import. Root files (errors.ts, log.ts, ...) are shared by all. */
const MAY_IMPORT = {
  store: [],
  guest: [],
  agent: [],
  vmm: ['guest'],
  network: ['store'],
  images: ['guest', 'store'],
  volumes: ['store'],
  templates: ['images', 'guest', 'vmm', 'agent', 'network', 'store'],
  sandboxes: ['templates', 'images', 'volumes', 'vmm', 'network', 'agent', 'guest', 'store'],
  events: ['store'],
  workloads: ['sandboxes', 'templates', 'images', 'volumes', 'network', 'agent', 'guest', 'store'],
  api: ['events', 'workloads', 'sandboxes', 'templates', 'images', 'volumes', 'vmm', 'network', 'agent', 'guest', 'store'],
};
/** The root files that wire folders together; every other root file imports no folder and is imported by any. */
const WIRING = new Set(['daemon.ts', 'main.ts']);

const root = path.resolve(path.dirname(new URL(import.meta.url).pathname), '..');
const src = process.argv[2] ? path.resolve(process.argv[2]) : path.join(root, 'packages/daemon/src');
const problems = [];

/** Whether a path relative to src names one of the root wiring files (imports name them with .js). */
const isWiring = (name) => path.dirname(name) === '.' && WIRING.has(path.basename(name).replace(/\.js$/, '.ts'));

/** The folder a file of src belongs to: its first path segment, or '' for a root file. */
const folderOf = (file) => {
  const parts = path.relative(src, file).split(path.sep);
  return parts.length > 1 ? parts[0] : '';
};

const files = [];
const walk = (dir) => {
  for (const entry of fs.readdirSync(dir, { withFileTypes: true })) {
    const p = path.join(dir, entry.name);
    if (entry.isDirectory()) walk(p);
    else if (entry.name.endsWith('.ts') && !entry.name.endsWith('.test.ts') && !entry.name.endsWith('.d.ts')) files.push(p);
  }
};
walk(src);

/** folder -> folder -> the first import seen that makes the edge, for the report. */
const edges = new Map();
for (const file of files) {
  const from = folderOf(file);
  const rel = path.relative(src, file);
  if (from !== '' && !(from in MAY_IMPORT)) {
    problems.push(`${rel}: folder "${from}" has no line in MAY_IMPORT (scripts/check-folders.mjs): say which folders it may import`);
  }
  const text = fs.readFileSync(file, 'utf8');
  if (from !== 'store') {
    const query = /\bdb\s*\.\s*(selectFrom|insertInto|updateTable|deleteFrom|transaction)\b/.exec(text);
    if (query) problems.push(`${rel}: a query (db.${query[1]}) outside store/: put it behind a named function in store/`);
  }
  const { importedFiles } = ts.preProcessFile(text, true, true);
  for (const { fileName } of importedFiles) {
    if (from !== 'store' && /^(kysely|better-sqlite3)$/.test(fileName)) problems.push(`${rel} imports ${fileName}: only store/ speaks SQL`);
    if (!fileName.startsWith('.')) continue;
    const target = path.resolve(path.dirname(file), fileName);
    if (!target.startsWith(src + path.sep)) continue;
    const to = folderOf(target);
    const targetName = path.relative(src, target);
    if (isWiring(targetName) && !isWiring(rel)) {
      problems.push(`${rel} imports ${targetName}: only the entry point may import the wiring`);
      continue;
    }
    if (to === from || to === '') continue;
    if (from === '') {
      if (!WIRING.has(path.basename(file)))
        problems.push(`${rel} imports ${targetName}: a shared root file imports no folder (move it into one, or the import out)`);
      continue;
    }
    if (!(MAY_IMPORT[from] ?? []).includes(to))
      problems.push(`${rel} imports ${targetName}: ${from}/ may import only ${(MAY_IMPORT[from] ?? []).join(', ') || 'root files'}`);
    if (!edges.has(from)) edges.set(from, new Map());
    if (!edges.get(from).has(to)) edges.get(from).set(to, `${rel} -> ${targetName}`);
  }
}

// Cycles between folders as they are (not as the table says): a depth-first search that reports each back edge's loop.
const state = new Map();
const stack = [];
const visit = (folder) => {
  state.set(folder, 'open');
  stack.push(folder);
  for (const [next, example] of edges.get(folder) ?? []) {
    if (state.get(next) === 'open') {
      const loop = [...stack.slice(stack.indexOf(next)), next];
      problems.push(`cycle between folders: ${loop.join(' -> ')} (e.g. ${example})`);
    } else if (!state.has(next)) visit(next);
  }
  stack.pop();
  state.set(folder, 'done');
};
for (const folder of edges.keys()) if (!state.has(folder)) visit(folder);

for (const problem of problems) process.stderr.write(`  ${problem}\n`);
if (problems.length > 0) process.exit(1);
process.stderr.write(`  ${files.length} files, ${[...edges.values()].reduce((n, m) => n + m.size, 0)} folder edges, no cycle\n`);
