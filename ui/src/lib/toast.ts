import { get, writable } from 'svelte/store';
import { notAdmitted } from './backend';

export interface Toast {
  id: number;
  kind: 'error' | 'ok' | 'info';
  text: string;
}

export const toasts = writable<Toast[]>([]);
let n = 0;

export function toast(kind: Toast['kind'], text: string, ms = kind === 'error' ? 7000 : 2500): void {
  // A screen the node does not admit says so on its own; each refused call adds nothing.
  if (kind === 'error' && get(notAdmitted)) return;
  const id = ++n;
  toasts.update((l) => [...l.slice(-3), { id, kind, text }]);
  setTimeout(() => toasts.update((l) => l.filter((x) => x.id !== id)), ms);
}

export function dismiss(id: number): void {
  toasts.update((l) => l.filter((x) => x.id !== id));
}

/** Run a write; on failure show the node's error message and return null. */
export async function attempt<T>(fn: () => Promise<T>, prefix = ''): Promise<T | null> {
  try {
    return await fn();
  } catch (e) {
    const msg = e instanceof Error ? e.message : String(e);
    toast('error', prefix ? `${prefix}: ${msg}` : msg);
    return null;
  }
}
