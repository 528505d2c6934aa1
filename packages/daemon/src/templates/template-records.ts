// What a template's rows mean beyond the `templates` table: the defaults a
// template built from an image or a Capsulefile gives its sandboxes (Env,
// User, WorkingDir) and the service its VM runs (START, READY), and whether
// its files are all there. Reads rows through store/; never writes them.
import fs from 'node:fs';
import type { TemplateRecord } from '../store/store.js';
import type { TemplateImageRecord } from '../store/templates.js';
import { DEFAULT_READY_TIMEOUT_MS } from './capsulefile.js';
import type { TemplateService } from './template-service.js';

export interface TemplateImageDefaults {
  imageDigest: string;
  env: Record<string, string>;
  user: string;
  workdir: string | undefined;
}

/** What a template built from an image or a Capsulefile gives its sandboxes. */
export function imageDefaultsOf(row: TemplateImageRecord): TemplateImageDefaults {
  return {
    imageDigest: row.image_digest ?? '',
    env: JSON.parse(row.env) as Record<string, string>,
    user: row.user,
    workdir: row.workdir ?? undefined,
  };
}

/** The START and READY a template's VM runs before its warm snapshot, with the template's defaults; undefined without START. */
export function serviceOf(row: TemplateImageRecord | undefined): TemplateService | undefined {
  if (!row?.start_cmd) return undefined;
  return {
    start: JSON.parse(row.start_cmd) as string[],
    ready: row.ready_cmd
      ? { cmd: JSON.parse(row.ready_cmd) as string[], timeoutMs: row.ready_timeout_ms ?? DEFAULT_READY_TIMEOUT_MS }
      : undefined,
    user: row.user,
    cwd: row.workdir ?? undefined,
    env: JSON.parse(row.env) as Record<string, string>,
  };
}

/** The first of the files a template boots from that is missing; undefined when the template is ready to boot. */
export function missingTemplateFile(template: TemplateRecord): string | undefined {
  return [template.kernel, template.initramfs, template.kit, template.rootfs].find((file) => !fs.existsSync(file));
}
