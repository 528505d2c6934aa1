// Splits a byte stream into newline-delimited JSON values. Lines are cut on raw
// bytes before decoding, so chunk boundaries inside a line or inside a UTF-8
// character are harmless; a line longer than maxLineBytes is an error, never unbounded memory.
import { CapsuleError } from './errors.js';

export const DEFAULT_MAX_NDJSON_LINE_BYTES = 8 * 1024 * 1024;

const NEWLINE = 0x0a;

export async function* parseNdjson(
  source: AsyncIterable<Uint8Array>,
  { maxLineBytes = DEFAULT_MAX_NDJSON_LINE_BYTES }: { maxLineBytes?: number } = {},
): AsyncGenerator<unknown, void, undefined> {
  let pending: Buffer[] = [];
  let pendingBytes = 0;
  let lineNumber = 0;

  const parseLine = (bytes: Buffer): { value: unknown } | undefined => {
    lineNumber++;
    const text = bytes.toString('utf8').trim();
    if (text === '') return undefined;
    try {
      return { value: JSON.parse(text) as unknown };
    } catch {
      throw new CapsuleError(
        'protocol_error',
        `capsuled sent a line that is not JSON (line ${lineNumber}: ${JSON.stringify(text.slice(0, 80))})`,
      );
    }
  };
  const tooLong = () =>
    new CapsuleError('protocol_error', `capsuled sent a line longer than ${maxLineBytes} bytes (line ${lineNumber + 1})`);

  for await (const chunk of source) {
    const buffer = Buffer.isBuffer(chunk) ? chunk : Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength);
    let start = 0;
    for (let newline = buffer.indexOf(NEWLINE, start); newline !== -1; newline = buffer.indexOf(NEWLINE, start)) {
      const piece = buffer.subarray(start, newline);
      if (pendingBytes + piece.length > maxLineBytes) throw tooLong();
      const line = pendingBytes === 0 ? piece : Buffer.concat([...pending, piece]);
      pending = [];
      pendingBytes = 0;
      start = newline + 1;
      const parsed = parseLine(line);
      if (parsed) yield parsed.value;
    }
    if (start < buffer.length) {
      const rest = buffer.subarray(start);
      if (pendingBytes + rest.length > maxLineBytes) throw tooLong();
      // Copy: the source may reuse its chunk buffers.
      pending.push(Buffer.from(rest));
      pendingBytes += rest.length;
    }
  }
  // A last line without its newline is still a line.
  if (pendingBytes > 0) {
    const parsed = parseLine(Buffer.concat(pending));
    if (parsed) yield parsed.value;
  }
}
