// Creates the missing directories of a path one level at a time, each 0755
// and owned by the requesting user (envd's EnsureDirs), for MakeDir, Move and
// uploads. Must never chown a directory it did not create, and never replace
// a file that is in the way (that is an error).

import { chown, mkdir, stat } from 'node:fs/promises';
import { dirname } from 'node:path';

/** A component of the path exists and is not a directory. */
export class NotADirectoryError extends Error {
  override name = 'NotADirectoryError';
}

function ancestorsAndSelf(path: string): string[] {
  const paths: string[] = [];
  for (let current = path; current !== dirname(current); current = dirname(current)) paths.unshift(current);
  return paths;
}

/** Resolves to true when `path` itself was created. */
export async function ensureDirectories(path: string, owner: { uid: number; gid: number }): Promise<boolean> {
  let createdLast = false;
  for (const current of ancestorsAndSelf(path)) {
    createdLast = false;
    const existing = await stat(current).catch((error: NodeJS.ErrnoException) => {
      if (error.code === 'ENOENT') return undefined;
      throw error;
    });
    if (existing) {
      if (!existing.isDirectory()) throw new NotADirectoryError(`path is a file: ${current}`);
      continue;
    }
    try {
      await mkdir(current, { mode: 0o755 });
    } catch (error) {
      // Someone else made it in between: fine if it is a directory.
      if ((error as NodeJS.ErrnoException).code === 'EEXIST' && (await stat(current)).isDirectory()) continue;
      throw error;
    }
    await chown(current, owner.uid, owner.gid);
    createdLast = true;
  }
  return createdLast;
}
