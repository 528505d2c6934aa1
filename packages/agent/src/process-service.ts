// The `process.Process` Connect service: Start/Connect streams, List, input,
// signals, with envd's codes and messages. Owns the table of running
// processes. Must never kill a process because a stream or the host
// connection went away: processes outlive the requests that started them.

import { create, type MessageInitShape } from '@bufbuild/protobuf';
import { Code, ConnectError, type HandlerContext, type ServiceImpl } from '@connectrpc/connect';
import {
  ProcessConfigSchema,
  Signal,
  type Process,
  type ProcessConfig,
  type ProcessEventSchema,
  type ProcessInput,
  type ProcessSelector,
} from '@capsule/protocol/agent';
import type { AgentDefaults } from './agent-defaults.js';
import { keepaliveIntervalMs } from './keepalive-interval.js';
import { buildLaunchSpec } from './launch-spec.js';
import { createLogger } from './log.js';
import { ManagedProcess, type OutputSubscription } from './managed-process.js';
import { terminalSizeOf } from './terminal-size.js';
import { resolveRequestUser, PASSWD_PATH } from './users.js';

const log = createLogger('process');

type ProcessEventInit = MessageInitShape<typeof ProcessEventSchema>;
type AgentProcess = ManagedProcess<ProcessConfig>;

export interface ProcessServiceOptions {
  /** Default user, workdir and environment, read at each Start (POST /init changes them). */
  defaults: AgentDefaults;
  passwdPath?: string;
}

/** The running processes, by pid; a process leaves when its end event is out. */
export class ProcessTable {
  private readonly byPid = new Map<number, AgentProcess>();

  add(proc: AgentProcess): void {
    this.byPid.set(proc.pid, proc);
    proc.onEnd(() => {
      if (this.byPid.get(proc.pid) === proc) this.byPid.delete(proc.pid);
    });
  }

  all(): AgentProcess[] {
    return [...this.byPid.values()];
  }

  find(selector: ProcessSelector | undefined): AgentProcess {
    const choice = selector?.selector;
    switch (choice?.case) {
      case 'pid': {
        const proc = this.byPid.get(choice.value);
        if (!proc) throw new ConnectError(`process with pid ${choice.value} not found`, Code.NotFound);
        return proc;
      }
      case 'tag': {
        const proc = this.all().find((candidate) => candidate.tag === choice.value);
        if (!proc) throw new ConnectError(`process with tag ${choice.value} not found`, Code.NotFound);
        return proc;
      }
      default:
        throw new ConnectError('process selector must name a pid or a tag', Code.InvalidArgument);
    }
  }

  /** For agent shutdown: every process group gets `signal`. */
  signalAll(signal: NodeJS.Signals): void {
    for (const proc of this.byPid.values()) {
      try {
        proc.kill(signal);
      } catch (error) {
        log.warn(`[pid=${proc.pid}] could not send ${signal}: ${String(error)}`);
      }
    }
  }
}

async function* streamProcessEvents(
  proc: AgentProcess,
  subscription: OutputSubscription,
  context: HandlerContext,
): AsyncGenerator<ProcessEventInit> {
  const idleMs = keepaliveIntervalMs(context.requestHeader);
  try {
    yield { event: { case: 'start', value: { pid: proc.pid } } };
    for (;;) {
      const next = await subscription.next(idleMs, context.signal);
      if (next === 'idle') {
        yield { event: { case: 'keepalive', value: {} } };
      } else if (next.kind === 'end') {
        const { exitCode, exited, status, error } = next.exit;
        yield { event: { case: 'end', value: { exitCode, exited, status, error } } };
        return;
      } else {
        yield { event: { case: 'data', value: { output: { case: next.kind, value: next.data } } } };
      }
    }
  } finally {
    subscription.close();
  }
}

/** TERM for a terminal whose request and agent defaults name none: what the e2b SDK sends. */
export const DEFAULT_TERM = 'xterm-256color';

async function writeProcessInput(proc: AgentProcess, input: ProcessInput | undefined, signal: AbortSignal): Promise<void> {
  const choice = input?.input;
  if (choice?.case !== 'stdin' && choice?.case !== 'pty') {
    throw new ConnectError('input must carry stdin or pty bytes', Code.InvalidArgument);
  }
  await proc.writeInput(choice.case, choice.value, signal);
}

