// What `capsule logs -f` prints of each new read of a console log: the daemon
// serves the log's last MiB or two, so consecutive reads overlap, and one
// taken after the log was cut over (it rotates) may not overlap at all.
// Pure functions, so that the overlap rules are tested without a daemon.

/** How much of what was printed last is looked for in the next read. */
const ANCHOR_BYTES = 4096;

/** The last `lines` lines of `log` (a trailing partial line counts as one). */
export function lastLines(log: string, lines: number): string {
  if (lines <= 0) return '';
  let at = log.length;
  if (log.endsWith('\n')) at -= 1;
  for (let n = 0; n < lines; n++) {
    const newline = log.lastIndexOf('\n', at - 1);
    if (newline < 0) return log;
    at = newline;
  }
  return log.slice(at + 1);
}

/**
 * What `next` adds after `printed` (everything printed so far; only its end
 * is used): the part after the last place `printed`'s end occurs in `next`.
 * `cut` is set when `next` does not contain it: the log moved on more than a
 * read holds between two reads, and all of `next` is new.
 */
export function newPart(printed: string, next: string): { text: string; cut: boolean } {
  if (printed === '') return { text: next, cut: false };
  const anchor = printed.slice(-ANCHOR_BYTES);
  const at = next.lastIndexOf(anchor);
  if (at < 0) return { text: next, cut: true };
  return { text: next.slice(at + anchor.length), cut: false };
}
