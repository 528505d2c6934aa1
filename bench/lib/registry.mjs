// The case registry: every file in bench/cases/ default-exports one case (or
// an array of them), and the suite runs them in `position` order. A case
// names the results it produces, each with the baselines its p50 is compared
// to; a feature that has not landed reports its results as "not available"
// with the reason, never a made-up figure.
//
// A case:
//   {
//     name: 'pause-resume',                 // what --only selects
//     position: 40,                         // run and table order; new cases may leave it out (they go last)
//     results: [{ id, title, unit: 'ms' | 'MiB' | 'MB/s' | 'req/s' | 'creates/s',
//                 baselines?: [{ id, label, factor? }] }],   // p50 / (baseline p50 * factor)
//     unavailable?: async (ctx) => reason | undefined,       // the whole case cannot run here, and why
//     run: async (ctx) => ({ [resultId]: samples[] | { samples, note?, title? } | { unavailable: reason } }),
//     // a run that throws marks all its results "failed" with the error; the suite goes on
//   }
// `ctx` is described in bench/main.mjs.
import fs from 'node:fs';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { summarize } from './stats.mjs';

export async function loadCases(dir) {
  const cases = [];
  for (const file of fs
    .readdirSync(dir)
    .filter((f) => f.endsWith('.mjs'))
    .sort()) {
    const exported = (await import(pathToFileURL(path.join(dir, file)).href)).default;
    for (const c of Array.isArray(exported) ? exported : [exported]) {
      if (!c || typeof c.name !== 'string' || !Array.isArray(c.results) || typeof c.run !== 'function') {
        throw new Error(`bench/cases/${file}: a case needs name, results and run (see bench/lib/registry.mjs)`);
      }
      cases.push({ position: 1000, ...c, file });
    }
  }
  const ids = new Set();
  for (const c of cases) {
    for (const r of c.results) {
      if (ids.has(r.id)) throw new Error(`bench/cases/${c.file}: result id ${r.id} is used twice`);
      ids.add(r.id);
    }
  }
  return cases.sort((a, b) => a.position - b.position);
}

/** Turns what a case's run returned for one of its results into a result record. */
export function resultRecord(spec, outcome) {
  const base = { id: spec.id, title: spec.title, unit: spec.unit, baselines: spec.baselines ?? [] };
  if (outcome === undefined) return { ...base, status: 'failed', reason: 'its case returned no figure for it' };
  if (outcome.failed) return { ...base, status: 'failed', reason: outcome.failed };
  if (outcome.unavailable) return { ...base, status: 'not available', reason: outcome.unavailable };
  const samples = Array.isArray(outcome) ? outcome : outcome.samples;
  if (!Array.isArray(samples) || samples.length === 0 || samples.some((s) => typeof s !== 'number' || !Number.isFinite(s))) {
    return { ...base, status: 'failed', reason: 'its case returned no valid samples' };
  }
  return {
    ...base,
    ...(outcome.title ? { title: outcome.title } : {}),
    status: 'ok',
    ...summarize(samples),
    samples,
    ...(outcome.note ? { note: outcome.note } : {}),
  };
}

/** Adds to each measured result the ratio of its p50 to each of its baselines' p50, when the baseline was measured too. */
export function addRatios(results) {
  const byId = new Map(results.map((r) => [r.id, r]));
  return results.map((r) => {
    if (r.status !== 'ok') return r;
    const ratios = [];
    for (const b of r.baselines) {
      const base = byId.get(b.id);
      if (base?.status !== 'ok' || !(base.p50 > 0)) continue; // a ratio to zero or a negative figure means nothing
      ratios.push({ to: b.id, label: b.label, value: r.p50 / (base.p50 * (b.factor ?? 1)) });
    }
    return { ...r, ratios };
  });
}
