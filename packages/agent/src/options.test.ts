import { describe, expect, it } from 'vitest';
import { parseAgentOptions, portNameFromKernelCommandLine, UsageError } from './options.js';

const noCmdline = () => '';

describe('parseAgentOptions', () => {
  it('defaults to the virtio port named capsule.agent', () => {
    expect(parseAgentOptions([], {}, noCmdline)).toEqual({
      transport: { kind: 'virtio-port', portName: 'capsule.agent', devicePath: undefined },
      defaultUser: undefined,
      guestHelperPath: '/opt/capsule/bin/capsule-guest-helper',
      hostnameFile: '/proc/sys/kernel/hostname',
    });
  });

  it('takes the guest helper and hostname file from the environment', () => {
    expect(parseAgentOptions([], { CAPSULE_GUEST_HELPER: '/tmp/helper', CAPSULE_HOSTNAME_FILE: '/tmp/hostname' }, noCmdline)).toMatchObject(
      { guestHelperPath: '/tmp/helper', hostnameFile: '/tmp/hostname' },
    );
  });

  it('takes the port name from the environment, then the kernel command line', () => {
    expect(parseAgentOptions([], { CAPSULE_AGENT_PORT: 'from.env' }, () => 'CAPSULE_AGENT_PORT=from.cmdline')).toMatchObject({
      transport: { portName: 'from.env' },
    });
    expect(parseAgentOptions([], {}, () => 'console=ttyS0 CAPSULE_AGENT_PORT=from.cmdline quiet')).toMatchObject({
      transport: { portName: 'from.cmdline' },
    });
    expect(portNameFromKernelCommandLine('quiet')).toBeUndefined();
  });

  it('accepts --listen unix:PATH, --port-path and --default-user', () => {
    expect(parseAgentOptions(['--listen', 'unix:/tmp/a.sock'], {}, noCmdline)).toMatchObject({
      transport: { kind: 'unix', path: '/tmp/a.sock' },
      defaultUser: undefined,
    });
    expect(parseAgentOptions(['--port-path=/dev/vport1p1', '--default-user', 'user'], {}, noCmdline)).toMatchObject({
      transport: { kind: 'virtio-port', portName: 'capsule.agent', devicePath: '/dev/vport1p1' },
      defaultUser: 'user',
    });
    expect(parseAgentOptions(['--help'], {}, noCmdline)).toBe('help');
  });

  it('rejects what it does not understand', () => {
    expect(() => parseAgentOptions(['--listen', 'tcp:1234'], {}, noCmdline)).toThrow(UsageError);
    expect(() => parseAgentOptions(['--listen'], {}, noCmdline)).toThrow(UsageError);
    expect(() => parseAgentOptions(['--frobnicate'], {}, noCmdline)).toThrow(UsageError);
    expect(() => parseAgentOptions(['--listen', 'unix:/a', '--port-path', '/dev/x'], {}, noCmdline)).toThrow(UsageError);
  });
});
