// The templates page: what sandboxes can be made from, and whether each has a
// warm snapshot (creates restore it rather than boot).
import type { Template, TemplateList } from '@capsule/protocol';
import { useEffect, useState } from 'preact/hooks';
import { errorText, request } from '../api.js';

export function TemplatesPage() {
  const [templates, setTemplates] = useState<Template[]>();
  const [error, setError] = useState<string>();
  useEffect(() => {
    request<TemplateList>('GET', '/v1/templates').then(
      (list) => setTemplates(list.templates),
      (err: unknown) => setError(errorText(err)),
    );
  }, []);
  return (
    <>
      <h1>Templates</h1>
      {error && <p class="error">{error}</p>}
      <table class="list">
        <thead>
          <tr>
            <th>Template</th>
            <th>Ready</th>
            <th>Warm snapshot</th>
            <th>Defaults</th>
            <th>Root filesystem</th>
            <th>Created</th>
          </tr>
        </thead>
        <tbody>
          {(templates ?? []).map((t) => (
            <tr key={t.name}>
              <td>{t.name}</td>
              <td>{t.ready ? 'yes' : 'no'}</td>
              <td>{t.warmSnapshot}</td>
              <td class="muted">
                {t.defaultVcpus} vCPU · {t.defaultMemoryMiB} MiB
              </td>
              <td class="muted">{(t.rootfsBytes / 1024 / 1024).toFixed(0)} MiB</td>
              <td class="muted">{new Date(t.createdAt).toLocaleString()}</td>
            </tr>
          ))}
        </tbody>
      </table>
    </>
  );
}
