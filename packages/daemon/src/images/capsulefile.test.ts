import { describe, expect, it } from 'vitest';
import { parseCapsulefile } from './capsulefile.js';

describe('parseCapsulefile', () => {
  it('reads FROM and the steps, with comments, continuations and both ENV forms', () => {
    expect(parseCapsulefile('# base\nFROM debian:12\nENV A=1\nENV B two words\nWORKDIR /app\nCOPY src /app/src\nUSER app\nRUN echo a \\\n  && echo b\n')).toEqual({
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

  it('says which line is wrong and why', () => {
    expect(() => parseCapsulefile('RUN true')).toThrow(/line 1: the first instruction must be FROM/);
    expect(() => parseCapsulefile('FROM a\nFROM b')).toThrow(/line 2: FROM may appear only once/);
    expect(() => parseCapsulefile('FROM a\nCOPY x relative')).toThrow(/absolute path/);
    expect(() => parseCapsulefile('FROM a\nFROB x')).toThrow(/unknown instruction FROB/);
    expect(() => parseCapsulefile('FROM a\nSTART server')).toThrow(/START is not supported yet/);
    expect(() => parseCapsulefile('# nothing')).toThrow(/no FROM/);
  });
});
