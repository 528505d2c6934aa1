// One sandbox: its state (live through the event stream) and history, its
// metrics as charts (the daemon's sampled history, refreshed every few
// seconds), its serial console, its files, and a terminal while it runs.
import type { CapsuleEvent, Sandbox, SandboxMetrics, StateTransition } from '@capsule/protocol';
import { useEffect, useState } from 'preact/hooks';
import { errorText, request } from '../api.js';
import { FileBrowser } from '../components/file-browser.js';
import { type ChartPoint, LineChart } from '../components/line-chart.js';
import { SandboxActions, StateBadge } from '../components/sandbox-actions.js';
import { SandboxTerminal } from '../components/terminal.js';
import { useEvents } from '../events.js';

const REFRESH_MS = 3000;

export function SandboxPage({ id }: { id: string }) {
  const [sandbox, setSandbox] = useState<Sandbox>();
  const [error, setError] = useState<string>();
  const base = `/v1/sandboxes/${encodeURIComponent(id)}`;
  const reload = () =>
    request<Sandbox>('GET', base).then(
      (found) => setSandbox(found),
      (err: unknown) => setError(errorText(err)),
    );
  useEffect(() => void reload(), [id]);
  useEvents(`sandbox=${encodeURIComponent(id)}`, (event: CapsuleEvent) => {
    if (!event.state) return;
    const transition: StateTransition = {
      state: event.state,
      reason: event.reason,
      at: event.at,
      ...(event.message ? { message: event.message } : {}),
    };
    setSandbox(
      (current) =>
        current && {
          ...current,
          state: transition.state,
          stateReason: transition.reason,
          history: [...(current.history ?? []), transition],
        },
    );
  });
  if (!sandbox) return error ? <p class="error">{error}</p> : <p class="muted">Loading…</p>;
  const running = sandbox.state === 'running';
  return (
    <>
      <h1>
        {sandbox.name ?? sandbox.id} <StateBadge state={sandbox.state} reason={sandbox.stateReason} />
      </h1>
      <p class="muted mono">
        {sandbox.id} · {sandbox.template} · {sandbox.vcpus} vCPU · {sandbox.memoryMiB} MiB · {sandbox.accel}
      </p>
      <SandboxActions sandbox={sandbox} onError={setError} />
      {error && <p class="error">{error}</p>}
      <section>
        <h2>Metrics</h2>
        <MetricsCharts base={base} live={running} />
      </section>
      {running && (
        <section>
          <h2>Terminal</h2>
          <SandboxTerminal sandboxId={sandbox.id} />
        </section>
      )}
      {running && (
        <section>
          <h2>Files</h2>
          <FileBrowser sandboxId={sandbox.id} />
        </section>
      )}
      <section>
        <h2>State history</h2>
        <ol class="history" data-testid="history">
          {(sandbox.history ?? []).map((h) => (
            <li key={`${h.at}-${h.state}`}>
              <StateBadge state={h.state} /> <span class="muted">{new Date(h.at).toLocaleString()}</span> {h.reason}
              {h.message && <span class="muted"> — {h.message}</span>}
            </li>
          ))}
        </ol>
      </section>
      <section>
        <h2>Console</h2>
        <ConsoleLog base={base} live={running} />
      </section>
    </>
  );
}

function MetricsCharts({ base, live }: { base: string; live: boolean }) {
  const [metrics, setMetrics] = useState<SandboxMetrics>();
  useEffect(() => {
    const load = () => request<SandboxMetrics>('GET', `${base}/metrics`).then(setMetrics, () => undefined);
    void load();
    if (!live) return;
    const timer = setInterval(load, REFRESH_MS);
    return () => clearInterval(timer);
  }, [base, live]);
  const series = (pick: (p: SandboxMetrics['points'][number]) => number | undefined): ChartPoint[] =>
    (metrics?.points ?? []).flatMap((p) => {
      const value = pick(p);
      return value === undefined ? [] : [{ t: Date.parse(p.timestamp), value }];
    });
  if (metrics?.intervalMs === 0) return <p class="muted">Sampling is off on this daemon (CAPSULE_METRICS_INTERVAL_MS=0).</p>;
  return (
    <div class="charts" data-testid="charts">
      <LineChart title="CPU" points={series((p) => p.cpuPercent)} format={(v) => `${v.toFixed(1)} %`} />
      <LineChart title="Memory (resident)" points={series((p) => p.memoryRssBytes)} format={mebibytes} />
      <LineChart title="Disk written" points={series((p) => p.diskAllocatedBytes)} format={mebibytes} />
      {/* Only TAP sandboxes have their NIC counted (docs/api.md, network bytes). */}
      {metrics?.points.some((p) => p.networkReceivedBytes !== undefined) && (
        <LineChart title="Network received" points={series((p) => p.networkReceivedBytes)} format={mebibytes} />
      )}
    </div>
  );
}

function ConsoleLog({ base, live }: { base: string; live: boolean }) {
  const [text, setText] = useState('');
  useEffect(() => {
    const load = () => request<string>('GET', `${base}/logs`).then(setText, () => undefined);
    void load();
    if (!live) return;
    const timer = setInterval(load, REFRESH_MS * 2);
    return () => clearInterval(timer);
  }, [base, live]);
  return <pre class="console">{text.slice(-20_000) || '(empty)'}</pre>;
}

function mebibytes(bytes: number): string {
  return `${(bytes / 1024 / 1024).toFixed(1)} MiB`;
}
