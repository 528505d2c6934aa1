// A folder of a sandbox, listed through its agent's filesystem service
// (Connect's JSON form, through the daemon's proxy), with upload (a raw
// POST /files) and download links (GET /files, which the browser saves).
import { useEffect, useState } from 'preact/hooks';
import { agentPath, errorText, request } from '../api.js';

interface Entry {
  name: string;
  type?: string;
  path: string;
  size?: string;
}

export function FileBrowser({ sandboxId }: { sandboxId: string }) {
  const [folder, setFolder] = useState('/tmp');
  const [shown, setShown] = useState('/tmp');
  const [entries, setEntries] = useState<Entry[]>();
  const [error, setError] = useState<string>();
  const list = async (path: string) => {
    setError(undefined);
    try {
      const answer = await request<{ entries?: Entry[] }>('POST', agentPath(sandboxId, '/filesystem.Filesystem/ListDir'), {
        path,
        depth: 1,
      });
      setEntries((answer.entries ?? []).sort((a, b) => a.name.localeCompare(b.name)));
      setShown(path);
    } catch (err) {
      setError(errorText(err));
    }
  };
  useEffect(() => void list(folder), [sandboxId]);
  const upload = async (event: Event) => {
    const input = event.currentTarget as HTMLInputElement;
    const file = input.files?.[0];
    if (!file) return;
    try {
      const target = `${shown.replace(/\/$/, '')}/${file.name}`;
      await request('POST', agentPath(sandboxId, `/files?path=${encodeURIComponent(target)}`), file, 'application/octet-stream');
      input.value = '';
      await list(shown);
    } catch (err) {
      setError(errorText(err));
    }
  };
  return (
    <div class="files">
      <form
        class="toolbar"
        onSubmit={(e) => {
          e.preventDefault();
          void list(folder);
        }}
      >
        <input name="folder" value={folder} onInput={(e) => setFolder(e.currentTarget.value)} />
        <button type="submit">List</button>
        <label class="button">
          Upload
          <input type="file" name="upload" hidden onChange={upload} />
        </label>
      </form>
      {error && <p class="error">{error}</p>}
      <table class="list" data-testid="files">
        <tbody>
          {(entries ?? []).map((entry) => (
            <tr key={entry.path} data-file={entry.name}>
              <td>
                {entry.type === 'FILE_TYPE_DIRECTORY' ? (
                  <button
                    type="button"
                    class="link"
                    onClick={() => {
                      setFolder(entry.path);
                      void list(entry.path);
                    }}
                  >
                    {entry.name}/
                  </button>
                ) : (
                  entry.name
                )}
              </td>
              <td class="muted">{entry.type === 'FILE_TYPE_DIRECTORY' ? '' : `${entry.size ?? 0} B`}</td>
              <td>
                {entry.type === 'FILE_TYPE_FILE' && (
                  <a href={agentPath(sandboxId, `/files?path=${encodeURIComponent(entry.path)}`)} download={entry.name}>
                    Download
                  </a>
                )}
              </td>
            </tr>
          ))}
        </tbody>
      </table>
    </div>
  );
}
