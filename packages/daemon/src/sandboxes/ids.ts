// Sandbox ids: "sb_" and 20 random base32 characters (100 bits), safe in
// paths, hostnames (with "-" for "_") and URLs.
import { customAlphabet } from 'nanoid';

const randomBase32 = customAlphabet('abcdefghijklmnopqrstuvwxyz234567', 20);

export function newSandboxId(): string {
  return `sb_${randomBase32()}`;
}

export function isSandboxId(value: string): boolean {
  return /^sb_[a-z2-7]{20}$/.test(value);
}

export function hostnameFor(id: string): string {
  return id.replace('_', '-');
}
