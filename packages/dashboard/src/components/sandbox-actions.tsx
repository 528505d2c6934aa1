// A sandbox's state as a badge, and the buttons that change it. The buttons
// only ask; the new state arrives through the event stream like anyone else's change.
import type { Sandbox, SandboxState } from '@capsule/protocol';
import { useState } from 'preact/hooks';
import { errorText, request } from '../api.js';

export function StateBadge({ state, reason }: { state: SandboxState; reason?: string }) {
  return (
    <span class={`state state-${state}`} data-state={state} title={reason ? `reason: ${reason}` : undefined}>
      {state}
    </span>
  );
}

export function SandboxActions({ sandbox, onError }: { sandbox: Pick<Sandbox, 'id' | 'state'>; onError: (message: string) => void }) {
  const [busy, setBusy] = useState(false);
  const act = (method: string, path: string, body?: unknown) => async () => {
    setBusy(true);
    try {
      await request(method, `/v1/sandboxes/${encodeURIComponent(sandbox.id)}${path}`, body);
    } catch (err) {
      onError(errorText(err));
    } finally {
      setBusy(false);
    }
  };
  const { state } = sandbox;
  return (
    <span class="actions">
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
