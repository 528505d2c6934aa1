// The daemon's event stream (GET /v1/events, Server-Sent Events) as a hook:
// EventSource sends the session cookie and reconnects by itself, resuming
// after the last event id it saw.
import type { CapsuleEvent } from '@capsule/protocol';
import { useEffect, useRef } from 'preact/hooks';

export function useEvents(query: string, onEvent: (event: CapsuleEvent) => void): void {
  const handler = useRef(onEvent);
  handler.current = onEvent;
  useEffect(() => {
    const source = new EventSource(`/v1/events?${query}`);
    source.onmessage = (message: MessageEvent<string>) => handler.current(JSON.parse(message.data) as CapsuleEvent);
    return () => source.close();
  }, [query]);
}
