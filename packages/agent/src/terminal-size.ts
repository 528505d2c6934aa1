// A terminal's size as PTY requests carry it (envd's `PTY.Size`), checked.
// Pure: kept apart from pseudo-terminal.ts so that using it never loads
// node-pty's native addon.

import { Code, ConnectError } from '@connectrpc/connect';
import type { PTY } from '@capsule/protocol/agent';

export interface TerminalSize {
  rows: number;
  cols: number;
}

/** winsize holds 16-bit rows and columns. */
export const MAX_TERMINAL_DIMENSION = 0xffff;

/** A PTY message's size; 0 (unknown) is accepted, as envd does, and anything a winsize cannot hold is refused. */
export function terminalSizeOf(pty: PTY): TerminalSize {
  const rows = pty.size?.rows ?? 0;
  const cols = pty.size?.cols ?? 0;
  if (rows > MAX_TERMINAL_DIMENSION || cols > MAX_TERMINAL_DIMENSION) {
    throw new ConnectError(
      `pty size ${cols}x${rows} is out of range: cols and rows must be at most ${MAX_TERMINAL_DIMENSION}`,
      Code.InvalidArgument,
    );
  }
  return { rows, cols };
}
