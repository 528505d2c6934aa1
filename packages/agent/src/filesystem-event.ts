// A directory watch's events as envd's FilesystemEvent messages, with the
// entry's EntryInfo when the watch asked for include_entry. Like envd, only
// CREATE, WRITE and CHMOD carry an entry: after REMOVE or RENAME the path may
// already hold a different file. Must never fail the watch over one stat.

import type { MessageInitShape } from '@bufbuild/protobuf';
import { EventType, type FilesystemEventSchema } from '@capsule/protocol/agent';
import { AccountNames } from './account-names.js';
import type { WatchEvent } from './directory-watch.js';
import { readEntryInfo } from './entry-info.js';

export type FilesystemEventInit = MessageInitShape<typeof FilesystemEventSchema>;

const carriesEntry = (type: EventType) => type === EventType.CREATE || type === EventType.WRITE || type === EventType.CHMOD;

export async function toFilesystemEvents(events: WatchEvent[], includeEntry: boolean): Promise<FilesystemEventInit[]> {
  if (!includeEntry) return events.map(({ name, type }) => ({ name, type }));
  const names = new AccountNames();
  return Promise.all(
    events.map(async ({ name, type, path }) => ({
      name,
      type,
      // Gone again before we looked: the event still goes out, without an entry.
      entry: carriesEntry(type) ? await readEntryInfo(path, names).catch(() => undefined) : undefined,
    })),
  );
}
