// A terminal in the page: xterm.js joined over a WebSocket to a login shell
// on a PTY in the sandbox (the daemon's /v1/sandboxes/{id}/terminal). The
// browser sends the session cookie with the upgrade; the daemon checks it and
// that the page is its own. xterm.js is loaded only when a terminal is shown,
// so the other pages stay small.
import type { Terminal } from '@xterm/xterm';
import '@xterm/xterm/css/xterm.css';
import { useEffect, useRef, useState } from 'preact/hooks';

export function SandboxTerminal({ sandboxId }: { sandboxId: string }) {
  const host = useRef<HTMLDivElement>(null);
  const [status, setStatus] = useState('connecting…');
  useEffect(() => {
    let closed = false;
    let close: (() => void) | undefined;
    import('@xterm/xterm').then(
      (xterm) => {
        if (!closed) close = connect(new xterm.Terminal({ cols: 100, rows: 24, fontSize: 13, cursorBlink: true }));
      },
      () => setStatus('could not load the terminal'),
    );
    return () => {
      closed = true;
      close?.();
    };
  }, [sandboxId]);

  /** Joins the terminal to a new shell in the sandbox; returns what ends both. */
  function connect(terminal: Terminal): () => void {
    terminal.open(host.current!);
    const scheme = location.protocol === 'https:' ? 'wss' : 'ws';
    const url = `${scheme}://${location.host}/v1/sandboxes/${encodeURIComponent(sandboxId)}/terminal?cols=${terminal.cols}&rows=${terminal.rows}`;
    const socket = new WebSocket(url);
    socket.binaryType = 'arraybuffer';
    const encoder = new TextEncoder();
    socket.onopen = () => {
      setStatus('connected');
      terminal.focus();
    };
    socket.onmessage = (message: MessageEvent<ArrayBuffer | string>) => {
      terminal.write(typeof message.data === 'string' ? message.data : new Uint8Array(message.data));
    };
    socket.onclose = (event) => setStatus(event.reason ? `closed (${event.reason})` : 'closed');
    const input = terminal.onData((data) => {
      if (socket.readyState === WebSocket.OPEN) socket.send(encoder.encode(data));
    });
    const resize = terminal.onResize(({ cols, rows }) => {
      if (socket.readyState === WebSocket.OPEN) socket.send(JSON.stringify({ type: 'resize', cols, rows }));
    });
    return () => {
      input.dispose();
      resize.dispose();
      socket.close();
      terminal.dispose();
    };
  }
  return (
    <div class="terminal-box">
      <div class="muted">Terminal: {status}</div>
      <div ref={host} class="terminal" data-testid="terminal" />
    </div>
  );
}
