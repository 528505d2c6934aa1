// Test-only: `CAPSULE_TEST_DELAY_<STEP>_MS` stalls one step of the daemon so
// that a test's kill -9 (or a second daemon) lands in the middle of it. Unset,
// as it is outside tests, it does nothing; it must never change what a step does.
import { setTimeout as sleep } from 'node:timers/promises';

export type DelayedStep = 'SERVE' | 'PAUSE' | 'FORK' | 'SNAPSHOT' | 'RESUME' | 'RESTART_CONVERSIONS';

export async function testOnlyDelay(step: DelayedStep): Promise<void> {
  const ms = Number(process.env[`CAPSULE_TEST_DELAY_${step}_MS`] ?? 0);
  if (ms > 0) await sleep(ms);
}
