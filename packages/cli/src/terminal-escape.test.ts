import { describe, expect, it } from 'vitest';
import { escapeTerminalControls } from './terminal-escape.js';

describe('escapeTerminalControls', () => {
  it('shows CSI, OSC, C1 and other control sequences instead of letting the terminal run them', () => {
    const clearScreen = '\x1b[2J\x1b[H';
    const setTitle = '\x1b]0;pwned\x07';
    const clipboardWrite = '\x1b]52;c;cm0gLXJmIH4K\x1b\\';
    const c1Csi = '\u009b31m';
    const escaped = escapeTerminalControls(`boot ok\n${clearScreen}${setTitle}${clipboardWrite}${c1Csi}\b\x00\x7f`);
    expect(escaped).toBe('boot ok\n\\x1b[2J\\x1b[H\\x1b]0;pwned\\x07\\x1b]52;c;cm0gLXJmIH4K\\x1b\\\\u009b31m\\x08\\x00\\x7f');
    expect(escaped).not.toMatch(/[\x00-\x08\x0b-\x1f\x7f-\x9f]/);
  });

  it('keeps newlines, tabs, CRLF line ends and printable Unicode; a lone CR is shown', () => {
    expect(escapeTerminalControls('a\tb\r\nc\nünï 🙂\n')).toBe('a\tb\r\nc\nünï 🙂\n');
    expect(escapeTerminalControls('secret\rcover')).toBe('secret\\x0dcover');
  });
});
