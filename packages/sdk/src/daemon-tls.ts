// How the SDK trusts capsuled's TLS certificate on TCP: the system's CAs, a CA
// or certificate PEM the caller gives, or a pinned SHA-256 fingerprint. It must
// never send a byte of a request (API key included) to a server not yet verified.
//
// A pin is turned into an ordinary trust anchor: one handshake that sends
// nothing fetches the daemon's certificate, which is kept only if its
// fingerprint is the pinned one, and every connection then verifies against
// exactly that certificate, as OpenSSL verifies any CA.
import { X509Certificate } from 'node:crypto';
import http from 'node:http';
import https from 'node:https';
import type { Duplex } from 'node:stream';
import tls from 'node:tls';
import { ConnectionError } from './errors.js';

/** What to trust on `https://`; neither field: the system's CAs (and NODE_EXTRA_CA_CERTS). */
export interface TlsTrust {
  /** PEM certificates to trust instead of the system's: a CA, or the daemon's own certificate (`certificatePath` in `capsule daemon status`). */
  ca?: string | Buffer | undefined;
  /** The daemon certificate's SHA-256 fingerprint (`capsule daemon status`); colons and case do not matter. */
  fingerprintSha256?: string | undefined;
}

export function normalizeFingerprint(fingerprint: string): string {
  return fingerprint.replace(/[:\s]/g, '').toUpperCase();
}

/** The pinned certificate, as a PEM to verify against; rejects when the daemon shows another one. */
async function fetchPinnedCertificate(host: string, port: number, fingerprint: string): Promise<string> {
  const certificate = await fetchDaemonCertificate(host, port);
  if (normalizeFingerprint(certificate.fingerprint256) === normalizeFingerprint(fingerprint)) return certificate.toString();
  throw new ConnectionError(
    'tls_untrusted',
    `possible impersonation: capsuled at https://${host}:${port} shows a certificate with SHA-256 ${certificate.fingerprint256}, not the pinned ${fingerprint}`,
    {
      hint: 'Compare with the fingerprint `capsule daemon status` prints on the daemon host; if the daemon made a new certificate, pin the new one',
    },
  );
}

/**
 * The certificate the daemon at host:port shows, unverified: for pinning it
 * (trust on first use) or checking it against a pin. Nothing is sent.
 */
export async function fetchDaemonCertificate(host: string, port: number): Promise<X509Certificate> {
  return await new Promise<X509Certificate>((resolve, reject) => {
    // Verification is off for this handshake only: nothing is written on it, and its certificate is the caller's to check.
    const socket = tls.connect({ host, port, rejectUnauthorized: false, ...(tlsServerName(host) ? { servername: host } : {}) });
    socket.setTimeout(30_000, () => socket.destroy(new Error('the TLS handshake timed out')));
    socket.once('secureConnect', () => {
      const raw = socket.getPeerCertificate().raw;
      socket.end();
      resolve(new X509Certificate(raw));
    });
    socket.once('error', (error: NodeJS.ErrnoException) =>
      reject(
        new ConnectionError('daemon_unreachable', `Cannot reach capsuled at https://${host}:${port} (${error.code ?? error.message})`, {
          hint: 'Check the address and that capsuled listens on TCP (CAPSULE_LISTEN)',
          cause: error,
        }),
      ),
    );
  });
}

/** SNI takes host names only, never IP addresses. */
function tlsServerName(host: string): boolean {
  return !/^[\d.]+$/.test(host) && !host.includes(':');
}

/**
 * An https.Agent that connects only to the daemon it trusts. With a pin, the
 * first connection waits for the pinned certificate; host names are not
 * checked then, since the pin names the one certificate accepted.
 */
export class DaemonTlsAgent extends https.Agent {
  readonly #host: string;
  readonly #port: number;
  readonly #trust: TlsTrust;
  #pinned: Promise<string> | undefined;

  constructor(host: string, port: number, trust: TlsTrust, options: https.AgentOptions = {}) {
    super(options);
    this.#host = host;
    this.#port = port;
    this.#trust = trust;
  }

