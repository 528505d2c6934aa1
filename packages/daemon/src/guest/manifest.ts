// The guest manifest names the built artefacts a daemon boots VMs from. It is
// written by `capsuled prepare` into the shared cache and read by every daemon
// at start, so rebuilding the kit never requires touching a daemon's state.
import fs from 'node:fs';
import path from 'node:path';
import { writeFileAtomic } from './files.js';

export interface GuestManifest {
  kernelVersion: string;
  kernel: string;
  initramfs: string;
  kit: string;
  templates: Record<string, { rootfs: string }>;
  builtAt: string;
}

export function manifestPath(cacheDir: string): string {
  return path.join(cacheDir, 'guest-manifest.json');
}

export function readManifest(cacheDir: string): GuestManifest | undefined {
  try {
    return JSON.parse(fs.readFileSync(manifestPath(cacheDir), 'utf8')) as GuestManifest;
  } catch {
    return undefined;
  }
}

export function writeManifest(cacheDir: string, manifest: GuestManifest): void {
  writeFileAtomic(manifestPath(cacheDir), `${JSON.stringify(manifest, null, 2)}\n`);
}
