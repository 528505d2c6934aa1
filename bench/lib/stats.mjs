// Summary statistics of a benchmark's samples. Pure functions: no clock, no
// I/O, so they are unit-tested (stats.test.mjs) apart from any measurement.

/** Nearest-rank percentile (p in 0..100) of a non-empty list; never interpolates, so it is always a measured value. */
export function percentile(values, p) {
  if (values.length === 0) throw new Error('percentile of no values');
  if (!(p >= 0 && p <= 100)) throw new Error(`percentile ${p} is outside 0..100`);
  const sorted = [...values].sort((a, b) => a - b);
  const rank = Math.max(1, Math.ceil((p / 100) * sorted.length));
  return sorted[rank - 1];
}

/** n, p50, p95, min, max and mean of a case's samples; p95 is left out below 5 samples, where it would only be the maximum. */
export function summarize(samples) {
  if (samples.length === 0) throw new Error('no samples to summarize');
  const summary = {
    n: samples.length,
    p50: percentile(samples, 50),
    p95: samples.length >= 5 ? percentile(samples, 95) : undefined,
    min: Math.min(...samples),
    max: Math.max(...samples),
    mean: samples.reduce((a, b) => a + b, 0) / samples.length,
  };
  return summary;
}
