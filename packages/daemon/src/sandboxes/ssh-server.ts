// A sandbox's SSH server, started the first time someone connects, so an idle
// sandbox runs no sshd. Host keys are made inside the guest for the sandbox's
// own identity (its hostname) and sshd listens on the guest's loopback only,
// reached through the agent's tunnel. What the guest prints is never trusted:
// it must parse as public host keys, or the start fails.
import type { ExecResult } from '@capsule/protocol';
import { CapsuleError } from '../errors.js';

/** The exit status the script ends with when the sandbox has no sshd at all. */
const NO_SSH_SERVER = 3;
/** Making a key and starting sshd: a second or two under TCG; anything near this is stuck. */
export const SSH_START_TIMEOUT_MS = 30_000;
/** A few key lines; a guest printing more is not answering this script. */
export const SSH_START_OUTPUT_LIMIT_BYTES = 16 * 1024;
const MAX_HOST_KEYS = 8;

/**
 * Run as root by the guest's /bin/sh. Keys carry `capsule@HOSTNAME` as their
 * comment: keys (and a server holding them) made under another hostname came
 * with a disk or memory copied from another sandbox (a fork, a snapshot, a
 * warm template) and are replaced before anyone is let in. A restart of the
 * same sandbox keeps its hostname, so its keys, and the pins made of them.
 */
export const START_SSH_SERVER_SCRIPT = `
[ -x /usr/sbin/sshd ] && command -v ssh-keygen >/dev/null || { echo "this sandbox has no OpenSSH server (/usr/sbin/sshd, ssh-keygen)" >&2; exit ${NO_SSH_SERVER}; }
key=/etc/ssh/ssh_host_ed25519_key
host=$(cat /proc/sys/kernel/hostname)
server_pid() { pid=$(cat /run/sshd.pid 2>/dev/null) && kill -0 "$pid" 2>/dev/null && echo "$pid"; }
if [ "$(cut -d ' ' -f 3 "$key.pub" 2>/dev/null)" != "capsule@$host" ]; then
  if old=$(server_pid); then
    kill "$old"
    while kill -0 "$old" 2>/dev/null; do sleep 0.05; done
  fi
  rm -f /etc/ssh/ssh_host_*
  ssh-keygen -q -t ed25519 -N '' -C "capsule@$host" -f "$key" || exit 1
fi
if ! server_pid >/dev/null; then
  mkdir -p -m 0755 /run/sshd
  /usr/sbin/sshd -h "$key" -o ListenAddress=127.0.0.1 -o PasswordAuthentication=no -o KbdInteractiveAuthentication=no || exit 1
fi
cat "$key.pub"
`;

const HOST_KEY_LINE = /^(ssh-ed25519|ecdsa-sha2-nistp256|ssh-rsa) ([A-Za-z0-9+/]{1,2048}={0,2})(?: [^\n]*)?$/;

/** The key blob names its own type first (RFC 4253 string): a line whose blob disagrees is not a key. */
function blobHasType(base64: string, type: string): boolean {
  const blob = Buffer.from(base64, 'base64');
  if (blob.length < 4) return false;
  const length = blob.readUInt32BE(0);
  return length === type.length && blob.subarray(4, 4 + length).toString('latin1') === type;
}

/**
 * The host keys (`TYPE BASE64`, comments dropped) the start script printed, or
 * the error that says why there are none.
 */
export function hostKeysFromStart(result: ExecResult, id: string): string[] {
  if (result.exitCode === NO_SSH_SERVER) {
    throw new CapsuleError('ssh_unavailable', `sandbox ${id} has no SSH server`, {
      hint: 'use a template with OpenSSH (the base template has it), or install openssh-server in yours',
    });
  }
  if (result.exitCode !== 0) {
    throw new CapsuleError(
      'exec_failed',
      `the SSH server of sandbox ${id} did not start: ${result.stderr.trim().slice(-400) || `status ${result.exitCode}`}`,
    );
  }
  const keys: string[] = [];
  for (const line of result.stdout.split('\n')) {
    if (line.trim() === '') continue;
    const match = HOST_KEY_LINE.exec(line.trim());
    if (!match || !blobHasType(match[2] ?? '', match[1] ?? '')) {
      throw new CapsuleError('agent_protocol_error', `sandbox ${id} answered the SSH server start with something other than host keys`);
    }
    keys.push(`${match[1]} ${match[2]}`);
  }
  if (keys.length === 0 || keys.length > MAX_HOST_KEYS) {
    throw new CapsuleError('agent_protocol_error', `sandbox ${id} reported ${keys.length} SSH host keys`);
  }
  return keys;
}
