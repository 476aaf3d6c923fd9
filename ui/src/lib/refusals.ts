// Writes the hub refused, grouped by what a manager can do about them: the raw errors
// ("409: shop_settings 'shop' already exists") mean nothing at a till; "84 menu changes were
// already at the hub: nothing to do" does.
import type { OutboxEntry } from './backend';

/** Why the hub refused, in the terms the dashboard explains. */
export type RefusalKind =
  /** The same thing is at the hub already (a replay after a hub change): safe to discard. */
  | 'already'
  /** It would have changed an order a Z report counted: the day is closed. */
  | 'closed_day'
  /** What it changes is no longer at the hub (deleted meanwhile). */
  | 'gone'
  /** Anything else: shown with the hub's own words. */
  | 'other';

export interface RefusalGroup {
  kind: RefusalKind;
  /** What the writes were about, by table, most first: `[['menu_item', 80], ['order_header', 4]]`. */
  tables: [string, number][];
  entries: OutboxEntry[];
  /** Z report numbers named by closed-day refusals. */
  zNumbers: number[];
}

export function refusalKind(error: string | null): RefusalKind {
  const e = error ?? '';
  if (/already exists|is immutable once written/.test(e)) return 'already';
  if (/counted in Z report #\d+/.test(e)) return 'closed_day';
  if (/does not exist|was deleted/.test(e)) return 'gone';
  return 'other';
}

const ORDER: RefusalKind[] = ['closed_day', 'already', 'gone', 'other'];

/** Groups refused writes by kind (closed days first: they need the manager's eye most). */
export function groupRefusals(rejected: OutboxEntry[]): RefusalGroup[] {
  const groups = new Map<RefusalKind, RefusalGroup>();
  for (const e of rejected) {
    const kind = refusalKind(e.error);
    let g = groups.get(kind);
    if (!g) {
      g = { kind, tables: [], entries: [], zNumbers: [] };
      groups.set(kind, g);
    }
    g.entries.push(e);
    const t = g.tables.find(([name]) => name === e.table);
    if (t) t[1] += 1;
    else g.tables.push([e.table, 1]);
    for (const m of (e.error ?? '').matchAll(/Z report #(\d+)/g)) {
      const n = Number(m[1]);
      if (!g.zNumbers.includes(n)) g.zNumbers.push(n);
    }
  }
  for (const g of groups.values()) {
    g.tables.sort((a, b) => b[1] - a[1] || a[0].localeCompare(b[0]));
    g.zNumbers.sort((a, b) => a - b);
  }
  return ORDER.flatMap((k) => {
    const g = groups.get(k);
    return g ? [g] : [];
  });
}

/** Whether discarding a whole group at once is safe to offer (nothing of it is lost). */
export function discardableAll(kind: RefusalKind): boolean {
  return kind === 'already' || kind === 'closed_day' || kind === 'gone';
}
