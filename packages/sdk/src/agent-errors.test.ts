import { Code, ConnectError } from '@connectrpc/connect';
import { describe, expect, it } from 'vitest';
import { errorFromAgentCall, errorFromFilesResponse } from './agent-errors.js';
import { CapsuleError, ConnectionError, InvalidArgumentError, NotFoundError, TimeoutError } from './errors.js';

describe('errorFromAgentCall', () => {
  it('maps Connect codes to typed errors, keeping what was attempted in the message', () => {
    const notFound = errorFromAgentCall(new ConnectError('file not found: ENOENT', Code.NotFound), 'stat /x');
    expect(notFound).toBeInstanceOf(NotFoundError);
    expect(notFound).toMatchObject({ code: 'not_found', message: 'stat /x: file not found: ENOENT' });
    expect(errorFromAgentCall(new ConnectError('bad', Code.InvalidArgument), 'w')).toBeInstanceOf(InvalidArgumentError);
    expect(errorFromAgentCall(new ConnectError('slow', Code.DeadlineExceeded), 'w')).toBeInstanceOf(TimeoutError);
    expect(errorFromAgentCall(new ConnectError('exists', Code.AlreadyExists), 'w')).toMatchObject({ code: 'already_exists' });
    expect(errorFromAgentCall(new ConnectError("invalid username: 'x'", Code.Unauthenticated), 'w')).toMatchObject({
      code: 'unauthenticated',
      hint: expect.stringContaining('/etc/passwd'),
    });
  });

  it('returns the abort reason when the caller aborted, whatever the wire said', () => {
    const reason = new Error('mine');
    const controller = new AbortController();
    controller.abort(reason);
    expect(errorFromAgentCall(new ConnectError('canceled', Code.Canceled), 'w', controller.signal)).toBe(reason);
  });

  it('says the daemon is unreachable when the socket is not there', () => {
    const cause = Object.assign(new Error('connect ENOENT'), { code: 'ENOENT' });
    const error = errorFromAgentCall(new ConnectError('unavailable', Code.Unavailable, undefined, undefined, cause), 'list processes');
    expect(error).toBeInstanceOf(ConnectionError);
    expect(error).toMatchObject({ code: 'daemon_unreachable' });
  });

  it('passes through what is not a Connect error', () => {
    const own = new CapsuleError('protocol_error', 'x');
    expect(errorFromAgentCall(own, 'w')).toBe(own);
  });
});

describe('errorFromFilesResponse', () => {
  it("reads the agent's envd body by its status", () => {
    const error = errorFromFilesResponse(404, JSON.stringify({ code: 404, message: "path '/x' does not exist" }), 'read /x');
    expect(error).toBeInstanceOf(NotFoundError);
    expect(error).toMatchObject({ code: 'not_found', status: 404, message: "read /x: path '/x' does not exist" });
    expect(errorFromFilesResponse(400, '{"code":400,"message":"is a directory"}', 'read /')).toBeInstanceOf(InvalidArgumentError);
    expect(errorFromFilesResponse(507, '{"code":507,"message":"full"}', 'write /x')).toMatchObject({ code: 'not_enough_space' });
  });

  it("prefers the daemon's own error when the proxy refused", () => {
    const body = JSON.stringify({
      error: { code: 'sandbox_not_found', message: 'sandbox "x" does not exist', hint: 'list sandboxes' },
      code: 'not_found',
      message: 'sandbox "x" does not exist',
    });
    expect(errorFromFilesResponse(404, body, 'read /x')).toMatchObject({ code: 'sandbox_not_found', hint: 'list sandboxes' });
  });

  it('bounds what a hostile guest says, and copes with a body that is not JSON', () => {
    const flood = errorFromFilesResponse(500, JSON.stringify({ code: 500, message: 'x'.repeat(100_000) }), 'read /x');
    expect(flood.message.length).toBeLessThan(600);
    expect(errorFromFilesResponse(418, '', 'read /x')).toMatchObject({ code: 'internal', message: 'read /x: HTTP 418' });
  });
});
