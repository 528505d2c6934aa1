// Client-side routes under /ui: the path is the state, history.pushState
// changes it, and the daemon answers any such path with index.html, so a
// reload or a shared link lands on the same page.
import { useEffect, useState } from 'preact/hooks';

export const BASE = '/ui';
const CHANGED = 'capsule:navigate';

export function navigate(path: string): void {
  history.pushState(null, '', `${BASE}${path}`);
  window.dispatchEvent(new Event(CHANGED));
}

/** The path below /ui ("/", "/sandboxes/sb_x"...), following navigation and the back button. */
export function useRoute(): string {
  const read = () => location.pathname.slice(BASE.length) || '/';
  const [path, setPath] = useState(read);
  useEffect(() => {
    const update = () => setPath(read());
    window.addEventListener('popstate', update);
    window.addEventListener(CHANGED, update);
    return () => {
      window.removeEventListener('popstate', update);
      window.removeEventListener(CHANGED, update);
    };
  }, []);
  return path;
}

/** An in-app link: a real href (open in a new tab works), a click that stays in the page. */
export function linkProps(path: string): { href: string; onClick: (event: MouseEvent) => void } {
  return {
    href: `${BASE}${path}`,
    onClick: (event: MouseEvent) => {
      if (event.button !== 0 || event.metaKey || event.ctrlKey || event.shiftKey) return;
      event.preventDefault();
      navigate(path);
    },
  };
}
