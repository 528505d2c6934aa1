// DirectoryWatch on its own (no agent): its limits, and what it reports once
// it only knows entries by name.
import { mkdirSync, mkdtempSync, realpathSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, describe, expect, it } from 'vitest';
import { EventType } from '@capsule/protocol/agent';
import { DirectoryWatch, WatchLimitError, type WatchEvent } from './directory-watch.js';

const root = realpathSync(mkdtempSync(join(tmpdir(), 'capsule-watch-test-')));
afterAll(() => rmSync(root, { recursive: true, force: true }));

async function until(condition: () => boolean, timeoutMs = 3000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!condition() && Date.now() < deadline) await sleep(10);
}

describe('DirectoryWatch', () => {
  it('refuses a tree with more directories than its limit, and fails when one is added later', async () => {
    const tree = join(root, 'limit');
    for (const name of ['a', 'b', 'c']) mkdirSync(join(tree, name), { recursive: true });
    await expect(
      DirectoryWatch.start({ root: tree, recursive: true, maxDirectories: 3, onEvents: () => {}, onError: () => {} }),
    ).rejects.toBeInstanceOf(WatchLimitError);

    let failure: Error | undefined;
    const watch = await DirectoryWatch.start({
      root: tree,
      recursive: true,
      maxDirectories: 4,
      onEvents: () => {},
      onError: (error) => (failure = error),
    });
    try {
      expect(watch.watchedDirectories).toBe(4);
      mkdirSync(join(tree, 'd'));
      await until(() => failure !== undefined);
      expect(failure).toBeInstanceOf(WatchLimitError);
      expect(watch.watchedDirectories).toBe(0); // a failed watch lets go of everything
    } finally {
      watch.close();
    }
  });

  it('still reports changes to entries it could not afford to stat', async () => {
    const dir = join(root, 'budget');
    mkdirSync(dir);
    for (const name of ['one', 'two', 'three']) writeFileSync(join(dir, name), name);
    const events: WatchEvent[] = [];
    const watch = await DirectoryWatch.start({
      root: dir,
      recursive: false,
      maxTrackedEntries: 1,
      onEvents: (batch) => events.push(...batch),
      onError: (error) => {
        throw error;
      },
    });
    try {
      rmSync(join(dir, 'two'));
      renameSync(join(dir, 'three'), join(dir, 'four'));
      writeFileSync(join(dir, 'five'), '5');
      await until(() => events.some((event) => event.name === 'five'));
      const lines = events.map((event) => `${EventType[event.type]} ${event.name}`);
      expect(lines).toContain('REMOVE two');
      // Without its inode the rename's old half looks like a removal.
      expect(lines.some((line) => line === 'REMOVE three' || line === 'RENAME three')).toBe(true);
      expect(lines).toContain('CREATE four');
      expect(lines).toContain('CREATE five');
    } finally {
      watch.close();
    }
  });
});
