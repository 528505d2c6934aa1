#!/usr/bin/env node
// The `capsule` executable. Every command pays for what this file imports before
// it runs, so it imports nothing but the version: `--version` alone is answered
// here, before the command-line parser loads; cli.ts runs everything else.
import { clientVersion } from './client-version.js';

const args = process.argv.slice(2);
if (args.length === 1 && (args[0] === '--version' || args[0] === '-V')) process.stdout.write(`${clientVersion}\n`);
else await (await import('./cli.js')).runCli(process.argv);
