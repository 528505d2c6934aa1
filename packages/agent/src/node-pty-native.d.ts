// The part of node-pty's native addon (pinned to 1.1.0 in package.json) that
// pseudo-terminal.ts calls. The bundle copies the addon next to itself (the
// esbuild `copy` loader), so the kit ships it as /opt/capsule/agent/pty.node.
declare module 'node-pty/build/Release/pty.node' {
  interface ForkedTerminal {
    /** The master side, non-blocking. */
    fd: number;
    pid: number;
    /** The slave's path, /dev/pts/N. */
    pty: string;
  }

  const native: {
    /**
     * forkpty(3): the child gets a new session with the terminal as its
     * controlling terminal and stdin/stdout/stderr, its signal handlers reset,
     * then chdir, setgid+setuid (when both are not -1) and execvp. `utf8` sets
     * IUTF8. A separate thread waits for the child and calls `onExit` with its
     * exit code and terminating signal number (0 when none).
     */
    fork(
      file: string,
      args: string[],
      env: string[],
      cwd: string,
      cols: number,
      rows: number,
      uid: number,
      gid: number,
      utf8: boolean,
      helperPath: string,
      onExit: (exitCode: number, signal: number) => void,
    ): ForkedTerminal;
    /** TIOCSWINSZ on the master: the kernel sends SIGWINCH to the foreground process group. */
    resize(fd: number, cols: number, rows: number): void;
  };
  export default native;
}
