// Makes text from a sandbox safe to print on the user's terminal: control
// characters that a terminal would act on (ESC and so CSI/OSC sequences, other
// C0 controls, DEL, C1 controls) are shown as visible escapes instead. Keeps
// newlines and tabs; never drops a character, so nothing is hidden either.

// C0 except \t and \n, a \r not ending a line, DEL, and the C1 range (U+0080–U+009F).
const CONTROLS = /[\x00-\x08\x0b-\x0c\x0e-\x1f\x7f\x80-\x9f]|\r(?!\n)/g;

/** `text` with every terminal control character written as `\xNN` (C0, DEL) or `\u00NN` (C1); `\r\n` is kept as a line end. */
export function escapeTerminalControls(text: string): string {
  return text.replace(CONTROLS, (char) => {
    const code = char.charCodeAt(0);
    return code >= 0x80 ? `\\u${code.toString(16).padStart(4, '0')}` : `\\x${code.toString(16).padStart(2, '0')}`;
  });
}
