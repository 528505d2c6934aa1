// What a sandbox must not reach in tap network mode; the tests are in network-isolation.ts,
// shared with the other mode's file so that vitest can run the two modes side by side.
import { describeIsolation } from './network-isolation.js';

describeIsolation('tap');
