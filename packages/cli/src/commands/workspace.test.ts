import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { manifestOf, manifestOfRef, workspaceChanges, workspaceFiles } from './workspace.js';

describe('workspace push, host side', () => {
  let repo: string;
  beforeEach(() => {
    repo = fs.mkdtempSync(path.join(os.tmpdir(), 'capsule-workspace-'));
    execFileSync('git', ['init', '-q', repo]);
    fs.writeFileSync(path.join(repo, '.gitignore'), 'build.log\n');
    fs.writeFileSync(path.join(repo, 'tracked.txt'), 'one\n');
    fs.writeFileSync(path.join(repo, 'run.sh'), '#!/bin/sh\n', { mode: 0o755 });
    fs.symlinkSync('tracked.txt', path.join(repo, 'link'));
    fs.writeFileSync(path.join(repo, 'build.log'), 'ignored\n');
    fs.writeFileSync(path.join(repo, 'new.txt'), 'untracked\n');
    execFileSync('git', ['-C', repo, 'add', '.gitignore', 'tracked.txt', 'run.sh', 'link']);
  });
  afterEach(() => fs.rmSync(repo, { recursive: true, force: true }));

  it('lists tracked and untracked-but-not-ignored files, never .git or ignored ones', async () => {
    expect(await workspaceFiles(repo)).toEqual(['.gitignore', 'link', 'new.txt', 'run.sh', 'tracked.txt']);
  });

  it('records modes and symlink targets, and sends only what changed and removes only what is gone', async () => {
    const first = (await manifestOf(repo, await workspaceFiles(repo))).manifest;
    expect(first['run.sh']).toMatch(/^755:/);
    expect(first['tracked.txt']).toMatch(/^644:/);
    // Git's own blob ids: the same as `git hash-object` (of a link: of its target).
    const hashObject = (input: string) => execFileSync('git', ['-C', repo, 'hash-object', '--stdin'], { input }).toString().trim();
    expect(first['tracked.txt']).toBe(`644:${hashObject('one\n')}`);
    expect(first.link).toBe(`link:${hashObject('tracked.txt')}`);
    fs.appendFileSync(path.join(repo, 'tracked.txt'), 'two\n');
    fs.chmodSync(path.join(repo, 'new.txt'), 0o700);
    fs.rmSync(path.join(repo, 'run.sh'));
    const second = (await manifestOf(repo, await workspaceFiles(repo))).manifest;
    expect(workspaceChanges(first, second)).toEqual({ send: ['new.txt', 'tracked.txt'], remove: ['run.sh'] });
    expect(workspaceChanges(second, second)).toEqual({ send: [], remove: [] });
  });

  it("describes a ref's files as the work tree's, so switching between them sends only what differs", async () => {
    fs.rmSync(path.join(repo, 'new.txt'));
    execFileSync('git', ['-C', repo, '-c', 'user.email=t@t', '-c', 'user.name=t', 'commit', '-qm', 'one']);
    const ref = await manifestOfRef(repo, 'HEAD');
    expect(ref.manifest).toEqual((await manifestOf(repo, await workspaceFiles(repo))).manifest);
    expect(ref.sizes.get('tracked.txt')).toBe(4);
    await expect(manifestOfRef(repo, 'no-such-branch')).rejects.toThrow(/git ls-tree/);
  });
});
