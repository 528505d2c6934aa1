// One daemon per state folder: an flock(2) on `<stateDir>/capsuled.lock`, held
// for the whole life of the process. A kernel lock rather than a pid file or a
// socket probe: it goes with the process however it ends (kill -9 included),
// so it is never stale, and of two daemons started at the same moment exactly
// one gets it, whether or not either is serving yet.
// Node has no flock(), and a native addon is a build step on every host for
// one call; util-linux's `flock -n 3` is given this process's open file as
// its fd 3 and locks that open file description, which this process keeps
// open after the child exits, so the lock is this process's until it dies.
// The fd is close-on-exec (libuv opens every file so): no QEMU inherits it.
// It never takes the lock from a live holder and never removes the lock file.
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';

/** `flock`'s exit status when the lock is held elsewhere (-E), apart from its own errors. */
const LOCK_HELD_STATUS = 75;

export class StateDirLocked extends Error {
  constructor(
    readonly lockFile: string,
    readonly holderPid: number | undefined,
  ) {
    super(
      `another capsuled${holderPid ? ` (pid ${holderPid})` : ''} already runs on this state folder (it holds ${lockFile}); ` +
        'talk to that one, or stop it first (`capsule daemon stop`)',
    );
    this.name = 'StateDirLocked';
  }
}

/** Takes the state folder's lock for this process's life, or throws StateDirLocked. */
export function lockStateDir(stateDir: string): void {
  const lockFile = path.join(stateDir, 'capsuled.lock');
  const fd = fs.openSync(lockFile, fs.constants.O_RDWR | fs.constants.O_CREAT | fs.constants.O_NOFOLLOW, 0o600);
  const result = spawnSync('flock', ['--nonblock', '--conflict-exit-code', String(LOCK_HELD_STATUS), '3'], {
    stdio: ['ignore', 'ignore', 'pipe', fd],
  });
  if (result.status === LOCK_HELD_STATUS) {
    const holder = Number(fs.readFileSync(fd, 'utf8').trim());
    fs.closeSync(fd);
    throw new StateDirLocked(lockFile, Number.isInteger(holder) && holder > 0 ? holder : undefined);
  }
  if (result.status !== 0) {
    fs.closeSync(fd);
    const why = result.error
      ? result.error.message
      : result.stderr.toString().trim() || `flock exited with ${result.status ?? result.signal}`;
    throw new Error(`could not lock ${lockFile}: ${why} (capsuled needs flock from util-linux)`);
  }
  // For the message a second daemon prints; the lock, not this number, is what keeps it out.
  fs.ftruncateSync(fd);
  fs.writeSync(fd, `${process.pid}\n`, 0);
  // fd stays open on purpose until the process exits: closing it would release the lock.
}
