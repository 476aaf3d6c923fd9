// What needs the manager now, each with what to do about it: derived from what the screens
// already hold (printer states and lockouts the nodes report, the node's status, the kitchen's
// tickets, the nodes the hub hears from). Pure: the Day card renders it, tests can feed it.
import type { NodeStatus } from '../../backend';
import type { Job, Lockout, PrinterState } from '../../store/model';

export type AlertKind = 'printer' | 'refused' | 'backup' | 'node' | 'lockout' | 'kitchen';

export interface Alert {
  kind: AlertKind;
  /** Ties the alert to its subject (a printer, a node): one alert each. */
  key: string;
  /** Values the message and its advice are written with. */
  values: Record<string, string>;
  /** When it started, for the "since" and the order (newest first). */
  at: string | null;
}

/** A kitchen ticket waiting longer than this is late. */
export const LATE_MS = 20 * 60 * 1000;
/** A lockout older than this is history (the audit keeps it). */
const LOCKOUT_RECENT_MS = 24 * 3600 * 1000;
/** A printer state older than this, with nothing printed since, is left to the Printers card. */
const STATE_RECENT_MS = 24 * 3600 * 1000;
/** A backup older than this: the schedule is not running. */
const BACKUP_STALE_MS = 26 * 3600 * 1000;

export interface AlertInput {
  now: number;
  status: NodeStatus | null;
  printerStates: PrinterState[];
  printerNames: Map<string, string>;
  lockouts: Lockout[];
  jobs: Job[];
  /** Nodes the hub hears from (its own report table), with their last report. */
  offline: { id: string; name: string; since: string | null }[];
  nodeName: (id: string | null | undefined) => string;
  staffName: (id: string | null | undefined) => string;
}

export function alerts(i: AlertInput): Alert[] {
  const out: Alert[] = [];
  // A printer since deleted, or a report a day old nobody has printed after: not news.
  const current = i.printerStates.filter((p) => i.printerNames.has(p.printer_id) && i.now - Date.parse(p.since) < STATE_RECENT_MS);
  for (const s of current.filter((p) => !p.ok)) {
    out.push({
      kind: 'printer',
      key: s.id,
      at: s.since,
      values: { printer: i.printerNames.get(s.printer_id) ?? '', node: s.node_name ?? i.nodeName(s.node_id), error: s.error ?? '' },
    });
  }
  if ((i.status?.rejected ?? 0) > 0) {
    out.push({ kind: 'refused', key: 'refused', at: null, values: { n: String(i.status?.rejected ?? 0) } });
  }
  const b = i.status?.backup;
  if (b?.last_error) {
    out.push({ kind: 'backup', key: 'backup', at: null, values: { error: b.last_error, dir: b.dir } });
  } else if (b?.last_at && i.now - Date.parse(b.last_at) > BACKUP_STALE_MS) {
    out.push({ kind: 'backup', key: 'backup', at: b.last_at, values: { error: '', dir: b.dir } });
  }
  for (const n of i.offline) out.push({ kind: 'node', key: n.id, at: n.since, values: { node: n.name } });
  for (const l of i.lockouts.filter((l) => i.now - Date.parse(l.locked_at) < LOCKOUT_RECENT_MS)) {
    out.push({
      kind: 'lockout',
      key: l.id,
      at: l.locked_at,
      values: { staff: i.staffName(l.staff_id), node: l.node_name ?? i.nodeName(l.node_id), n: String(l.lockouts) },
    });
  }
  const late = i.jobs.filter((j) => j.status !== 'ready' && i.now - Date.parse(j.created_at) > LATE_MS);
  if (late.length > 0) {
    const oldest = late.reduce((a, j) => (Date.parse(j.created_at) < Date.parse(a.created_at) ? j : a));
    out.push({
      kind: 'kitchen',
      key: 'kitchen',
      at: oldest.created_at,
      values: { n: String(late.length), order: oldest.order_no != null ? `#${oldest.order_no}` : (oldest.provisional_no ?? ''), station: oldest.station },
    });
  }
  return out;
}
