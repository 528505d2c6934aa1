// The workloads page: each declared service with its conditions, restarts,
// last exit, sandbox and ports, kept current by the event stream, with
// restart, stop and start, and its service log on demand. Applying a file
// stays the CLI's (`capsule apply`): this page only operates what was applied.
import type { CapsuleEvent, Workload, WorkloadCondition, WorkloadList } from '@capsule/protocol';
import { useEffect, useState } from 'preact/hooks';
import { errorText, request } from '../api.js';
import { useEvents } from '../events.js';
import { linkProps } from '../router.js';

/** Lines of a service log the page asks for: its end, as `capsule logs --tail` shows. */
const LOG_TAIL = 200;

export function WorkloadsPage() {
  const [workloads, setWorkloads] = useState<Workload[]>();
  const [error, setError] = useState<string>();
  const reload = () =>
    request<WorkloadList>('GET', '/v1/workloads').then(
      (list) => setWorkloads(list.workloads),
      (err: unknown) => setError(errorText(err)),
    );
  useEffect(() => void reload(), []);
  // Workload events carry no status: each one fetches the list again, as does a state change of a workload's sandbox.
  useEvents('type=workload,sandbox', (event: CapsuleEvent) => {
    const ours = event.type.startsWith('workload.') || workloads?.some((w) => w.sandboxes.some((s) => s.id === event.sandboxId));
    if (ours) void reload();
  });
  return (
    <>
      <h1>Workloads</h1>
      <p class="muted">
        Declared in files and applied with <code>capsule apply -f FILE</code>; see docs/workloads.md.
      </p>
      {error && <p class="error">{error}</p>}
      {workloads === undefined ? (
        <p class="muted">Loading…</p>
      ) : (
        <table class="list" data-testid="workloads">
          <thead>
            <tr>
              <th>Workload</th>
              <th>Wanted</th>
              <th>Conditions</th>
              <th>Restarts</th>
              <th>Sandbox</th>
              <th>Ports</th>
              <th />
            </tr>
          </thead>
          <tbody>
            {workloads.map((w) => (
              <WorkloadRow key={w.name} workload={w} onChanged={(next) => replaceWorkload(setWorkloads, next)} onError={setError} />
            ))}
            {workloads.length === 0 && (
              <tr>
                <td colSpan={7} class="muted">
                  No workloads.
                </td>
              </tr>
            )}
          </tbody>
        </table>
      )}
    </>
  );
}

function replaceWorkload(set: (update: (current: Workload[] | undefined) => Workload[] | undefined) => void, next: Workload): void {
  set((current) => current?.map((w) => (w.name === next.name ? next : w)));
}

function WorkloadRow({
  workload: w,
  onChanged,
  onError,
}: {
  workload: Workload;
  onChanged: (workload: Workload) => void;
  onError: (message: string) => void;
}) {
  const [busy, setBusy] = useState(false);
  const [log, setLog] = useState<string>();
  const act = (action: 'restart' | 'stop' | 'start') => async () => {
    setBusy(true);
    try {
      onChanged(await request<Workload>('POST', `/v1/workloads/${encodeURIComponent(w.name)}/${action}`));
    } catch (err) {
      onError(errorText(err));
    } finally {
      setBusy(false);
    }
  };
  const showLog = async () => {
    if (log !== undefined) return setLog(undefined);
    try {
      setLog(await request<string>('GET', `/v1/workloads/${encodeURIComponent(w.name)}/logs?tail=${LOG_TAIL}`));
    } catch (err) {
      onError(errorText(err));
    }
  };
  return (
    <>
      <tr data-workload={w.name}>
        <td>
          {w.name}
          <div class="muted">{w.image ?? w.template}</div>
        </td>
        <td data-wanted={w.state}>{w.state}</td>
        <td>
          <span class="conditions">
            {w.conditions.map((c) => (
              <Condition key={c.type} condition={c} />
            ))}
          </span>
          {w.lastExit && (
            <div class="muted">
              last exit: {w.lastExit.reason}
              {w.lastExit.exitCode !== undefined ? ` (${w.lastExit.exitCode})` : ''}, {new Date(w.lastExit.at).toLocaleTimeString()}
            </div>
          )}
        </td>
        <td data-restarts={w.restarts}>{w.restarts}</td>
        <td>
          {w.sandboxes.map((s) => (
            <div key={s.id}>
              <a {...linkProps(`/sandboxes/${s.id}`)} class="mono">
                {s.id}
              </a>{' '}
              <span class="muted">{s.state}</span>
            </div>
          ))}
        </td>
        <td class="muted">{w.ports.map((p) => `${p.hostIp ?? '127.0.0.1'}:${p.host}→${p.guest}`).join(', ') || '—'}</td>
        <td>
          <span class="actions">
            <button type="button" disabled={busy} onClick={act('restart')}>
              Restart
            </button>
            {w.state === 'running' ? (
              <button type="button" disabled={busy} onClick={act('stop')}>
                Stop
              </button>
            ) : (
              <button type="button" disabled={busy} onClick={act('start')}>
                Start
              </button>
            )}
            <button type="button" class="link" onClick={() => void showLog()}>
              {log === undefined ? 'Logs' : 'Hide logs'}
            </button>
          </span>
        </td>
      </tr>
      {log !== undefined && (
        <tr>
          <td colSpan={7}>
            <pre class="console" data-testid="workload-log">
              {log || '(no output yet)'}
            </pre>
          </td>
        </tr>
      )}
    </>
  );
}

/** A condition as a badge: Ready and Progressing are good news when true, Degraded is bad news. */
function Condition({ condition: c }: { condition: WorkloadCondition }) {
  const tone = !c.status ? 'condition-false' : c.type === 'Degraded' ? 'state-error' : 'condition-true';
  return (
    <span
      class={`state ${tone}`}
      data-condition={c.type}
      data-status={String(c.status)}
      title={`${c.reason}${c.message ? `: ${c.message}` : ''} (since ${new Date(c.since).toLocaleString()})`}
    >
      {c.status ? c.type : `not ${c.type}`}
    </span>
  );
}
