// Whether a daemon serves a feature, read from its OpenAPI document, so a case
// whose feature has not landed says so instead of measuring something else.

/** `reason` when no path of the daemon's /openapi.json matches `pattern`, else undefined. */
export async function routeMissing(daemon, pattern, reason) {
  const doc = await daemon.call('GET', '/openapi.json');
  return Object.keys(doc.paths ?? {}).some((p) => pattern.test(p)) ? undefined : reason;
}
