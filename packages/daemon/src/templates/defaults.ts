// Resources a template's sandboxes get unless a create asks otherwise, and the
// template records the guest manifest describes. A template's warm snapshot is
// taken with these resources, so only creates that keep them restore.
import type { GuestManifest } from '../guest/manifest.js';
import type { TemplateRecord } from '../store/store.js';

export const TEMPLATE_DEFAULTS = { vcpus: 1, memoryMiB: 512 } as const;

/** The templates a guest manifest names, as the store keeps them. */
export function templatesFromManifest(manifest: GuestManifest): TemplateRecord[] {
  return Object.entries(manifest.templates).map(([name, template]) => ({
    name,
    kernel: manifest.kernel,
    initramfs: manifest.initramfs,
    kit: manifest.kit,
    rootfs: template.rootfs,
    default_vcpus: TEMPLATE_DEFAULTS.vcpus,
    default_memory_mib: TEMPLATE_DEFAULTS.memoryMiB,
    created_at: new Date().toISOString(),
  }));
}
