// Streams one command's output from a sandbox to this process's stdout and stderr
// as raw bytes (no decoding, so binary output survives), honouring backpressure,
// and returns the exit code the shell would report for the command. With `stdin`
// (exec -i, run -i) what it reads goes to the command's stdin, then end of file.
import { once } from 'node:events';
import type { ExecRequest } from '@capsule/protocol';
import { CommandExitError, Commands, SandboxAgent, type CapsuleClient, type CommandHandle } from '@capsule/sdk';
import { exitCodeOfCommand, signalNumber } from './exit-codes.js';

/** Exit code when our own stdout/stderr was closed under us (`capsule run … | head`), like SIGPIPE. */
const EXIT_BROKEN_PIPE = 128 + (signalNumber('SIGPIPE') ?? 13);

async function writeRaw(stream: NodeJS.WriteStream, bytes: Buffer): Promise<void> {
  if (!stream.write(bytes)) await once(stream, 'drain');
}

function isBrokenPipe(error: unknown): boolean {
  return (error as NodeJS.ErrnoException | undefined)?.code === 'EPIPE';
}

/** Thrown from an output callback to stop reading once our stdout or stderr is gone. */
class BrokenPipe extends Error {}

/**
 * Sends what `input` reads to the command's stdin, one chunk at a time (reading
 * pauses while a chunk is on its way), and closes it at end of file. Stops
 * quietly when the command has ended. Returns what detaches it.
 */
function forwardInput(input: NodeJS.ReadableStream, handle: CommandHandle): () => void {
  let sending = Promise.resolve();
  const onData = (chunk: Buffer | string) => {
    input.pause();
    sending = sending
      .then(() => handle.sendStdin(typeof chunk === 'string' ? Buffer.from(chunk) : chunk))
      .then(
        () => void input.resume(),
        () => undefined,
      );
  };
  const onEnd = () => {
    sending = sending.then(() => handle.closeStdin()).catch(() => undefined);
  };
  input.on('data', onData);
  input.once('end', onEnd);
  input.resume();
  return () => {
    input.off('data', onData);
    input.off('end', onEnd);
    input.pause();
  };
}

/** The command through the sandbox's agent, whose process stream keeps stdin open (the daemon's exec endpoint takes none). */
async function streamWithInput(
  client: CapsuleClient,
  idOrName: string,
  request: ExecRequest,
  {
    signal,
    onStart,
    stdin,
    stdout,
    stderr,
  }: {
    signal?: AbortSignal;
    onStart?: (pid: number) => void;
    stdin: NodeJS.ReadableStream;
    stdout: NodeJS.WriteStream;
    stderr: NodeJS.WriteStream;
  },
  isPipeBroken: () => boolean,
): Promise<number> {
  // The agent API is addressed by id; this also says "not found" before anything starts.
  const sandbox = await client.getSandbox(idOrName);
  const write = (stream: NodeJS.WriteStream) => async (bytes: Uint8Array) => {
    await writeRaw(stream, Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength));
    if (isPipeBroken()) throw new BrokenPipe();
  };
  const handle = await new Commands(new SandboxAgent(client, sandbox.id)).run(request.cmd, {
    background: true,
    ...(request.env && { env: request.env }),
    ...(request.cwd !== undefined && { cwd: request.cwd }),
    ...(request.user !== undefined && { user: request.user }),
    timeoutMs: request.timeoutMs ?? 0,
    onStdoutBytes: write(stdout),
    onStderrBytes: write(stderr),
    ...(signal && { signal }),
  });
  onStart?.(handle.pid);
  const detachInput = forwardInput(stdin, handle);
  try {
    await handle.wait();
    return 0;
  } catch (error) {
    if (error instanceof CommandExitError) return exitCodeOfCommand(error);
    throw error;
  } finally {
    detachInput();
  }
}

export async function streamCommand(
  client: CapsuleClient,
  sandboxId: string,
  request: ExecRequest,
  {
    signal,
    onStart,
    stdout = process.stdout,
    stderr = process.stderr,
    stdin,
  }: {
    signal?: AbortSignal;
    onStart?: (pid: number) => void;
    stdout?: NodeJS.WriteStream;
    stderr?: NodeJS.WriteStream;
    /** Forward this to the command's stdin (-i); without it the command's stdin is empty. */
    stdin?: NodeJS.ReadableStream;
  } = {},
): Promise<number> {
  // A closed pipe is reported as an 'error' event; without a listener it would crash the CLI.
  let brokenPipe = false;
  const onPipeError = (error: unknown) => {
    if (isBrokenPipe(error)) brokenPipe = true;
  };
  stdout.on('error', onPipeError);
  stderr.on('error', onPipeError);
  try {
    if (stdin !== undefined)
      return await streamWithInput(
        client,
        sandboxId,
        request,
        { ...(signal && { signal }), ...(onStart && { onStart }), stdin, stdout, stderr },
        () => brokenPipe,
      );
    for await (const event of client.execStream(sandboxId, request, signal ? { signal } : {})) {
      if (event.type === 'stdout' || event.type === 'stderr') {
        await writeRaw(event.type === 'stdout' ? stdout : stderr, Buffer.from(event.data, 'base64'));
        if (brokenPipe) return EXIT_BROKEN_PIPE;
      } else if (event.type === 'start') {
        onStart?.(event.pid);
      } else if (event.type === 'exit') {
        return exitCodeOfCommand(event);
      }
    }
    throw new Error('exec stream ended without an exit event'); // execStream throws first
  } catch (error) {
    if (brokenPipe || isBrokenPipe(error) || error instanceof BrokenPipe) return EXIT_BROKEN_PIPE;
    throw error;
  } finally {
    stdout.off('error', onPipeError);
    stderr.off('error', onPipeError);
  }
}

/**
 * Passes a signal on to a command in the sandbox by its guest pid. Closing the
 * stream does not end the command (the API has no signal endpoint), so an
 * interrupted `exec` does this; best effort, failures are ignored.
 */
export async function forwardSignal(client: CapsuleClient, sandboxId: string, pid: number, signal: NodeJS.Signals): Promise<void> {
  const name = signal.replace(/^SIG/, '');
  await client
    .exec(sandboxId, { cmd: ['/bin/sh', '-c', `kill -s ${name} ${pid}`], timeoutMs: 5000 }, { requestTimeoutMs: 10_000 })
    .catch(() => undefined);
}
