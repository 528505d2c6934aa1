// A sandbox's state as a badge, and the buttons that change it. The buttons
// only ask; the new state arrives through the event stream like anyone else's change.
// A snapshot asks for the new template's name in place, then says where it went.
import type { Sandbox, SandboxState, Template } from '@capsule/protocol';
import { useState } from 'preact/hooks';
import { errorText, request } from '../api.js';
import { linkProps } from '../router.js';

export function StateBadge({ state, reason }: { state: SandboxState; reason?: string }) {
  return (
    <span class={`state state-${state}`} data-state={state} title={reason ? `reason: ${reason}` : undefined}>
      {state}
    </span>
  );
}

export function SandboxActions({ sandbox, onError }: { sandbox: Pick<Sandbox, 'id' | 'state'>; onError: (message: string) => void }) {
  const [busy, setBusy] = useState(false);
  /** The snapshot's template name while it is being asked for. */
  const [naming, setNaming] = useState<string>();
  const [snapshotTemplate, setSnapshotTemplate] = useState<string>();
  const call = async <T,>(method: string, path: string, body?: unknown): Promise<T | undefined> => {
    setBusy(true);
    try {
      return await request<T>(method, `/v1/sandboxes/${encodeURIComponent(sandbox.id)}${path}`, body);
    } catch (err) {
      onError(errorText(err));
      return undefined;
    } finally {
      setBusy(false);
    }
  };
  const act = (method: string, path: string, body?: unknown) => () => void call(method, path, body);
  const snapshot = async (event: Event) => {
    event.preventDefault();
    const template = await call<Template>('POST', '/snapshot', { template: naming?.trim() });
    if (!template) return;
    setNaming(undefined);
    setSnapshotTemplate(template.name);
  };
  const { state } = sandbox;
  if (naming !== undefined)
    return (
      <form class="actions" onSubmit={snapshot}>
        <input
          name="snapshotTemplate"
          placeholder="new template name"
          value={naming}
          onInput={(e) => setNaming(e.currentTarget.value)}
          required
        />
        <button type="submit" disabled={busy || naming.trim() === ''}>
          {busy ? 'Saving…' : 'Save snapshot'}
        </button>
        <button type="button" class="link" disabled={busy} onClick={() => setNaming(undefined)}>
          Cancel
        </button>
      </form>
    );
  return (
    <span class="actions">
      {snapshotTemplate && (
        <span class="muted" data-snapshot={snapshotTemplate}>
          saved as template <a {...linkProps('/templates')}>{snapshotTemplate}</a>
        </span>
      )}
      {state === 'running' && (
        <button type="button" disabled={busy} onClick={act('POST', '/pause')}>
          Pause
        </button>
      )}
      {state === 'running' && (
        <button
          type="button"
          disabled={busy}
          onClick={act('POST', '/fork', { count: 1 })}
          title="Start a copy that continues from this moment"
        >
          Fork
        </button>
      )}
      {state === 'running' && (
        <button
          type="button"
          disabled={busy}
          onClick={() => setNaming('')}
          title="Save this moment (memory, processes, disk) as a new warm template; the sandbox runs on"
        >
          Snapshot
        </button>
      )}
      {state === 'paused' && (
        <button type="button" disabled={busy} onClick={act('POST', '/resume')}>
          Resume
        </button>
      )}
      {state !== 'killed' && (
        <button type="button" class="danger" disabled={busy} onClick={act('DELETE', '')}>
          Kill
        </button>
      )}
    </span>
  );
}
