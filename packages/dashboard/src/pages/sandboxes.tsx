// The sandboxes page: every sandbox with its state kept live by the event
// stream (no polling), a filter, a create form, and pause/resume/kill.
import type { CapsuleEvent, Sandbox, SandboxList, Template, TemplateList } from '@capsule/protocol';
import { useEffect, useState } from 'preact/hooks';
import { errorText, request } from '../api.js';
import { SandboxActions, StateBadge } from '../components/sandbox-actions.js';
import { useEvents } from '../events.js';
import { linkProps, navigate } from '../router.js';

export function SandboxesPage() {
  const [sandboxes, setSandboxes] = useState<Sandbox[]>();
  const [filter, setFilter] = useState('');
  const [error, setError] = useState<string>();
  const reload = () =>
    request<SandboxList>('GET', '/v1/sandboxes').then(
      (list) => setSandboxes(list.sandboxes),
      (err: unknown) => setError(errorText(err)),
    );
  useEffect(() => void reload(), []);
  useEvents('type=sandbox', (event: CapsuleEvent) => {
    const { sandboxId, state } = event;
    if (!sandboxId) return;
    // A sandbox this page has not seen (made elsewhere, or a fork): fetch the list again for its whole record.
    if (!sandboxes?.some((s) => s.id === sandboxId)) return void reload();
    if (state) setSandboxes((current) => current?.map((s) => (s.id === sandboxId ? { ...s, state, stateReason: event.reason } : s)));
  });
  const needle = filter.trim().toLowerCase();
  const shown = (sandboxes ?? []).filter(
    (s) => needle === '' || [s.id, s.name ?? '', s.template, s.state].some((field) => field.toLowerCase().includes(needle)),
  );
  return (
    <>
      <h1>Sandboxes</h1>
      <CreateSandbox onCreated={(sandbox) => navigate(`/sandboxes/${sandbox.id}`)} />
      <div class="toolbar">
        <input
          type="search"
          name="filter"
          placeholder="Filter by id, name, template or state"
          value={filter}
          onInput={(e) => setFilter(e.currentTarget.value)}
        />
      </div>
      {error && <p class="error">{error}</p>}
      {sandboxes === undefined ? (
        <p class="muted">Loading…</p>
      ) : (
        <table class="list" data-testid="sandboxes">
          <thead>
            <tr>
              <th>Sandbox</th>
              <th>Template</th>
              <th>State</th>
              <th>Resources</th>
              <th>Created</th>
              <th />
            </tr>
          </thead>
          <tbody>
            {shown.map((s) => (
              <tr key={s.id} data-sandbox={s.id}>
                <td>
                  <a {...linkProps(`/sandboxes/${s.id}`)}>{s.name ?? s.id}</a>
                  {s.name && <div class="muted mono">{s.id}</div>}
                </td>
                <td>{s.template}</td>
                <td>
                  <StateBadge state={s.state} reason={s.stateReason} />
                </td>
                <td class="muted">
                  {s.vcpus} vCPU · {s.memoryMiB} MiB
                </td>
                <td class="muted">{new Date(s.createdAt).toLocaleString()}</td>
                <td>
                  <SandboxActions sandbox={s} onError={setError} />
                </td>
              </tr>
            ))}
            {shown.length === 0 && (
              <tr>
                <td colSpan={6} class="muted">
                  {needle ? 'No sandbox matches the filter.' : 'No sandboxes yet.'}
                </td>
              </tr>
            )}
          </tbody>
        </table>
      )}
    </>
  );
}

function CreateSandbox({ onCreated }: { onCreated: (sandbox: Sandbox) => void }) {
  const [templates, setTemplates] = useState<Template[]>([]);
  const [template, setTemplate] = useState('');
  const [name, setName] = useState('');
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<string>();
  useEffect(() => {
    request<TemplateList>('GET', '/v1/templates').then(
      (list) => {
        const ready = list.templates.filter((t) => t.ready);
        setTemplates(ready);
        setTemplate((current) => current || (ready[0]?.name ?? ''));
      },
      (err: unknown) => setError(errorText(err)),
    );
  }, []);
  const submit = async (event: Event) => {
    event.preventDefault();
    setBusy(true);
    setError(undefined);
    try {
      onCreated(await request<Sandbox>('POST', '/v1/sandboxes', { template, ...(name.trim() ? { name: name.trim() } : {}) }));
    } catch (err) {
      setError(errorText(err));
    } finally {
      setBusy(false);
    }
  };
  return (
    <form class="create" onSubmit={submit}>
      <select name="template" value={template} onChange={(e) => setTemplate(e.currentTarget.value)}>
        {templates.map((t) => (
          <option key={t.name} value={t.name}>
            {t.name}
          </option>
        ))}
      </select>
      <input name="name" placeholder="name (optional)" value={name} onInput={(e) => setName(e.currentTarget.value)} />
      <button type="submit" disabled={busy || template === ''}>
        {busy ? 'Creating…' : 'Create sandbox'}
      </button>
      {error && <span class="error">{error}</span>}
    </form>
  );
}
