// Turns a run's results into the Markdown tables the suite prints and the
// README quotes. Pure functions over the result records (see registry.mjs for
// their shape), unit-tested in table.test.mjs.

/** A measured value with its unit, rounded to what the noise of this machine allows. */
export function formatValue(value, unit) {
  if (value === undefined || value === null || Number.isNaN(value)) return '–';
  switch (unit) {
    case 'ms':
      if (value >= 10_000) return `${(value / 1000).toFixed(1)} s`;
      if (value >= 1000) return `${(value / 1000).toFixed(2)} s`;
      if (value >= 10) return `${value.toFixed(0)} ms`;
      return `${value.toFixed(1)} ms`;
    case 'MiB':
      return `${value >= 10 ? value.toFixed(0) : value.toFixed(1)} MiB`;
    case 'MB/s':
      return `${value.toFixed(0)} MB/s`;
    case '% core':
      return `${value.toFixed(2)} % core`;
    case 'req/s':
    case 'creates/s':
      return `${value >= 10 ? value.toFixed(0) : value.toFixed(1)} ${unit}`;
    default:
      return `${value} ${unit}`;
  }
}

/** A ratio of two p50s: "35x", "4.8x", "0.26x"; nothing when one side was zero or negative (a memory drop lost in noise). */
export function formatRatio(ratio) {
  if (!Number.isFinite(ratio) || ratio <= 0) return '–';
  if (ratio >= 10) return `${ratio.toFixed(0)}x`;
  if (ratio >= 0.995) return `${ratio.toFixed(1)}x`;
  return `${ratio.toFixed(2)}x`;
}

const cell = (text) => String(text).replace(/\|/g, '\\|').replace(/\n/g, ' ');

function markdown(header, lines) {
  return [
    `| ${header.join(' | ')} |`,
    `| ${header.map(() => '---').join(' | ')} |`,
    ...lines.map((l) => `| ${l.map(cell).join(' | ')} |`),
  ].join('\n');
}

/** The main table: one line per result, with each ratio to a baseline measured in the same run. */
export function resultsTable(results) {
  const lines = results.map((r) => {
    if (r.status !== 'ok') return [r.title, '', `${r.status}: ${r.reason}`, '', ''];
    const ratios = (r.ratios ?? []).map((x) => `${formatRatio(x.value)} ${x.label}`).join('; ');
    return [r.title, String(r.n), formatValue(r.p50, r.unit), formatValue(r.p95, r.unit), ratios];
  });
  return markdown(['case', 'n', 'p50', 'p95', 'p50 vs baseline (same run)'], lines);
}

/**
 * Capsule beside the peer: each pair names a Capsule result and the peer's
 * result for the same thing; pairs whose sides did not both run say why.
 */
export function sideBySideTable(results, pairs, peerName) {
  const byId = new Map(results.map((r) => [r.id, r]));
  const lines = pairs.map(({ what, capsule, peer }) => {
    const a = byId.get(capsule);
    const b = byId.get(peer);
    const show = (r) => (r === undefined ? 'not run' : r.status === 'ok' ? formatValue(r.p50, r.unit) : r.status);
    const ratio = a?.status === 'ok' && b?.status === 'ok' && b.p50 > 0 ? formatRatio(a.p50 / b.p50) : '–';
    return [what, show(a), show(b), ratio];
  });
  return markdown(['p50', 'Capsule', peerName, `Capsule / ${peerName}`], lines);
}
