// The certificate and key the TCP listener serves TLS with: the operator's own
// (CAPSULE_TLS_CERT / CAPSULE_TLS_KEY), or a self-signed one made at first start
// and kept in the state dir so clients can pin it across restarts. It never
// writes a key others can read, and never replaces a certificate clients pinned.
//
// Node can make keys and read certificates (X509Certificate) but cannot write
// one. node-forge writes it: pure JavaScript, no dependencies, maintained for a
// decade and working on Node 20, where shelling out to openssl would add a
// binary a fresh Debian lacks. The key itself comes from Node's own crypto.
import { generateKeyPairSync, randomBytes, X509Certificate } from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import tls from 'node:tls';
import forge from 'node-forge';
import { writeFileAtomic } from '../guest/files.js';
import type { Logger } from '../log.js';
import { GENERATED_CERT_FILE, GENERATED_KEY_FILE } from '../state-files.js';

/** Ten years: the certificate is pinned or trusted by hand, so expiry only breaks clients. */
const GENERATED_VALIDITY_DAYS = 3650;

export interface TlsIdentity {
  cert: string;
  key: string;
  /** `AB:CD:…`, as browsers and `openssl x509 -fingerprint -sha256` print it. */
  fingerprintSha256: string;
  certificatePath: string;
  /** Made by the daemon (true) or given by the operator (false). */
  generated: boolean;
}

export interface TlsOptions {
  stateDir: string;
  /** Host names and IP addresses clients use: the listen host, the sandbox domain. */
  names: readonly string[];
  /** The operator's PEM files; both or neither. */
  certFile?: string | undefined;
  keyFile?: string | undefined;
  log: Logger;
}

/** The operator's certificate when given, else the state dir's, made now if missing. */
export function loadTlsIdentity(options: TlsOptions): TlsIdentity {
  if (options.certFile !== undefined && options.keyFile !== undefined) {
    return checkedIdentity(
      readOperatorFile(options.certFile, 'CAPSULE_TLS_CERT'),
      readOperatorFile(options.keyFile, 'CAPSULE_TLS_KEY'),
      options.certFile,
      false,
    );
  }
  const certificatePath = path.join(options.stateDir, GENERATED_CERT_FILE);
  const keyPath = path.join(options.stateDir, GENERATED_KEY_FILE);
  // The key is written first, so a key alone is a start cut short: no client saw its certificate, and a new pair is made.
  if (fs.existsSync(certificatePath)) {
    if (!fs.existsSync(keyPath)) {
      throw new Error(
        `the TLS certificate ${certificatePath} has no key beside it (${keyPath}); restore the key, or remove the certificate to make a new pair (clients that pinned the old fingerprint must pin the new one)`,
      );
    }
    const identity = checkedIdentity(fs.readFileSync(certificatePath, 'utf8'), fs.readFileSync(keyPath, 'utf8'), certificatePath, true);
    warnAboutUncoveredNames(identity, options.names, keyPath, options.log);
    return identity;
  }
  const { cert, key } = generateSelfSigned(certNames(options.names));
  // The key first: a certificate without its key would be refused at the next start.
  writeFileAtomic(keyPath, key, 0o600);
  writeFileAtomic(certificatePath, cert, 0o600);
  const identity = checkedIdentity(cert, key, certificatePath, true);
  options.log.info(
    { certificatePath, fingerprintSha256: identity.fingerprintSha256 },
    'made a self-signed TLS certificate for the TCP listener',
  );
  return identity;
}

/** The SHA-256 fingerprint of a PEM or DER certificate, `AB:CD:…`. */
export function fingerprintOf(cert: string | Buffer): string {
  return new X509Certificate(cert).fingerprint256;
}

