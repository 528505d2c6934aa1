// A workload's command as a supervised process in its VM: started through the
// guest agent under a fixed tag (so a new daemon finds it again by that tag),
// its output copied to the host's service log as it arrives, its end reported
// once. Stopping the follower never stops the process: a daemon restart must
// leave the service running.
import { Code, ConnectError } from '@connectrpc/connect';
import { Signal } from '@capsule/protocol/agent';
import type { WorkloadSpec } from '@capsule/protocol';
import type { AgentClient } from '../agent/client.js';
import { basicAuthForUser } from '../agent/exec.js';
import { errorMessage } from '../errors.js';
import type { ServiceLog } from './service-log.js';

/** The tag of a workload's process in its VM (one workload per VM). */
export const WORKLOAD_PROCESS_TAG = 'capsule-workload';

/** How the process ended: it exited (code, or a signal in status), was not there to follow, or its stream was cut (the VM or agent went away). */
export type ServiceEnd = { kind: 'exited'; exitCode: number; status: string } | { kind: 'not_found' } | { kind: 'lost'; message: string };

export class ServiceCommand {
  private readonly following = new AbortController();
  /** Resolves once, when the process ends or can no longer be followed; never while `detach` was called first. */
  readonly ended: Promise<ServiceEnd>;
  private startedResolve: (() => void) | undefined;
  /** Resolves when the agent says the process runs. */
  readonly started = new Promise<void>((resolve) => (this.startedResolve = resolve));

  private constructor(
    private readonly agent: AgentClient,
    how: { start: WorkloadSpec } | { attach: true },
    private readonly log: ServiceLog,
  ) {
    this.ended = this.follow(how);
  }

  /** Starts the spec's command in the VM behind `agent`. */
  static start(agent: AgentClient, spec: WorkloadSpec & { command: string[] }, log: ServiceLog): ServiceCommand {
    return new ServiceCommand(agent, { start: spec }, log);
  }

  /** Follows the command a previous daemon started (its end is `not_found` when it is gone). */
  static attach(agent: AgentClient, log: ServiceLog): ServiceCommand {
    return new ServiceCommand(agent, { attach: true }, log);
  }

  get detached(): boolean {
    return this.following.signal.aborted;
  }

  /** Stops following; the process runs on. */
  detach(): void {
    this.following.abort(new Error('the workload command is no longer followed'));
  }

  /** Kills the process (its end is then reported as usual). */
  async kill(): Promise<void> {
    await this.agent.process
      .sendSignal({ process: { selector: { case: 'tag', value: WORKLOAD_PROCESS_TAG } }, signal: Signal.SIGKILL })
      .catch(() => undefined); // Already gone.
  }

  private async follow(how: { start: WorkloadSpec } | { attach: true }): Promise<ServiceEnd> {
    const options = { signal: this.following.signal };
    let stream: AsyncIterable<{ event?: { event: { case: string | undefined; value?: unknown } } | undefined }>;
    if ('attach' in how) {
      stream = this.agent.process.connect({ process: { selector: { case: 'tag', value: WORKLOAD_PROCESS_TAG } } }, options);
    } else {
      const [cmd, ...args] = how.start.command ?? [];
      stream = this.agent.process.start(
        {
          process: { cmd: cmd ?? '', args, envs: how.start.env, ...(how.start.workdir ? { cwd: how.start.workdir } : {}) },
          stdin: false,
          tag: WORKLOAD_PROCESS_TAG,
        },
        { ...options, headers: how.start.user ? { authorization: basicAuthForUser(how.start.user) } : {} },
      );
    }
    let end: ServiceEnd | undefined;
    try {
      for await (const response of stream) {
        const event = response.event?.event;
        if (event?.case === 'start') this.startedResolve?.();
        else if (event?.case === 'data') {
          const output = (event.value as { output: { case: string | undefined; value?: Uint8Array } }).output;
          if (output.value) this.log.append(Buffer.from(output.value));
        } else if (event?.case === 'end') {
          const value = event.value as { exitCode: number; status: string };
          end = { kind: 'exited', exitCode: value.exitCode, status: value.status };
        }
      }
    } catch (err) {
      if (err instanceof ConnectError && err.code === Code.NotFound) return { kind: 'not_found' };
      if (end) return end;
      return { kind: 'lost', message: errorMessage(err) };
    }
    return end ?? { kind: 'lost', message: 'the agent ended the stream without the process ending' };
  }
}
