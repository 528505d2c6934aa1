// The templates and images page: what sandboxes can be made from (and whether
// each has a warm snapshot), the images in the store, and two forms whose
// logs show live: a template build from a Capsulefile and an image pull. The
// lists follow the event stream; the logs are the build's and pull's own answers.
import type { BuildEvent, Image, ImageEvent, ImageList, Template, TemplateList } from '@capsule/protocol';
import { useEffect, useState } from 'preact/hooks';
import { errorText, request, streamEvents } from '../api.js';
import { useEvents } from '../events.js';

const MIB = 1024 * 1024;
/** Lines a log panel keeps: a long build's output scrolls off the top rather than growing the page without end. */
const LOG_LINES = 2000;
const SAMPLE_CAPSULEFILE = 'FROM base\nRUN echo hello from the build\n';

export function TemplatesPage() {
  const [templates, setTemplates] = useState<Template[]>();
  const [images, setImages] = useState<Image[]>();
  const [error, setError] = useState<string>();
  const reload = () => {
    request<TemplateList>('GET', '/v1/templates').then(
      (list) => setTemplates(list.templates),
      (err: unknown) => setError(errorText(err)),
    );
    request<ImageList>('GET', '/v1/images').then(
      (list) => setImages(list.images),
      (err: unknown) => setError(errorText(err)),
    );
  };
  useEffect(reload, []);
  // A template or image made, built or removed anywhere (this page's forms, the CLI): the lists again.
  useEvents('type=template,image', reload);
  return (
    <>
      <h1>Templates</h1>
      {error && <p class="error">{error}</p>}
      <table class="list" data-testid="templates">
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
            <tr key={t.name} data-template={t.name}>
              <td>{t.name}</td>
              <td>{t.ready ? 'yes' : 'no'}</td>
              <td>{t.warmSnapshot}</td>
              <td class="muted">
                {t.defaultVcpus} vCPU · {t.defaultMemoryMiB} MiB
              </td>
              <td class="muted">{(t.rootfsBytes / MIB).toFixed(0)} MiB</td>
              <td class="muted">{new Date(t.createdAt).toLocaleString()}</td>
            </tr>
          ))}
        </tbody>
      </table>
      <BuildTemplate />

      <h1 class="section">Images</h1>
      <table class="list" data-testid="images">
        <thead>
          <tr>
            <th>Image</th>
            <th>Digest</th>
            <th>Size</th>
            <th>Templates</th>
            <th>Created</th>
          </tr>
        </thead>
        <tbody>
          {(images ?? []).map((image) => (
            <tr key={image.digest} data-image={image.digest}>
              <td>{image.refs.join(', ') || <span class="muted">(no name)</span>}</td>
              <td class="mono muted">{image.digest.slice(0, 19)}</td>
              <td class="muted">
                {(image.sizeBytes / MIB).toFixed(1)} MiB · {image.layers} layers
              </td>
              <td class="muted">{image.templates.join(', ') || '—'}</td>
              <td class="muted">{new Date(image.createdAt).toLocaleString()}</td>
            </tr>
          ))}
          {images?.length === 0 && (
            <tr>
              <td colSpan={5} class="muted">
                No images.
              </td>
            </tr>
          )}
        </tbody>
      </table>
      <PullImage />
    </>
  );
}

interface LogLine {
  text: string;
  /** A line of the same key replaces it in place (a layer's download progress). */
  key?: string;
}

type AddLine = (text: string, key?: string) => void;

/**
 * A form whose request streams its progress into a log panel: `run` starts
 * the log afresh, is busy until the stream ends, and a failure to reach the
 * daemon becomes the log's last line.
 */
