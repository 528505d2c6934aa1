// The version of this `capsule`, read from its package.json; the bundle in
// dist/ sits one folder below it, as the sources in src/ do.
import { createRequire } from 'node:module';

export const clientVersion = (createRequire(import.meta.url)('../package.json') as { version: string }).version;