/** What the certificate must cover: each name, plus `*.<domain>` for the sandboxes' host names. */
export function certNames(names: readonly string[]): string[] {
  const all = new Set(['localhost', '127.0.0.1', '::1']);
  for (const name of names) {
    if (name === '' || name === '0.0.0.0' || name === '::') continue;
    all.add(name.toLowerCase());
  }
  for (const name of [...all]) if (net.isIP(name) === 0 && name !== 'localhost') all.add(`*.${name}`);
  return [...all];
}

function checkedIdentity(cert: string, key: string, certificatePath: string, generated: boolean): TlsIdentity {
  try {
    // Throws on a malformed PEM and on a key that does not belong to the certificate.
    tls.createSecureContext({ cert, key });
    return { cert, key, fingerprintSha256: fingerprintOf(cert), certificatePath, generated };
  } catch (err) {
    const hint = generated
      ? `remove ${certificatePath} and its key to make a new one (clients that pinned the old fingerprint must pin the new one)`
      : 'CAPSULE_TLS_CERT and CAPSULE_TLS_KEY must be a PEM certificate and the PEM private key that belongs to it';
    throw new Error(`the TLS certificate ${certificatePath} cannot be used: ${(err as Error).message}; ${hint}`);
  }
}

function readOperatorFile(file: string, variable: string): string {
  try {
    return fs.readFileSync(file, 'utf8');
  } catch (err) {
    throw new Error(
      `${variable} names ${file}, which cannot be read (${(err as NodeJS.ErrnoException).code ?? String(err)}); it must be a PEM file the daemon can read`,
    );
  }
}

/** A kept certificate is never replaced on its own (clients pinned it); say which names it misses. */
function warnAboutUncoveredNames(identity: TlsIdentity, names: readonly string[], keyPath: string, log: Logger): void {
  const certificate = new X509Certificate(identity.cert);
  const missing = names.filter(
    (name) =>
      name !== '' && name !== '0.0.0.0' && name !== '::' && !(net.isIP(name) ? certificate.checkIP(name) : certificate.checkHost(name)),
  );
  if (missing.length > 0) {
    log.warn(
      { missing, certificatePath: identity.certificatePath },
      `the TLS certificate does not cover these names; remove it and ${keyPath} to make a new one`,
    );
  }
}

function generateSelfSigned(names: readonly string[]): { cert: string; key: string } {
  const { privateKey, publicKey } = generateKeyPairSync('rsa', {
    modulusLength: 2048,
    privateKeyEncoding: { type: 'pkcs8', format: 'pem' },
    publicKeyEncoding: { type: 'spki', format: 'pem' },
  });
  const certificate = forge.pki.createCertificate();
  certificate.publicKey = forge.pki.publicKeyFromPem(publicKey);
  // A positive serial (top bit clear) of 16 random bytes, as RFC 5280 asks.
  const serial = randomBytes(16);
  serial[0] = (serial[0] ?? 0) & 0x7f;
  certificate.serialNumber = serial.toString('hex');
  const now = Date.now();
  certificate.validity.notBefore = new Date(now - 60 * 60_000);
  certificate.validity.notAfter = new Date(now + GENERATED_VALIDITY_DAYS * 24 * 60 * 60_000);
  const subject = [{ name: 'commonName', value: `capsuled on ${os.hostname()}`.slice(0, 64) }];
  certificate.setSubject(subject);
  certificate.setIssuer(subject);
  certificate.setExtensions([
    // Not a CA: a client that trusts this certificate trusts this server only, never certificates signed with its key.
    { name: 'basicConstraints', cA: false, critical: true },
    { name: 'keyUsage', digitalSignature: true, keyEncipherment: true, critical: true },
    { name: 'extKeyUsage', serverAuth: true },
    { name: 'subjectAltName', altNames: names.map((name) => (net.isIP(name) ? { type: 7, ip: name } : { type: 2, value: name })) },
    { name: 'subjectKeyIdentifier' },
  ]);
  certificate.sign(forge.pki.privateKeyFromPem(privateKey), forge.md.sha256.create());
  return { cert: forge.pki.certificateToPem(certificate), key: privateKey };
}
