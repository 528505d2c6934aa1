// A small line chart in hand-written SVG: one series over time, its latest
// value and its peak in the title. Enough for a sandbox's CPU and memory; no
// chart library to ship.
const WIDTH = 320;
const HEIGHT = 90;

export interface ChartPoint {
  t: number;
  value: number;
}

export function LineChart({ title, points, format }: { title: string; points: ChartPoint[]; format: (value: number) => string }) {
  const last = points.at(-1);
  const peak = Math.max(0, ...points.map((p) => p.value));
  const first = points[0]?.t ?? 0;
  const span = Math.max(1, (last?.t ?? 0) - first);
  const top = peak > 0 ? peak * 1.1 : 1;
  const coordinates = points.map((p) => `${(((p.t - first) / span) * WIDTH).toFixed(1)},${(HEIGHT - (p.value / top) * HEIGHT).toFixed(1)}`);
  return (
    <figure class="chart" data-points={points.length}>
      <figcaption>
        {title}: <strong>{last ? format(last.value) : '—'}</strong>
        <span class="muted"> · peak {format(peak)}</span>
      </figcaption>
      <svg viewBox={`0 0 ${WIDTH} ${HEIGHT}`} preserveAspectRatio="none" role="img" aria-label={title}>
        <polyline points={coordinates.join(' ')} />
      </svg>
    </figure>
  );
}
