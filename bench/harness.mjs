// What every benchmark shares: a private folder for its daemons, a client for
// their API, starting a daemon and waiting until its templates are warm, and a
// cleanup that kills everything started under that folder, also on Ctrl-C.
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';

export const repo = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');

export function percentile(values, p) {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))];
}

export class BenchRun {
  constructor() {
    this.root = fs.mkdtempSync(path.join(os.tmpdir(), 'capsule-bench-'));
    this.socketPath = path.join(this.root, 'capsuled.sock');
    this.children = new Set();
    process.on('SIGINT', () => {
      this.cleanup();
      process.exit(130);
    });
  }

  /** Kills every child and every process whose command line names this run's folder, then removes it. */
  cleanup() {
    for (const child of this.children) child.kill('SIGKILL');
    for (const entry of fs.readdirSync('/proc')) {
      if (!/^\d+$/.test(entry)) continue;
      try {
        if (fs.readFileSync(`/proc/${entry}/cmdline`, 'utf8').includes(this.root)) process.kill(Number(entry), 'SIGKILL');
      } catch {
        // Gone meanwhile.
      }
    }
    fs.rmSync(this.root, { recursive: true, force: true });
  }

  request(method, urlPath, body) {
    return new Promise((resolve, reject) => {
      const payload = body === undefined ? undefined : JSON.stringify(body);
      const req = http.request({ socketPath: this.socketPath, method, path: urlPath, headers: payload ? { 'content-type': 'application/json' } : {} }, (res) => {
        let text = '';
        res.on('data', (c) => (text += c));
        res.on('end', () => resolve({ status: res.statusCode, body: text ? JSON.parse(text) : undefined }));
      });
      req.on('error', reject);
      req.end(payload);
    });
  }

  /** Starts a private capsuled with `env` and waits until its templates' warm snapshots are settled; resolves with a stop function. */
  async startDaemon(name, env) {
    const dir = path.join(this.root, name);
    const daemon = spawn(process.execPath, [path.join(repo, 'packages/daemon/dist/main.js')], {
      env: { ...process.env, CAPSULE_STATE_DIR: path.join(dir, 'state'), CAPSULE_RUNTIME_DIR: path.join(dir, 'run'), CAPSULE_SOCKET: this.socketPath, CAPSULE_LOG_LEVEL: 'warn', ...env },
      stdio: 'ignore',
    });
    this.children.add(daemon);
    for (let i = 0; ; i++) {
      let warm;
      try {
        warm = (await this.request('GET', '/v1/templates')).body.templates[0].warmSnapshot;
      } catch {
        // Not listening yet.
      }
      if (warm === 'failed') throw new Error('the warm snapshot failed');
      if (warm !== undefined && warm !== 'building') break;
      if (i > 1200) throw new Error('capsuled did not get ready');
      await sleep(50);
    }
    return async () => {
      daemon.kill('SIGTERM');
      await new Promise((r) => daemon.once('exit', r));
      this.children.delete(daemon);
    };
  }
}
