import { readable } from 'svelte/store';

export type Route = '' | 'home' | 'till' | 'kds' | 'expo' | 'dashboard' | 'diagnostics';
const ROUTES: Route[] = ['home', 'till', 'kds', 'expo', 'dashboard', 'diagnostics'];

function current(): Route {
  if (typeof location === 'undefined') return '';
  const h = location.hash.replace(/^#\/?/, '').split(/[/?]/)[0] ?? '';
  return (ROUTES as string[]).includes(h) ? (h as Route) : '';
}

export const route = readable<Route>(current(), (set) => {
  const on = () => set(current());
  window.addEventListener('hashchange', on);
  return () => window.removeEventListener('hashchange', on);
});

export function go(r: Route): void {
  location.hash = `#/${r}`;
}
