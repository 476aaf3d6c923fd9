// Follows the print jobs this screen asked for until they print: a printer that is off or out
// of paper shows on the till that asked (with Retry), and a copy says when it printed.
import { writable, get } from 'svelte/store';
import { api, type PrintJob, type PrintQueued } from '../backend';

export interface PrintWatch {
  id: string;
  /** What it prints, as the cashier calls it (an i18n key: `print_receipt`, `print_ticket`...). */
  what: string;
  state: 'printing' | 'failed' | 'done';
  printer: string;
  error: string | null;
  /** The cashier asked for a confirmation (a copy): say when it printed. */
  confirm: boolean;
}

/** The jobs being followed, newest last. */
export const printWatch = writable<PrintWatch[]>([]);

const POLL_MS = 1000;
/** A job followed this long without printing or failing is left to the Printers card. */
const GIVE_UP_MS = 5 * 60 * 1000;
let timer: ReturnType<typeof setTimeout> | undefined;
const started = new Map<string, number>();

/** Follows the jobs a print request queued. */
export function watchPrint(q: PrintQueued, what: string, confirm = false): void {
  const ids = [...q.queued, ...q.already];
  if (ids.length === 0) return;
  printWatch.update((l) => [
    ...l.filter((w) => !ids.includes(w.id)),
    ...ids.map((id) => ({ id, what, state: 'printing' as const, printer: '', error: null, confirm })),
  ]);
  for (const id of ids) started.set(id, Date.now());
  schedule();
}

function schedule(): void {
  if (timer === undefined) timer = setTimeout(() => void poll(), POLL_MS);
}

async function poll(): Promise<void> {
  timer = undefined;
  const open = get(printWatch).filter((w) => w.state !== 'done');
  if (open.length === 0) return;
  let jobs: PrintJob[] = [];
  try {
    jobs = (await api.printJobs()).jobs;
  } catch {
    schedule();
    return;
  }
  const byId = new Map(jobs.map((j) => [j.id, j]));
  const now = Date.now();
  printWatch.update((l) =>
    l
      .map((w) => {
        const j = byId.get(w.id);
        if (!j) return w;
        const failed = j.state === 'expired' || (j.state === 'pending' && j.attempts > 0 && !!j.error);
        const state: PrintWatch['state'] = j.state === 'done' ? 'done' : failed ? 'failed' : 'printing';
        return { ...w, state, printer: j.printer, error: j.error };
      })
      // Printed ones leave (a copy after its confirmation shows); a failure stays until the
      // cashier retries or closes it; a job neither printed nor failed is left to the
      // Printers card after a while.
      .filter((w) => {
        const keep = !(w.state === 'done' && !w.confirm) && (w.state === 'failed' || now - (started.get(w.id) ?? now) < GIVE_UP_MS);
        if (!keep) started.delete(w.id);
        return keep;
      }),
  );
  if (get(printWatch).some((w) => w.state !== 'done')) schedule();
}

/** The cashier's Retry: the node tries the job again now (it prints once). */
export async function retryPrint(id: string): Promise<void> {
  await api.retryPrint(id);
  started.set(id, Date.now());
  printWatch.update((l) => l.map((w) => (w.id === id ? { ...w, state: 'printing', error: null } : w)));
  schedule();
}

export function dismissPrint(id: string): void {
  started.delete(id);
  printWatch.update((l) => l.filter((w) => w.id !== id));
}
