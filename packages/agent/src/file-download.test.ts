// Content-coding choices of GET /files: envd's for HTTP/2 answers, and when a
// client takes the unencoded body the bulk port sends.
import { describe, expect, it } from 'vitest';
import { acceptsIdentity, chooseEncoding } from './file-download.js';

describe('Accept-Encoding', () => {
  it.each([
    [undefined, 'identity', true],
    ['gzip, deflate', 'gzip', true],
    ['gzip;q=0.5, identity', 'identity', true],
    ['gzip, identity;q=0', 'gzip', false],
    ['gzip, *;q=0', 'gzip', false],
    ['gzip, *;q=0, identity;q=0.1', 'gzip', true],
    ['br', 'identity', true],
  ])('%s: envd serves %s; identity acceptable: %s', (header, encoding, identity) => {
    expect(chooseEncoding(header)).toBe(encoding);
    expect(acceptsIdentity(header)).toBe(identity);
  });
});
