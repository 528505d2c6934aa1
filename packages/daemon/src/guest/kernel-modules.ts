// Finds the load order of kernel modules without kmod: each .ko names its
// dependencies in its .modinfo section ("depends=a,b"), and the guest's busybox
// insmod needs them loaded dependencies-first.

/** Module names as the kernel knows them: dashes and underscores are the same. */
export function moduleName(fileOrName: string): string {
  return fileOrName.replace(/^.*\//, '').replace(/\.ko$/, '').replace(/-/g, '_');
}

/** Reads the `depends=` entry of a module's .modinfo section. */
export function readModuleDepends(ko: Buffer): string[] {
  const marker = Buffer.from('\0depends=');
  const at = ko.indexOf(marker);
  if (at < 0) return [];
  const start = at + marker.length;
  const end = ko.indexOf(0, start);
  const value = ko.subarray(start, end < 0 ? undefined : end).toString('latin1');
  return value === '' ? [] : value.split(',').map(moduleName);
}

/**
 * Orders `wanted` and everything they depend on so that each module comes after
 * its dependencies. `dependsOf` returns a module's direct dependencies, or
 * undefined when the module is not available (built in, or missing).
 */
export function moduleLoadOrder(wanted: string[], dependsOf: (name: string) => string[] | undefined): string[] {
  const order: string[] = [];
  const state = new Map<string, 'visiting' | 'done'>();
  const visit = (name: string, path: string[]) => {
    const seen = state.get(name);
    if (seen === 'done') return;
    if (seen === 'visiting') throw new Error(`kernel module dependency cycle: ${[...path, name].join(' -> ')}`);
    const deps = dependsOf(name);
    if (deps === undefined) {
      if (path.length === 0) throw new Error(`kernel module ${name} is not in the kernel package`);
      state.set(name, 'done'); // A dependency that is built into the kernel.
      return;
    }
    state.set(name, 'visiting');
    for (const dep of deps) visit(dep, [...path, name]);
    state.set(name, 'done');
    order.push(name);
  };
  for (const name of wanted) visit(moduleName(name), []);
  return order;
}
