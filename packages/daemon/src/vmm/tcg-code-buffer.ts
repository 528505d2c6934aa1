// The size of TCG's buffer of translated guest code, for the QEMUs this
// process starts: set once by the daemon at start (CAPSULE_TCG_CODE_BUFFER_MIB),
// read by the command line (qemu.ts) and the memory limit (jail.ts). It never
// changes a running VM; under KVM there is no such buffer. The default, and
// how it was chosen, is config.ts's.
import { DEFAULT_TCG_CODE_BUFFER_MIB } from '../config.js';

let codeBufferMiB = DEFAULT_TCG_CODE_BUFFER_MIB;

/** Sets the buffer of the TCG VMs started from now on. */
export function useTcgCodeBuffer(mib: number): void {
  codeBufferMiB = mib;
}

export function tcgCodeBufferMiB(): number {
  return codeBufferMiB;
}
