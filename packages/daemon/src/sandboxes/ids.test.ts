import { describe, expect, it } from 'vitest';
import { hostnameFor, isSandboxId, newSandboxId } from './ids.js';

describe('sandbox ids', () => {
  it('are sb_ + 20 base32 characters, unique, and make valid hostnames', () => {
    const ids = new Set(Array.from({ length: 1000 }, newSandboxId));
    expect(ids.size).toBe(1000);
    for (const id of ids) expect(isSandboxId(id)).toBe(true);
    expect(hostnameFor('sb_abc')).toBe('sb-abc');
  });
});
