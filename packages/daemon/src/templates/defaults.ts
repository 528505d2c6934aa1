// Resources a template's sandboxes get unless a create asks otherwise. Its
// warm snapshot is taken with these, so only creates that keep them restore.
export const TEMPLATE_DEFAULTS = { vcpus: 1, memoryMiB: 512 } as const;