function useStreamedLog(): { lines: LogLine[]; busy: boolean; run: (stream: (addLine: AddLine) => Promise<void>) => Promise<void> } {
  const [lines, setLines] = useState<LogLine[]>([]);
  const [busy, setBusy] = useState(false);
  const addLine: AddLine = (text, key) =>
    setLines((current) => {
      const last = current.at(-1);
      const kept = key !== undefined && last?.key === key ? current.slice(0, -1) : current;
      return [...kept, { text, ...(key !== undefined ? { key } : {}) }].slice(-LOG_LINES);
    });
  const run = async (stream: (addLine: AddLine) => Promise<void>) => {
    setBusy(true);
    setLines([]);
    try {
      await stream(addLine);
    } catch (err) {
      addLine(`Failed: ${errorText(err)}`);
    } finally {
      setBusy(false);
    }
  };
  return { lines, busy, run };
}

function LogPanel({ lines, testId }: { lines: LogLine[]; testId: string }) {
  if (lines.length === 0) return null;
  return (
    <pre class="console" data-testid={testId}>
      {lines.map((line) => line.text).join('\n')}
    </pre>
  );
}

function BuildTemplate() {
  const [name, setName] = useState('');
  const [capsulefile, setCapsulefile] = useState(SAMPLE_CAPSULEFILE);
  const { lines, busy, run } = useStreamedLog();
  const submit = async (event: Event) => {
    event.preventDefault();
    await run((addLine) =>
      streamEvents<BuildEvent>('/v1/templates/build', { name: name.trim(), capsulefile }, (e) => {
        if (e.type === 'step') addLine(`Step ${e.index + 1}: ${e.instruction}${e.cached ? ' (cached)' : ''}`);
        else if (e.type === 'log') addLine(e.text.replace(/\n$/, ''));
        else if (e.type === 'done') addLine(`Built template ${e.template.name}`);
        else addLine(`Failed: ${e.message}${e.hint ? ` (${e.hint})` : ''}`);
      }),
    );
  };
  return (
    <>
      <h2>Build a template</h2>
      <form class="stacked" onSubmit={submit}>
        <input name="buildName" placeholder="template name" value={name} onInput={(e) => setName(e.currentTarget.value)} required />
        <textarea
          name="capsulefile"
          rows={5}
          spellcheck={false}
          value={capsulefile}
          onInput={(e) => setCapsulefile(e.currentTarget.value)}
        />
        <span class="muted">
          COPY needs a build folder: use <code>capsule template build</code> for those.
        </span>
        <button type="submit" disabled={busy || name.trim() === ''}>
          {busy ? 'Building…' : 'Build'}
        </button>
      </form>
      <LogPanel lines={lines} testId="build-log" />
    </>
  );
}

function PullImage() {
  const [ref, setRef] = useState('');
  const { lines, busy, run } = useStreamedLog();
  const submit = async (event: Event) => {
    event.preventDefault();
    await run((addLine) =>
      streamEvents<ImageEvent>('/v1/images/pull', { ref: ref.trim() }, (e) => {
        if (e.type === 'resolved') addLine(`Resolved ${e.digest}: ${e.layers.length} layers`);
        else if (e.type === 'progress')
          addLine(`${e.digest.slice(0, 19)}: ${(e.doneBytes / MIB).toFixed(1)} / ${(e.totalBytes / MIB).toFixed(1)} MiB`, e.digest);
        else if (e.type === 'unpacked') addLine(`Unpacked layer ${e.index + 1} of ${e.layers}`);
        else if (e.type === 'done') addLine(`Pulled ${e.image.refs.join(', ') || e.image.digest}`);
        else addLine(`Failed: ${e.message}${e.hint ? ` (${e.hint})` : ''}`);
      }),
    );
  };
  return (
    <>
      <h2>Pull an image</h2>
      <form class="create" onSubmit={submit}>
        <input name="imageRef" placeholder="registry/repository:tag" value={ref} onInput={(e) => setRef(e.currentTarget.value)} required />
        <button type="submit" disabled={busy || ref.trim() === ''}>
          {busy ? 'Pulling…' : 'Pull'}
        </button>
      </form>
      <LogPanel lines={lines} testId="pull-log" />
    </>
  );
}
