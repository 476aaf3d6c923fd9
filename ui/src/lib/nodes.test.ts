import { describe, expect, it } from 'vitest';
import { browserCount, metricsNow, nodeRows, shownState, worstLatency } from './nodes';
import type { NodeStatus } from './backend';

const NOW = 1_000_000;
const lat = (p50: number, p99: number, count = 5) => ({ count, mean_ms: p50, p50_ms: p50, p99_ms: p99, max_ms: p99 });
const node = (id: string, o: { connected?: boolean; at?: number; state?: string; lag?: number | null; merge?: object; e2e?: object } = {}) => ({
  node_id: id,
  reported_at: o.at ?? NOW - 1000,
  connected: o.connected ?? true,
  lag: o.lag === undefined ? 0 : o.lag,
  report: {
    role: 'till',
    state: o.state ?? 'online',
    replica: { lag: 3, merge_latency: o.merge ?? lat(1, 2), e2e_lag: o.e2e ?? lat(10, 20) },
  },
});
const hub: NodeStatus = { node_id: 'hub-1', role: 'hub', state: 'online', hub_url: null, hub_node_id: 'hub-1', seq: 9, pending: 0, rejected: 0, offline_since: null };

describe('node shown state', () => {
  it('shows what a connected, fresh node reported', () => {
    expect(shownState(node('a'), NOW)).toBe('online');
    expect(shownState(node('a', { state: 'syncing' }), NOW)).toBe('syncing');
  });
  it('is offline when disconnected, stale, or unknown', () => {
    expect(shownState(node('a', { connected: false }), NOW)).toBe('offline');
    expect(shownState(node('a', { at: NOW - 10_001 }), NOW)).toBe('offline');
    expect(shownState(node('a', { at: NOW - 10_000 }), NOW)).toBe('online');
    expect(shownState(node('a', { state: 'offline' }), NOW)).toBe('offline');
    expect(shownState(node('a', { state: 'weird' }), NOW)).toBe('offline');
    expect(shownState({ connected: true }, NOW)).toBe('offline');
  });
});

describe('connected nodes table', () => {
  it('lists the hub first, then every reporting node', () => {
    const rows = nodeRows({ nodes: [node('a'), node('b', { connected: false, lag: null })], ts: NOW }, hub, NOW);
    expect(rows.map((r) => [r.node_id, r.role, r.state])).toEqual([
      ['hub-1', 'hub', 'online'],
      ['a', 'till', 'online'],
      ['b', 'till', 'offline'],
    ]);
    expect(rows[0]?.self).toBe(true);
    expect(rows[0]?.age).toBeNull();
    expect(rows[1]).toMatchObject({ lag: 0, age: 1000, merge: { p50: 1, p99: 2 }, e2e: { p50: 10, p99: 20 } });
    // no live subscriber: the node's own reported lag
    expect(rows[2]?.lag).toBe(3);
  });
  it('copes with a missing or odd endpoint', () => {
    expect(nodeRows(null, null, NOW)).toEqual([]);
    expect(nodeRows({ nodes: 'x' }, hub, NOW)).toHaveLength(1);
    expect(nodeRows({ nodes: [null, 3] }, null, NOW)).toEqual([]);
  });
  it('counts browser screens only', () => {
    expect(browserCount({ subscribers: [{ role: 'till' }, { role: 'browser' }, { role: 'browser' }] })).toBe(2);
    expect(browserCount({})).toBeNull();
  });
  it("uses the hub's clock when it sent one", () => {
    expect(metricsNow({ ts: 5 }, 9)).toBe(5);
    expect(metricsNow(null, 9)).toBe(9);
  });
});

describe('worst latency across nodes', () => {
  it('takes the highest p50 and p99 of the nodes with a fresh report', () => {
    const m = {
      nodes: [
        node('a', { merge: lat(2, 30) }),
        node('b', { merge: lat(5, 9), state: 'syncing' }),
        node('c', { merge: lat(1, 40), connected: false }),
        node('d', { merge: lat(50, 500), at: NOW - 60_000 }),
      ],
    };
    expect(worstLatency(m, 'merge_latency', NOW)).toEqual({ p50: 5, p99: 40 });
    expect(worstLatency(m, 'merge_latency', NOW + 20_000)).toEqual({ p50: null, p99: null });
  });
  it('is 0 before any sample and null when nobody reports', () => {
    expect(worstLatency({ nodes: [node('a', { merge: lat(0, 0, 0) })] }, 'merge_latency', NOW)).toEqual({ p50: 0, p99: 0 });
    expect(worstLatency({ nodes: [] }, 'e2e_lag', NOW)).toEqual({ p50: null, p99: null });
    expect(worstLatency(null, 'e2e_lag', NOW)).toEqual({ p50: null, p99: null });
  });
});