  override createConnection(options: tls.ConnectionOptions, callback: (error: Error | null, socket?: Duplex) => void): Duplex | undefined {
    const fingerprint = this.#trust.fingerprintSha256;
    if (fingerprint === undefined) return tls.connect({ ...options, ...(this.#trust.ca !== undefined ? { ca: this.#trust.ca } : {}) });
    // A failed fetch is forgotten, so that a daemon started later is reached by the next request.
    this.#pinned ??= fetchPinnedCertificate(this.#host, this.#port, fingerprint).catch((error: unknown) => {
      this.#pinned = undefined;
      throw error;
    });
    const pinned = this.#pinned;
    pinned.then(
      (ca) => callback(null, tls.connect({ ...options, ca, checkServerIdentity: () => undefined })),
      (error: Error) => callback(error),
    );
    return undefined;
  }
}

/** Node's TLS verification failures: the server is not the one trusted. */
const untrustedCodes = new Set([
  'DEPTH_ZERO_SELF_SIGNED_CERT',
  'SELF_SIGNED_CERT_IN_CHAIN',
  'UNABLE_TO_VERIFY_LEAF_SIGNATURE',
  'UNABLE_TO_GET_ISSUER_CERT_LOCALLY',
  'CERT_SIGNATURE_FAILURE',
  'CERT_HAS_EXPIRED',
  'ERR_TLS_CERT_ALTNAME_INVALID',
]);

/** A ConnectionError with the TLS advice a failure calls for, or undefined when it is no TLS failure. */
export function tlsConnectionError(error: NodeJS.ErrnoException | undefined, address: string): ConnectionError | undefined {
  if (error instanceof ConnectionError) return error;
  const code = error?.code;
  if (code !== undefined && untrustedCodes.has(code)) {
    return new ConnectionError('tls_untrusted', `capsuled at ${address} showed a certificate this client does not trust (${code})`, {
      hint: 'Pin the fingerprint `capsule daemon status` prints (tls: { fingerprintSha256 } or CAPSULE_TLS_FINGERPRINT), or trust its certificate file (tls: { ca } or CAPSULE_TLS_CA)',
      cause: error,
    });
  }
  // A TLS listener drops a plain request at once (that is its whole answer to one).
  if (address.startsWith('http://') && (code === 'ECONNRESET' || code === 'EPIPE')) {
    return new ConnectionError('daemon_unreachable', `capsuled at ${address} closed the connection at once (${code})`, {
      hint: 'capsuled serves TLS on TCP unless started with CAPSULE_LISTEN=http://…: connect with https (not tls: false)',
      cause: error,
    });
  }
  if (code === 'EPROTO' || code === 'ERR_SSL_WRONG_VERSION_NUMBER') {
    return new ConnectionError('daemon_unreachable', `capsuled at ${address} does not speak TLS (${code})`, {
      hint: 'The daemon serves plain HTTP (CAPSULE_LISTEN=http://…): connect with http:// or, better, let it serve TLS',
      cause: error,
    });
  }
  return undefined;
}

/** Where capsuled is: its unix socket, or a TCP address, over TLS unless `tls` is false. */
export type DaemonAddress =
  | { socketPath: string; apiKey?: string | undefined }
  | { host: string; port: number; apiKey?: string | undefined; tls?: TlsTrust | false | undefined };

/** The URL origin requests to this address carry: `http://capsuled` on the socket. */
export function originOf(address: DaemonAddress): string {
  if ('socketPath' in address) return 'http://capsuled';
  const host = address.host.includes(':') ? `[${address.host}]` : address.host;
  return `${address.tls === false ? 'http' : 'https'}://${host}:${address.port}`;
}

/** A connection pool for this address: TLS with its trust on TCP, unless asked for plain. */
export function agentFor(address: DaemonAddress, options: http.AgentOptions): http.Agent {
  if ('socketPath' in address || address.tls === false) return new http.Agent(options);
  return new DaemonTlsAgent(address.host, address.port, address.tls ?? {}, options);
}

/** http.request or https.request, as the address needs. */
export function requestFunctionFor(address: DaemonAddress): typeof http.request {
  return 'socketPath' in address || address.tls === false ? http.request : https.request;
}
