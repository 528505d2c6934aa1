// Content keys for build artefacts: an artefact is reused only while the key of
// its inputs is unchanged, so editing the init script, the agent or the package
// list rebuilds exactly what depends on it and nothing else.
import { createHash } from 'node:crypto';
import fs from 'node:fs';

export class CacheKey {
  private readonly hash = createHash('sha256');

  /** Mixes in a labelled value (a version, a list, an option). */
  add(label: string, value: string | Buffer): this {
    this.hash.update(`${label}\0${value.length}\0`);
    this.hash.update(value);
    return this;
  }

  /** Mixes in a file's contents. */
  addFile(label: string, file: string): this {
    return this.add(label, fs.readFileSync(file));
  }

  /** A short hex key, long enough to never collide among a host's artefacts. */
  digest(): string {
    return this.hash.digest('hex').slice(0, 16);
  }
}
