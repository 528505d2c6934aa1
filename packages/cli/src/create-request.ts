// The sandbox spec flags that `run` and `sandbox create` share, turned into the
// daemon's create request in one place so the two commands cannot drift.
import { DEFAULT_TEMPLATE, type CreateSandboxRequest, type PortRequest, type VolumeMountRequest } from '@capsule/protocol';
import type { Command } from 'commander';
import { collectCidr, collectPublish, collectVolume } from './option-parsers.js';

export interface SandboxSpecOptions {
  template?: string;
  cpus?: number;
  memory?: number;
  name?: string;
  env?: Record<string, string>;
  metadata?: Record<string, string>;
  /** The sandbox's lifetime (not a command's), in ms; 0 means none. */
  lifetime?: number;
  /** What happens when the lifetime runs out. */
  onTimeout?: 'kill' | 'pause' | 'stop';
  /** commander's `--no-internet`: false when given. */
  internet?: boolean;
  /** `--egress-allow` / `--egress-deny` CIDRs (TAP networking). */
  egressAllow?: string[];
  egressDeny?: string[];
  /** Host ports to publish (`-p`). */
  publish?: PortRequest[];
  /** Volumes to mount (`-v NAME:/PATH[:ro]`). */
  volume?: VolumeMountRequest[];
}

/** The network flags of `run` and `sandbox create`. */
export function addNetworkOptions(command: Command): Command {
  return command
    .option('--no-internet', 'no network at all (switch it on later with `capsule sandbox network ID on`)')
    .option('--egress-allow <cidr>', 'a network the sandbox may reach even if denied (repeatable; TAP networking)', collectCidr)
    .option('--egress-deny <cidr>', 'a network the sandbox may not reach (repeatable; 0.0.0.0/0 for all; TAP networking)', collectCidr);
}

/** `-p, --publish` of `run` and `sandbox create`. */
export function addPublishOption(command: Command): Command {
  return command.option(
    '-p, --publish <[ip:]host:port>',
    'publish a sandbox port on the host, e.g. 8080:80 (repeatable; default ip 127.0.0.1; host 0 or left out: a free port)',
    collectPublish,
  );
}

/** `-v, --volume` of `run` and `sandbox create`. */
export function addVolumeOption(command: Command): Command {
  return command.option(
    '-v, --volume <name:/path[:ro]>',
    'mount a volume at a path (repeatable); one that does not exist is created (10G); the sandbox then boots cold',
    collectVolume,
  );
}

export function toCreateRequest(options: SandboxSpecOptions): CreateSandboxRequest & { template: string } {
  return {
    template: options.template ?? DEFAULT_TEMPLATE,
    ...(options.name !== undefined && { name: options.name }),
    ...(options.cpus !== undefined && { vcpus: options.cpus }),
    ...(options.memory !== undefined && { memoryMiB: options.memory }),
    ...(options.env && { env: options.env }),
    ...(options.metadata && { metadata: options.metadata }),
    ...(options.lifetime !== undefined && { timeoutMs: options.lifetime }),
    ...(options.onTimeout !== undefined && { onTimeout: options.onTimeout }),
    ...(options.internet === false && { internet: false }),
    ...((options.egressAllow || options.egressDeny) && { egress: { allow: options.egressAllow ?? [], deny: options.egressDeny ?? [] } }),
    ...(options.publish && options.publish.length > 0 && { ports: options.publish }),
    ...(options.volume && options.volume.length > 0 && { volumes: options.volume }),
  };
}