function toNodeSignal(signal: Signal): NodeJS.Signals {
  switch (signal) {
    case Signal.SIGKILL:
      return 'SIGKILL';
    case Signal.SIGTERM:
      return 'SIGTERM';
    default:
      throw new ConnectError(`invalid signal: ${Signal[signal] ?? signal}`, Code.Unimplemented);
  }
}

export function createProcessService(table: ProcessTable, options: ProcessServiceOptions): ServiceImpl<typeof Process> {
  const passwdPath = options.passwdPath ?? PASSWD_PATH;

  return {
    async *start(request, context) {
      const config = request.process;
      if (!config) throw new ConnectError('process is required', Code.InvalidArgument);
      const { defaults } = options;
      const user = resolveRequestUser(context.requestHeader.get('authorization'), defaults.user, passwdPath);
      const spec = buildLaunchSpec({ cmd: config.cmd, args: config.args, envs: config.envs, cwd: config.cwd }, user, {
        envs: defaults.envs(),
        workdir: defaults.workdir,
      });
      const terminal = request.pty ? terminalSizeOf(request.pty) : undefined;
      if (terminal) spec.env.TERM ??= DEFAULT_TERM;
      const proc = await ManagedProcess.start({
        spec,
        user,
        terminal,
        // Unset means "keep stdin", for clients that predate the field.
        stdin: request.stdin ?? true,
        tag: request.tag,
        config: create(ProcessConfigSchema, config),
      });
      // Subscribing in the same turn as the spawn: output is only read in a
      // later I/O callback, so none can be dropped before this line.
      const subscription = proc.subscribe();
      table.add(proc);
      log.info(
        `[pid=${proc.pid}] started as ${user.name}${terminal ? ` on a ${terminal.cols}x${terminal.rows} terminal` : ''}: ${proc.command}`,
      );

      // Like envd, the request's deadline is the process's deadline.
      const timeoutMs = context.timeoutMs();
      if (timeoutMs !== undefined && timeoutMs > 0) {
        const timer = setTimeout(() => {
          log.info(`[pid=${proc.pid}] request deadline reached, killing it`);
          try {
            proc.kill('SIGKILL');
          } catch (error) {
            log.warn(`[pid=${proc.pid}] could not kill: ${String(error)}`);
          }
        }, timeoutMs);
        timer.unref();
        proc.onEnd(() => clearTimeout(timer));
      }
      for await (const event of streamProcessEvents(proc, subscription, context)) yield { event };
    },

    async *connect(request, context) {
      const proc = table.find(request.process);
      for await (const event of streamProcessEvents(proc, proc.subscribe(), context)) yield { event };
    },

    list() {
      return {
        processes: table.all().map((proc) => ({ config: proc.config, pid: proc.pid, tag: proc.tag })),
      };
    },

    async sendInput(request, context) {
      await writeProcessInput(table.find(request.process), request.input, context.signal);
      return {};
    },

    async streamInput(requests, context) {
      let proc: AgentProcess | undefined;
      for await (const request of requests) {
        const event = request.event;
        switch (event.case) {
          case 'start':
            proc = table.find(event.value.process);
            break;
          case 'data': {
            if (!proc) throw new ConnectError('the first StreamInput message must select the process', Code.InvalidArgument);
            await writeProcessInput(proc, event.value.input, context.signal);
            break;
          }
          case 'keepalive':
            break;
          default:
            throw new ConnectError('StreamInput message carries no event', Code.InvalidArgument);
        }
      }
      return {};
    },

    sendSignal(request) {
      const proc = table.find(request.process);
      const signal = toNodeSignal(request.signal);
      try {
        proc.kill(signal);
      } catch (error) {
        throw new ConnectError(`error sending signal: ${String(error)}`, Code.Internal);
      }
      log.info(`[pid=${proc.pid}] sent ${signal}`);
      return {};
    },

    closeStdin(request) {
      table.find(request.process).closeStdin();
      return {};
    },

    update(request) {
      const proc = table.find(request.process);
      // Like envd: an Update without a pty changes nothing.
      if (request.pty) {
        const size = terminalSizeOf(request.pty);
        proc.resize(size);
        log.info(`[pid=${proc.pid}] terminal resized to ${size.cols}x${size.rows}`);
      }
      return {};
    },
  };
}
