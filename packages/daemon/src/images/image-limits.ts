// Every bound the daemon puts on what an image may make it read, hold or
// write, in one place. Images come from anyone; each value is far above what
// real images need and far below what would hurt the daemon (RSS under 300 MB).
// Nothing here may be read from the image itself.

const KiB = 1024;
const MiB = 1024 * KiB;
const GiB = 1024 * MiB;

export const LIMITS = {
  /** Manifests and indexes are read into memory. The largest public indexes (many platforms, attestations) are under 100 KiB. */
  manifestBytes: 4 * MiB,
  /** Image configs are read into memory. Configs with a long history are tens of KiB; refused before download by their descriptor's size. */
  configBytes: 4 * MiB,
  /** Layers per image: Docker itself stops at 127; each layer costs a pass over its tar. */
  layers: 256,
  /** Tar entries per layer. The busiest public layers (TeX, big node_modules) hold ~300k; the applier remembers each entry of a layer. */
  layerEntries: 500_000,
  /** Uncompressed bytes of one layer. The largest public ML layers are ~10 GiB; beyond 32 GiB is a bomb or a mistake. */
  layerBytes: 32 * GiB,
  /**
   * Uncompressed bytes per compressed byte beyond the first `expansionFreeBytes`.
   * Real layers expand 2-10x; a gzip of zeros expands ~1000x and is how a 20 KB
   * layer asks for gigabytes.
   */
  expansionRatio: 100,
  /** Uncompressed bytes any layer may have whatever its ratio (a layer holding a big file of zeros). */
  expansionFreeBytes: 1 * GiB,
  /** One pax extended header or GNU long name/link record, read into memory. Real ones hold a path and a few xattrs. */
  paxHeaderBytes: 1 * MiB,
  /** All global pax headers of a layer together: they apply to every later entry, so they are kept for the whole layer. */
  globalPaxBytes: 64 * KiB,
  /** One xattr value: the kernel's own ceiling (XATTR_SIZE_MAX). */
  xattrValueBytes: 64 * KiB,
  /** One xattr name: the kernel's own ceiling (XATTR_NAME_MAX). */
  xattrNameBytes: 255,
} as const;

/** How many uncompressed bytes a layer of `compressedBytes` may unpack to. */
export function layerByteAllowance(compressedBytes: number): number {
  return Math.min(LIMITS.layerBytes, Math.max(LIMITS.expansionFreeBytes, compressedBytes * LIMITS.expansionRatio));
}
