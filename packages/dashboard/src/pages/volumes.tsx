// The volumes page: persistent disks, their size and which sandboxes hold them.
import type { Volume, VolumeList } from '@capsule/protocol';
import { useEffect, useState } from 'preact/hooks';
import { errorText, request } from '../api.js';

export function VolumesPage() {
  const [volumes, setVolumes] = useState<Volume[]>();
  const [error, setError] = useState<string>();
  useEffect(() => {
    request<VolumeList>('GET', '/v1/volumes').then(
      (list) => setVolumes(list.volumes),
      (err: unknown) => setError(errorText(err)),
    );
  }, []);
  return (
    <>
      <h1>Volumes</h1>
      {error && <p class="error">{error}</p>}
      <table class="list">
        <thead>
          <tr>
            <th>Volume</th>
            <th>Size</th>
            <th>On disk</th>
            <th>Attached to</th>
            <th>Created</th>
          </tr>
        </thead>
        <tbody>
          {(volumes ?? []).map((v) => (
            <tr key={v.name}>
              <td>{v.name}</td>
              <td>{(v.sizeBytes / 1024 / 1024).toFixed(0)} MiB</td>
              <td class="muted">{(v.diskBytes / 1024 / 1024).toFixed(1)} MiB</td>
              <td class="muted">
                {v.attachments.map((a) => `${a.sandboxName ?? a.sandboxId}:${a.mount}${a.readOnly ? ' (ro)' : ''}`).join(', ') || '—'}
              </td>
              <td class="muted">{new Date(v.createdAt).toLocaleString()}</td>
            </tr>
          ))}
          {volumes?.length === 0 && (
            <tr>
              <td colSpan={5} class="muted">
                No volumes.
              </td>
            </tr>
          )}
        </tbody>
      </table>
    </>
  );
}
