// The "Connected nodes" view of the hub's GET /api/metrics: `nodes[]` (what each till reports
// every 2 s) and `subscribers[]` (who is connected to /ws right now).
import type { Metrics, NodeStatus } from './backend';

/** A till whose last report is older than this is shown offline. */
export const STALE_MS = 10_000;

export type ShownState = 'online' | 'syncing' | 'offline';

export interface Latency {
  count: number | null;
  p50: number | null;
  p99: number | null;
}

export interface NodeRow {
  node_id: string;
  role: string;
  state: ShownState;
  /** stream positions behind the hub */
  lag: number | null;
  merge: Latency;
  e2e: Latency;
  /** ms since the node last reported; null for the hub itself */
  age: number | null;
  self: boolean;
}

function obj(v: unknown): Record<string, unknown> | null {
  return v && typeof v === 'object' && !Array.isArray(v) ? (v as Record<string, unknown>) : null;
}

function finite(v: unknown): number | null {
  return typeof v === 'number' && Number.isFinite(v) ? v : null;
}

function latency(v: unknown): Latency {
  const o = obj(v);
  return { count: finite(o?.count), p50: finite(o?.p50_ms), p99: finite(o?.p99_ms) };
}

/** The hub's clock when it answered (`ts`), else this screen's. */
export function metricsNow(m: Metrics | null, fallback: number): number {
  return finite(m?.ts) ?? fallback;
}

/**
 * What a reporting node is shown as: offline when the hub says it is not connected or its last
 * report is older than STALE_MS; otherwise the state it reported (unknown states read offline).
 */
export function shownState(
  n: { connected?: unknown; reported_at?: unknown; report?: unknown },
  now: number,
  staleMs = STALE_MS,
): ShownState {
  if (n.connected !== true) return 'offline';
  const at = finite(n.reported_at);
  if (at === null || now - at > staleMs) return 'offline';
  const s = obj(n.report)?.state;
  return s === 'online' || s === 'syncing' ? s : 'offline';
}

function rawNodes(m: Metrics | null): Record<string, unknown>[] {
  const list = m?.nodes;
  return Array.isArray(list) ? list.map(obj).filter((x): x is Record<string, unknown> => x !== null) : [];
}

/** Rows of the "Connected nodes" table: this node first, then every node the hub knows. */
export function nodeRows(m: Metrics | null, self: NodeStatus | null, now: number): NodeRow[] {
  const rows: NodeRow[] = [];
  if (self) {
    // A dashboard opened on a till describes itself from its own replica metrics.
    const replica = obj(m?.replica);
    rows.push({
      node_id: self.node_id,
      role: self.role,
      state: self.state,
      lag: self.role === 'hub' ? 0 : finite(replica?.lag),
      merge: latency(replica?.merge_latency),
      e2e: latency(replica?.e2e_lag),
      age: null,
      self: true,
    });
  }
  for (const n of rawNodes(m)) {
    const id = typeof n.node_id === 'string' ? n.node_id : '';
    if (self && id === self.node_id) continue;
    const report = obj(n.report);
    const replica = obj(report?.replica);
    const at = finite(n.reported_at);
    rows.push({
      node_id: id,
      role: typeof report?.role === 'string' ? report.role : 'till',
      state: shownState(n, now),
      // the hub's own view of the subscriber first; the node's reported lag otherwise
      lag: finite(n.lag) ?? finite(replica?.lag),
      merge: latency(replica?.merge_latency),
      e2e: latency(replica?.e2e_lag),
      age: at === null ? null : Math.max(0, now - at),
      self: false,
    });
  }
  return rows;
}

/** Browser screens connected to /ws (the dashboard itself is one of them). */
export function browserCount(m: Metrics | null): number | null {
  const subs = m?.subscribers;
  if (!Array.isArray(subs)) return null;
  return subs.filter((s) => obj(s)?.role === 'browser').length;
}

/**
 * The worst p50 and p99 of one reported latency (`merge_latency`, `e2e_lag`) over the nodes
 * whose last report is fresh (a till briefly reconnecting its /ws still reports and counts; one
 * that stopped reporting would freeze the line and does not). Nodes with no samples yet count
 * as 0. Null when no node reports it.
 */
export function worstLatency(m: Metrics | null, key: 'merge_latency' | 'e2e_lag', now: number): { p50: number | null; p99: number | null } {
  let p50: number | null = null;
  let p99: number | null = null;
  for (const n of rawNodes(m)) {
    const at = finite(n.reported_at);
    if (at === null || now - at > STALE_MS) continue;
    const l = obj(obj(obj(n.report)?.replica)?.[key]);
    if (!l) continue;
    const has = (finite(l.count) ?? 1) > 0;
    const a = has ? (finite(l.p50_ms) ?? 0) : 0;
    const b = has ? (finite(l.p99_ms) ?? 0) : 0;
    p50 = Math.max(p50 ?? 0, a);
    p99 = Math.max(p99 ?? 0, b);
  }
  return { p50, p99 };
}
