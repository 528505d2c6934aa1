// Color on the user's terminal, and only there: off when NO_COLOR is set
// (https://no-color.org), when TERM is dumb, and when the stream is not a
// terminal (a pipe, a file), so scripts never see escape sequences.
export type Paint = (text: string, color: Color) => string;
export type Color = 'green' | 'yellow' | 'red' | 'grey';

const CODES: Record<Color, number> = { green: 32, yellow: 33, red: 31, grey: 90 };

export function colorEnabled(stream: { isTTY?: boolean } = process.stdout, env: NodeJS.ProcessEnv = process.env): boolean {
  if (env.NO_COLOR !== undefined && env.NO_COLOR !== '') return false;
  if (env.TERM === 'dumb') return false;
  return stream.isTTY === true;
}

export const noPaint: Paint = (text) => text;
export const ansiPaint: Paint = (text, color) => `\x1b[${CODES[color]}m${text}\x1b[39m`;

/** The painter for `stream` under this environment. */
export function painterFor(stream: { isTTY?: boolean } = process.stdout, env: NodeJS.ProcessEnv = process.env): Paint {
  return colorEnabled(stream, env) ? ansiPaint : noPaint;
}

/** How long `text` looks on a terminal: its color codes take no room. */
export function visibleLength(text: string): number {
  return text.replace(/\x1b\[[0-9;]*m/g, '').length;
}
