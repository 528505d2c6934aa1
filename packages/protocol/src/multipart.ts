// A streaming multipart/form-data reader (RFC 7578 / 2046) on node
// built-ins for POST /files (the agent, and the daemon taking a file out of a
// large upload for the bulk port): parts in order, each body as chunks. Holds at
// most a chunk plus a delimiter's worth of bytes and bounds parts and header
// blocks; must never buffer a part's body.

/** A body that is not valid multipart, or over a limit: the client's fault (HTTP 400). */
export class MultipartError extends Error {
  override name = 'MultipartError';
}

export interface MultipartLimits {
  maxParts: number;
  /** Bytes of one part's header block. */
  maxHeaderBytes: number;
}

export const DEFAULT_MULTIPART_LIMITS: MultipartLimits = { maxParts: 1000, maxHeaderBytes: 16 * 1024 };

/** RFC 2046: 1-70 characters from a restricted set. */
const BOUNDARY = /^[0-9A-Za-z'()+_,\-./:=? ]{0,69}[0-9A-Za-z'()+_,\-./:=?]$/;

/** Parameters of a header like Content-Type or Content-Disposition (quoted strings, RFC 2231 `name*`). */
export function parseHeaderParameters(value: string): { type: string; params: Map<string, string> } {
  const semicolon = value.indexOf(';');
  const type = (semicolon === -1 ? value : value.slice(0, semicolon)).trim().toLowerCase();
  const params = new Map<string, string>();
  const extended = new Map<string, string>();
  let rest = semicolon === -1 ? '' : value.slice(semicolon + 1);
  const pattern = /^\s*([^\s=;]+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^;]*))\s*(?:;|$)/s;
  for (;;) {
    rest = rest.replace(/^[\s;]+/, '');
    if (rest === '') break;
    const match = pattern.exec(rest);
    if (!match) break;
    const key = (match[1] ?? '').toLowerCase();
    const raw = match[2] !== undefined ? match[2].replace(/\\(.)/gs, '$1') : (match[3] ?? '').trim();
    if (key.endsWith('*')) extended.set(key.slice(0, -1), raw);
    else params.set(key, raw);
    rest = rest.slice(match[0].length);
  }
  // `filename*=UTF-8''%e2%82%ac.txt` wins over `filename=`, as in Go's mime package.
  for (const [key, raw] of extended) {
    const encoded = /^([^']*)'[^']*'(.*)$/s.exec(raw);
    if (!encoded) continue;
    const charset = (encoded[1] ?? '').toLowerCase();
    if (charset !== 'utf-8' && charset !== 'us-ascii') continue;
    try {
      params.set(key, decodeURIComponent(encoded[2] ?? ''));
    } catch {
      // Bad percent-encoding: keep the plain parameter, if any.
    }
  }
  return { type, params };
}

export function boundaryFromContentType(contentType: string | undefined): string {
  const { type, params } = parseHeaderParameters(contentType ?? '');
  if (!type.startsWith('multipart/')) throw new MultipartError(`not a multipart content type: ${contentType ?? '(none)'}`);
  const boundary = params.get('boundary');
  if (!boundary || !BOUNDARY.test(boundary)) throw new MultipartError('multipart content type without a valid boundary');
  return boundary;
}

export interface MultipartPart {
  /** Lower-case header names. */
  headers: Map<string, string>;
  /** The form field name (Content-Disposition `name`). */
  name: string | undefined;
  /** The Content-Disposition filename exactly as sent, directories included (envd relies on that). */
  filename: string | undefined;
  /** The part's bytes; read it to the end (or call nextPart, which skips the rest). */
  body(): AsyncGenerator<Buffer, void, undefined>;
}

const CRLF = Buffer.from('\r\n');
const HEADER_END = Buffer.from('\r\n\r\n');

export class MultipartReader {
  private buffer: Buffer = Buffer.alloc(0);
  private sourceDone = false;
  private readonly source: AsyncIterator<Buffer | string>;
  private readonly dashBoundary: Buffer;
  private readonly delimiter: Buffer;
  private state: 'preamble' | 'after-delimiter' | 'body' | 'done' = 'preamble';
  private parts = 0;

  constructor(
    source: AsyncIterable<Buffer | string>,
    boundary: string,
    private readonly limits: MultipartLimits = DEFAULT_MULTIPART_LIMITS,
  ) {
    this.source = source[Symbol.asyncIterator]();
    this.dashBoundary = Buffer.from(`--${boundary}`, 'latin1');
    this.delimiter = Buffer.from(`\r\n--${boundary}`, 'latin1');
  }

  /** Reads one more chunk into the buffer; false at the end of the source. */
  private async pull(): Promise<boolean> {
    if (this.sourceDone) return false;
    const next = await this.source.next();
    if (next.done) {
      this.sourceDone = true;
      return false;
    }
    const chunk = typeof next.value === 'string' ? Buffer.from(next.value) : next.value;
    this.buffer = this.buffer.length === 0 ? chunk : Buffer.concat([this.buffer, chunk]);
    return true;
  }

  private async need(bytes: number, what: string): Promise<void> {
    while (this.buffer.length < bytes) {
      if (!(await this.pull())) throw new MultipartError(`multipart body ended early (${what})`);
    }
  }

  async nextPart(): Promise<MultipartPart | undefined> {
    if (this.state === 'body') {
      for await (const skipped of this.readBody()) void skipped;
    }
    if (this.state === 'done') return undefined;
    if (this.state === 'preamble') await this.skipPreamble();
    // After a delimiter: "--" ends the body; otherwise (optional blanks) CRLF, then headers.
    await this.need(2, 'after a boundary');
    if (this.buffer[0] === 0x2d && this.buffer[1] === 0x2d) {
      this.state = 'done';
      return undefined;
    }
    let offset = 0;
    for (;;) {
      await this.need(offset + 2, 'after a boundary');
      const byte = this.buffer[offset];
      if (byte === 0x20 || byte === 0x09) offset += 1;
      else break;
      if (offset > 256) throw new MultipartError('malformed boundary line');
    }
    if (!this.buffer.subarray(offset, offset + 2).equals(CRLF)) throw new MultipartError('malformed boundary line');
    this.buffer = this.buffer.subarray(offset + 2);

    this.parts += 1;
    if (this.parts > this.limits.maxParts) throw new MultipartError(`more than ${this.limits.maxParts} parts`);
    const headers = await this.readHeaders();
    this.state = 'body';
    const disposition = parseHeaderParameters(headers.get('content-disposition') ?? '');
    return {
      headers,
      name: disposition.params.get('name'),
      filename: disposition.params.get('filename'),
      body: () => this.readBody(),
    };
  }

  private async skipPreamble(): Promise<void> {
    // The first boundary may start the body or follow a preamble line.
    for (;;) {
      if (this.buffer.length >= this.dashBoundary.length && this.buffer.subarray(0, this.dashBoundary.length).equals(this.dashBoundary)) {
        this.buffer = this.buffer.subarray(this.dashBoundary.length);
        this.state = 'after-delimiter';
        return;
      }
      const at = this.buffer.indexOf(this.delimiter);
      if (at !== -1) {
        this.buffer = this.buffer.subarray(at + this.delimiter.length);
        this.state = 'after-delimiter';
        return;
      }
      // Keep only what could be the start of a delimiter.
      if (this.buffer.length > this.delimiter.length) this.buffer = this.buffer.subarray(this.buffer.length - this.delimiter.length);
      if (!(await this.pull())) throw new MultipartError('multipart body has no boundary');
    }
  }

  private async readHeaders(): Promise<Map<string, string>> {
    let end: number;
    for (;;) {
      // No headers at all: the blank line comes first.
      if (this.buffer.length >= 2 && this.buffer.subarray(0, 2).equals(CRLF)) {
        this.buffer = this.buffer.subarray(2);
        return new Map();
      }
      end = this.buffer.indexOf(HEADER_END);
      if (end !== -1) break;
      if (this.buffer.length > this.limits.maxHeaderBytes) {
        throw new MultipartError(`a part's headers are larger than ${this.limits.maxHeaderBytes} bytes`);
      }
      if (!(await this.pull())) throw new MultipartError('multipart body ended in a part header');
    }
    if (end > this.limits.maxHeaderBytes) throw new MultipartError(`a part's headers are larger than ${this.limits.maxHeaderBytes} bytes`);
    const block = this.buffer.subarray(0, end).toString('utf8');
    this.buffer = this.buffer.subarray(end + HEADER_END.length);
    const headers = new Map<string, string>();
    let last: string | undefined;
    for (const line of block.split('\r\n')) {
      if ((line.startsWith(' ') || line.startsWith('\t')) && last !== undefined) {
        headers.set(last, `${headers.get(last) ?? ''} ${line.trim()}`); // obsolete folding
        continue;
      }
      const colon = line.indexOf(':');
      if (colon <= 0) throw new MultipartError(`malformed part header: ${line.slice(0, 64)}`);
      last = line.slice(0, colon).trim().toLowerCase();
      headers.set(last, line.slice(colon + 1).trim());
    }
    return headers;
  }

  /** Length of the longest end of the buffer that could begin a delimiter. */
  private partialDelimiterAtEnd(): number {
    const { buffer, delimiter } = this;
    for (let length = Math.min(delimiter.length - 1, buffer.length); length > 0; length -= 1) {
      const start = buffer.length - length;
      if (buffer[start] === 0x0d && buffer.subarray(start).equals(delimiter.subarray(0, length))) return length;
    }
    return 0;
  }

  private async *readBody(): AsyncGenerator<Buffer, void, undefined> {
    if (this.state !== 'body') return;
    for (;;) {
      const at = this.buffer.indexOf(this.delimiter);
      if (at !== -1) {
        const last = this.buffer.subarray(0, at);
        this.buffer = this.buffer.subarray(at + this.delimiter.length);
        this.state = 'after-delimiter';
        if (last.length > 0) yield last;
        return;
      }
      // Everything but a possible partial delimiter at the end is body. Usually
      // nothing is held back, so the next chunk needs no copying to join it.
      const safe = this.buffer.length - this.partialDelimiterAtEnd();
      if (safe > 0) {
        const chunk = this.buffer.subarray(0, safe);
        this.buffer = this.buffer.subarray(safe);
        yield chunk;
      }
      if (!(await this.pull())) throw new MultipartError('multipart body ended inside a part');
    }
  }
}
