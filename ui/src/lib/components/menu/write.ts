// One write at a time from the menu editor: every control waits while one is on its way.
import { get, writable } from 'svelte/store';
import { attempt } from '../../toast';

export const busy = writable(false);

/** Runs a write; false when it failed (its error is shown) or another write was running. */
export async function write(fn: () => Promise<unknown>): Promise<boolean> {
  if (get(busy)) return false;
  busy.set(true);
  try {
    return (await attempt(fn)) !== null;
  } finally {
    busy.set(false);
  }
}

/** `text` with each {key} replaced. */
export function fill(text: string, vals: Record<string, string | number>): string {
  return text.replace(/\{(\w+)\}/g, (m, k: string) => (k in vals ? String(vals[k]) : m));
}
