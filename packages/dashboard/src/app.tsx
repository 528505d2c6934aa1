// The dashboard's frame: the sign-in gate (an API key, or a session opened by
// `capsule dashboard`'s one-time link), the navigation, and the page for the
// current path.
import { useEffect, useState } from 'preact/hooks';
import { currentSession, errorText, signIn, signOut, whenSignedOut } from './api.js';
import { SandboxPage } from './pages/sandbox.js';
import { SandboxesPage } from './pages/sandboxes.js';
import { TemplatesPage } from './pages/templates.js';
import { VolumesPage } from './pages/volumes.js';
import { WorkloadsPage } from './pages/workloads.js';
import { linkProps, useRoute } from './router.js';

type Gate = 'checking' | 'signed-out' | 'signed-in';

export function App() {
  const [gate, setGate] = useState<Gate>('checking');
  const [problem, setProblem] = useState<string>();
  useEffect(() => {
    whenSignedOut(() => setGate('signed-out'));
    if (new URLSearchParams(location.search).get('sign-in') === 'expired')
      setProblem('That sign-in link was used already or has expired: run `capsule dashboard` again, or sign in with an API key.');
    currentSession().then(
      (session) => setGate(session ? 'signed-in' : 'signed-out'),
      (error: unknown) => {
        setProblem(errorText(error));
        setGate('signed-out');
      },
    );
  }, []);
  if (gate === 'checking') return <p class="muted page">Loading…</p>;
  if (gate === 'signed-out') return <SignIn problem={problem} onSignedIn={() => setGate('signed-in')} />;
  return <SignedIn onSignedOut={() => setGate('signed-out')} />;
}

function SignIn({ problem, onSignedIn }: { problem: string | undefined; onSignedIn: () => void }) {
  const [apiKey, setApiKey] = useState('');
  const [error, setError] = useState(problem);
  const submit = async (event: Event) => {
    event.preventDefault();
    try {
      await signIn(apiKey.trim());
      history.replaceState(null, '', location.pathname);
      onSignedIn();
    } catch (err) {
      setError(errorText(err));
    }
  };
  return (
    <main class="sign-in">
      <h1>Capsule</h1>
      <form onSubmit={submit}>
        <label>
          API key
          <input
            name="apiKey"
            type="password"
            autocomplete="off"
            value={apiKey}
            onInput={(e) => setApiKey(e.currentTarget.value)}
            placeholder="e2b_…"
          />
        </label>
        <button type="submit">Sign in</button>
      </form>
      {error && <p class="error">{error}</p>}
      <p class="muted">
        On the daemon's host, <code>capsule dashboard</code> opens a signed-in page; <code>capsule apikey create NAME</code> makes a key.
      </p>
    </main>
  );
}

function SignedIn({ onSignedOut }: { onSignedOut: () => void }) {
  const path = useRoute();
  const sandbox = /^\/sandboxes\/([^/]+)$/.exec(path);
  const section = path.split('/')[1] || 'sandboxes';
  const nav = (to: string, label: string) => (
    <a {...linkProps(`/${to}`)} class={section === to ? 'active' : ''}>
      {label}
    </a>
  );
  return (
    <>
      <header class="top">
        <strong>Capsule</strong>
        <nav>
          {nav('sandboxes', 'Sandboxes')}
          {nav('templates', 'Templates & images')}
          {nav('workloads', 'Workloads')}
          {nav('volumes', 'Volumes')}
        </nav>
        <button class="link" type="button" onClick={() => signOut().finally(onSignedOut)}>
          Sign out
        </button>
      </header>
      <main class="page">
        {sandbox ? (
          <SandboxPage id={decodeURIComponent(sandbox[1] ?? '')} />
        ) : section === 'templates' ? (
          <TemplatesPage />
        ) : section === 'workloads' ? (
          <WorkloadsPage />
        ) : section === 'volumes' ? (
          <VolumesPage />
        ) : (
          <SandboxesPage />
        )}
      </main>
    </>
  );
}
