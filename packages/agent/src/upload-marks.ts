// How /files uploads (temp file + rename) stay invisible as such to directory
// watches: temp files have a recognisable name, which watches never report,
// and the paths an upload just replaced are marked for a few seconds, so a
// watch reports them as envd's in-place write would (CREATE if new, WRITE).
// Must never grow without bound.

import { randomBytes } from 'node:crypto';
import { performance } from 'node:perf_hooks';

const UPLOAD_TEMP_PREFIX = '.capsule-upload-';
const UPLOAD_TEMP_NAME = /^\.capsule-upload-[0-9a-f]{16}$/;
/** Long enough for a busy watch to get to the rename's events. */
const MARK_LIFETIME_MS = 10_000;
const MAX_MARKS = 4096;

/** Short and fixed-length, so a 255-byte target name still leaves room. */
export function uploadTempName(): string {
  return `${UPLOAD_TEMP_PREFIX}${randomBytes(8).toString('hex')}`;
}

export function isUploadTempName(name: string): boolean {
  return UPLOAD_TEMP_NAME.test(name);
}

class RecentUploads {
  private readonly marks = new Map<string, number>();

  /** Called just before the rename that puts an upload in place. */
  mark(path: string): void {
    const now = performance.now();
    this.marks.delete(path); // re-insert: the Map stays ordered by age
    this.marks.set(path, now + MARK_LIFETIME_MS);
    for (const [oldest, expiresAt] of this.marks) {
      if (this.marks.size <= MAX_MARKS && expiresAt > now) break;
      this.marks.delete(oldest);
    }
  }

  wasJustUploaded(path: string): boolean {
    const expiresAt = this.marks.get(path);
    return expiresAt !== undefined && expiresAt > performance.now();
  }
}

export const recentUploads = new RecentUploads();
