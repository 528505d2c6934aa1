// The in-process feed of history rows as they are committed: the store
// publishes each sandbox transition and each template or image event here, so
// live readers (the event stream, webhooks) never poll the database for them.
// A listener must return at once and never throw: it runs inside the writer's await.

export interface SandboxEventRecorded {
  kind: 'sandbox';
  /** The sandbox_events row's id. */
  id: number;
  sandboxId: string;
  template: string;
  state: string;
  reason: string;
  message: string | null;
  at: string;
}

export interface ResourceEventRecorded {
  kind: 'resource';
  /** The resource_events row's id. */
  id: number;
  type: string;
  template: string | null;
  image: string | null;
  workload: string | null;
  reason: string;
  message: string | null;
  at: string;
}

export type RecordedEvent = SandboxEventRecorded | ResourceEventRecorded;

export class EventFeed {
  readonly #listeners = new Set<(event: RecordedEvent) => void>();

  /** Calls `listener` with every event recorded from now on; returns the unsubscribe. */
  subscribe(listener: (event: RecordedEvent) => void): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  publish(event: RecordedEvent): void {
    for (const listener of this.#listeners) {
      try {
        listener(event);
      } catch {
        // The row is committed: a reader's fault must not fail the write that made it.
      }
    }
  }
}
