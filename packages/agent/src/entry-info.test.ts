import { describe, expect, it } from 'vitest';
import { FileType } from '@capsule/protocol/agent';
import { parseGroupNames } from './account-names.js';
import { fileTypeOfMode, goFileModeString } from './entry-info.js';

describe('entry info', () => {
  it("renders permissions the way Go's FileMode.String does", () => {
    expect(goFileModeString(0o100644)).toBe('-rw-r--r--');
    expect(goFileModeString(0o040755)).toBe('drwxr-xr-x');
    expect(goFileModeString(0o041777)).toBe('dtrwxrwxrwx');
    expect(goFileModeString(0o120777)).toBe('Lrwxrwxrwx');
    expect(goFileModeString(0o104755)).toBe('urwxr-xr-x');
    expect(goFileModeString(0o102755)).toBe('grwxr-xr-x');
    expect(goFileModeString(0o020666)).toBe('Dcrw-rw-rw-');
    expect(goFileModeString(0o060660)).toBe('Drw-rw----');
    expect(goFileModeString(0o010644)).toBe('prw-r--r--');
    expect(goFileModeString(0o140755)).toBe('Srwxr-xr-x');
  });

  it('types only regular files and directories', () => {
    expect(fileTypeOfMode(0o100644)).toBe(FileType.FILE);
    expect(fileTypeOfMode(0o040755)).toBe(FileType.DIRECTORY);
    expect(fileTypeOfMode(0o120777)).toBe(FileType.UNSPECIFIED);
    expect(fileTypeOfMode(0o010644)).toBe(FileType.UNSPECIFIED);
  });

  it('reads group names, first entry winning', () => {
    expect(parseGroupNames('root:x:0:\n# comment\nstaff:x:50:a,b\ndup:x:50:\nbad\n')).toEqual(
      new Map([
        [0, 'root'],
        [50, 'staff'],
      ]),
    );
  });
});
