// Files capsuled takes from its own checkout: the guest init script and the
// bundled agent with its native addon, the built dashboard. Resolved from this module's location (src/ or dist/ alike).
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export const repoRoot = fileURLToPath(new URL('../../../', import.meta.url));

export const guestInitScript = path.join(repoRoot, 'guest', 'init');

export const guestHelperSource = path.join(repoRoot, 'guest', 'capsule-guest-helper.c');

export const agentBundle = process.env.CAPSULE_AGENT_BUNDLE ?? path.join(repoRoot, 'packages', 'agent', 'dist', 'capsule-agent.cjs');

/** node-pty's native addon, which the bundle loads from its own folder (for PTY processes). */
export const agentPtyAddon = path.join(path.dirname(agentBundle), 'pty.node');

/** The web dashboard as Vite built it (packages/dashboard), served at /ui. */
export const dashboardDist = path.join(repoRoot, 'packages', 'dashboard', 'dist');
