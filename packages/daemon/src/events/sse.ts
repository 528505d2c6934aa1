// Server-Sent Events framing (the WHATWG `text/event-stream` format): one
// message as `id`, `event` and `data` lines and a blank line, and comments.
// A field value never carries a line break into the stream: data is split
// into lines, and an id or event name with one is refused.

export interface SseMessage {
  id?: string;
  event?: string;
  data: string;
}

const LINE_BREAK = /\r\n|\r|\n/;

export function formatSseMessage(message: SseMessage): string {
  let text = '';
  for (const [field, value] of [
    ['id', message.id],
    ['event', message.event],
  ] as const) {
    if (value === undefined) continue;
    // A line break would end the field early; a NUL in an id makes browsers ignore it.
    if (LINE_BREAK.test(value) || value.includes('\0')) throw new Error(`an SSE ${field} may not hold a line break or NUL`);
    text += `${field}: ${value}\n`;
  }
  for (const line of message.data.split(LINE_BREAK)) text += `data: ${line}\n`;
  return `${text}\n`;
}

/** A comment line: ignored by clients, it keeps proxies from closing a quiet stream. */
export function formatSseComment(text: string): string {
  return `: ${text.replace(/\r\n|\r|\n/g, ' ')}\n\n`;
}
