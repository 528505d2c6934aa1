import { describe, expect, it } from 'vitest';
import { parseCapsulefile } from './capsulefile.js';

describe('parseCapsulefile', () => {
  it('reads FROM and the steps, with comments, continuations and both ENV forms', () => {
    expect(
      parseCapsulefile(
        '# base\nFROM debian:12\nENV A=1\nENV B two words\nWORKDIR /app\nCOPY src /app/src\nUSER app\nRUN echo a \\\n  && echo b\n',
      ),
    ).toEqual({
      from: 'debian:12',
      steps: [
        { kind: 'ENV', name: 'A', value: '1' },
        { kind: 'ENV', name: 'B', value: 'two words' },
        { kind: 'WORKDIR', path: '/app' },
        { kind: 'COPY', source: 'src', destination: '/app/src' },
        { kind: 'USER', user: 'app' },
        { kind: 'RUN', command: 'echo a  && echo b' },
      ],
    });
  });

  it('reads START and READY in the shell and exec forms, a bare START, and READY --timeout', () => {
    expect(parseCapsulefile('FROM a\nSTART python3 -m http.server 8000\nREADY curl -sf localhost:8000\nRUN true')).toEqual({
      from: 'a',
      steps: [{ kind: 'RUN', command: 'true' }],
      start: { cmd: ['/bin/sh', '-c', 'python3 -m http.server 8000'] },
      ready: { cmd: ['/bin/sh', '-c', 'curl -sf localhost:8000'], timeoutMs: 60_000 },
    });
    expect(parseCapsulefile('FROM a\nREADY --timeout=90s ["test", "-e", "/tmp/up"]\nSTART ["/srv/app", "--port", "80"]')).toMatchObject({
      start: { cmd: ['/srv/app', '--port', '80'] },
      ready: { cmd: ['test', '-e', '/tmp/up'], timeoutMs: 90_000 },
    });
    expect(parseCapsulefile('FROM a\nSTART\n')).toMatchObject({ start: { imageDefault: true } });
  });

  it('says which line is wrong and why', () => {
    expect(() => parseCapsulefile('RUN true')).toThrow(/line 1: the first instruction must be FROM/);
    expect(() => parseCapsulefile('FROM a\nFROM b')).toThrow(/line 2: FROM may appear only once/);
    expect(() => parseCapsulefile('FROM a\nCOPY x relative')).toThrow(/absolute path/);
    expect(() => parseCapsulefile('FROM a\nFROB x')).toThrow(/unknown instruction FROB/);
    expect(() => parseCapsulefile('FROM a\nSTART a\nSTART b')).toThrow(/line 3: START may appear only once/);
    expect(() => parseCapsulefile('FROM a\nREADY')).toThrow(/has no argument/);
    expect(() => parseCapsulefile('FROM a\nREADY --timeout=1h true')).toThrow(/from 1s to 30m/);
    expect(() => parseCapsulefile('FROM a\nREADY --retries=3 true')).toThrow(/--timeout=DURATION/);
    expect(() => parseCapsulefile('FROM a\nSTART ["node", 3]')).toThrow(/non-empty JSON array of strings/);
    expect(() => parseCapsulefile('FROM a\nSTART [node')).toThrow(/must be a JSON array/);
    expect(() => parseCapsulefile('# nothing')).toThrow(/no FROM/);
  });
});
