// @capsule/sdk as npm would publish it: `npm pack` of it and of @capsule/protocol
// (which it depends on), unpacked into an empty project's node_modules, then a
// script there that creates a sandbox and runs a command (against a stand-in
// daemon, since a real one is not what is tested) and a type check of its use.
// No network: third-party dependencies are linked from this checkout's node_modules.
import { execFile, execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import { sendError, sendJson, startStandInDaemon } from '../src/testing/stand-in-daemon.js';

const repo = fileURLToPath(new URL('../../../', import.meta.url));
const work = fs.mkdtempSync(path.join(os.tmpdir(), 'capsule-sdk-pack-'));
afterAll(() => fs.rmSync(work, { recursive: true, force: true }));

/** `npm pack` of one workspace package: the tarball's path and the files in it. */
function pack(packageDir: string): { tarball: string; files: string[] } {
  const [result] = JSON.parse(
    execFileSync('npm', ['pack', '--json', '--pack-destination', work], { cwd: path.join(repo, packageDir), encoding: 'utf8' }),
  ) as { filename: string; files: { path: string }[] }[];
  return { tarball: path.join(work, result!.filename), files: result!.files.map((file) => file.path) };
}

describe('@capsule/sdk as published', () => {
  it('packs its built code, types, README and LICENSE, and nothing else', () => {
    const sdk = pack('packages/sdk');
    expect(sdk.files).toEqual(expect.arrayContaining(['LICENSE', 'README.md', 'package.json', 'dist/index.js', 'dist/index.d.ts']));
    expect(sdk.files.filter((file) => /\.test\.|(^|\/)testing\/|^src\/|\.map$/.test(file))).toEqual([]);
    const manifest = JSON.parse(execFileSync('tar', ['-xzOf', sdk.tarball, 'package/package.json'], { encoding: 'utf8' }));
    expect(manifest).toMatchObject({ name: '@capsule/sdk', license: 'Apache-2.0', types: './dist/index.d.ts' });
    expect(manifest.private).toBeUndefined();
  });

  it('installs into an empty project, where a script creates a sandbox and runs a command, and its types check', async () => {
    const project = path.join(work, 'project');
    const modules = path.join(project, 'node_modules');
    const thirdParty = new Set<string>();
    for (const [name, dir] of [
      ['@capsule/protocol', 'packages/protocol'],
      ['@capsule/sdk', 'packages/sdk'],
    ] as const) {
      const target = path.join(modules, name);
      fs.mkdirSync(target, { recursive: true });
      execFileSync('tar', ['-xzf', pack(dir).tarball, '--strip-components=1', '-C', target]);
      const { dependencies = {} } = JSON.parse(fs.readFileSync(path.join(target, 'package.json'), 'utf8'));
      for (const dependency of Object.keys(dependencies)) if (!dependency.startsWith('@capsule/')) thirdParty.add(dependency);
    }
    for (const dependency of [...thirdParty, '@types/node']) {
      fs.mkdirSync(path.dirname(path.join(modules, dependency)), { recursive: true });
      fs.symlinkSync(path.join(repo, 'node_modules', dependency), path.join(modules, dependency));
    }
    fs.writeFileSync(path.join(project, 'package.json'), JSON.stringify({ name: 'user-project', private: true, type: 'module' }));
    const script = `import { Sandbox } from '@capsule/sdk';
const sandbox: Sandbox = await Sandbox.create({ template: 'base', socketPath: process.argv[2] });
const result = await sandbox.commands.run('echo hi');
console.log(sandbox.id, result.exitCode, JSON.stringify(result.stdout));
await sandbox.kill();
`;
    fs.writeFileSync(path.join(project, 'main.ts'), script);
    fs.writeFileSync(
      path.join(project, 'tsconfig.json'),
      JSON.stringify({
        compilerOptions: { module: 'nodenext', target: 'es2022', strict: true, noEmit: true, skipLibCheck: false, types: ['node'] },
      }),
    );
    execFileSync(process.execPath, [path.join(repo, 'node_modules/typescript/bin/tsc'), '-p', project]);
    // The same script without its one type annotation, as plain JavaScript.
    fs.writeFileSync(path.join(project, 'main.mjs'), script.replace(': Sandbox', ''));

    const daemon = await startStandInDaemon((request, res) => {
      if (request.method === 'POST' && request.url === '/v1/sandboxes') return sendJson(res, 201, { id: 'sb_packed', state: 'running' });
      if (request.method === 'DELETE' && request.url === '/v1/sandboxes/sb_packed') return void res.writeHead(204).end();
      if (request.url === '/v1/sandboxes/sb_packed/exec/stream') {
        res.writeHead(200, { 'content-type': 'application/x-ndjson' });
        for (const event of [
          { type: 'start', pid: 2 },
          { type: 'stdout', data: Buffer.from('hi\n').toString('base64') },
          { type: 'exit', exitCode: 0, durationMs: 1 },
        ])
          res.write(`${JSON.stringify(event)}\n`);
        return void res.end();
      }
      return sendError(res, 404, 'not_found', `no route ${request.method} ${request.url}`);
    });
    try {
      const output = await new Promise<string>((resolve, reject) => {
        // Asynchronous: the stand-in daemon answers from this process.
        execFile(process.execPath, ['main.mjs', daemon.socketPath], { cwd: project }, (error, stdout, stderr) =>
          error ? reject(new Error(`${error.message}\n${stderr}`)) : resolve(stdout),
        );
      });
      expect(output).toBe('sb_packed 0 "hi\\n"\n');
      expect(daemon.requests.map((request) => `${request.method} ${request.url}`)).toEqual([
        'POST /v1/sandboxes',
        'POST /v1/sandboxes/sb_packed/exec/stream',
        'DELETE /v1/sandboxes/sb_packed',
      ]);
    } finally {
      await daemon.close();
    }
  });
});
