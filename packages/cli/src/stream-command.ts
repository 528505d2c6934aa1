// Streams one command's output from a sandbox to this process's stdout and stderr
// as raw bytes (no decoding, so binary output survives), honouring backpressure,
// and returns the exit code the shell would report for the command.
import { once } from 'node:events';
import type { ExecRequest } from '@capsule/protocol';
import type { CapsuleClient } from '@capsule/sdk';
import { exitCodeOfCommand, signalNumber } from './exit-codes.js';

/** Exit code when our own stdout/stderr was closed under us (`capsule run … | head`), like SIGPIPE. */
const EXIT_BROKEN_PIPE = 128 + (signalNumber('SIGPIPE') ?? 13);

async function writeRaw(stream: NodeJS.WriteStream, bytes: Buffer): Promise<void> {
  if (!stream.write(bytes)) await once(stream, 'drain');
}

function isBrokenPipe(error: unknown): boolean {
  return (error as NodeJS.ErrnoException | undefined)?.code === 'EPIPE';
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
  }: { signal?: AbortSignal; onStart?: (pid: number) => void; stdout?: NodeJS.WriteStream; stderr?: NodeJS.WriteStream } = {},
): Promise<number> {
  // A closed pipe is reported as an 'error' event; without a listener it would crash the CLI.
  let brokenPipe = false;
  const onPipeError = (error: unknown) => {
    if (isBrokenPipe(error)) brokenPipe = true;
  };
  stdout.on('error', onPipeError);
  stderr.on('error', onPipeError);
  try {
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
    if (brokenPipe || isBrokenPipe(error)) return EXIT_BROKEN_PIPE;
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
