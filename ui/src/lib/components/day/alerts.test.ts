import { describe, expect, it } from 'vitest';
import type { NodeStatus } from '../../backend';
import type { Job, Lockout, PrinterState } from '../../store/model';
import { alerts, type AlertInput } from './alerts';

const NOW = Date.parse('2026-12-07T12:00:00Z');
const ago = (min: number) => new Date(NOW - min * 60_000).toISOString();

function input(over: Partial<AlertInput> = {}): AlertInput {
  return {
    now: NOW,
    status: null,
    printerStates: [],
    printerNames: new Map([['p1', 'Counter']]),
    lockouts: [],
    jobs: [],
    offline: [],
    nodeName: (id) => (id ? `node ${id}` : ''),
    staffName: (id) => (id ? `staff ${id}` : 'someone'),
    ...over,
  };
}

const down = (printer: string, since: string): PrinterState => ({
  id: `n1:${printer}`,
  printer_id: printer,
  node_id: 'n1',
  node_name: 'Till A',
  ok: false,
  error: 'connection refused',
  since,
});

describe("the manager's alerts", () => {
  it('say a printer is down, naming it and the node, and forget printers deleted or news a day old', () => {
    const list = alerts(input({ printerStates: [down('p1', ago(5)), down('gone', ago(5)), { ...down('p1', ago(2000)), id: 'n2:p1' }] }));
    expect(list).toHaveLength(1);
    expect(list[0]).toMatchObject({ kind: 'printer', values: { printer: 'Counter', node: 'Till A' } });
    expect(alerts(input({ printerStates: [{ ...down('p1', ago(5)), ok: true }] }))).toEqual([]);
  });
  it('count refused writes, failing or stale backups and recent lockouts', () => {
    const status = { rejected: 2, backup: { dir: '/b', every_s: 3600, keep: 24, count: 3, last_error: 'disk full' } } as unknown as NodeStatus;
    const lock: Lockout = { id: 'n1:st', staff_id: 'st', node_id: 'n1', lockouts: 2, locked_at: ago(30), until: ago(29) };
    const kinds = alerts(input({ status, lockouts: [lock, { ...lock, id: 'old', locked_at: ago(2000) }] })).map((a) => a.kind);
    expect(kinds).toEqual(['refused', 'backup', 'lockout']);
    const stale = { backup: { dir: '/b', every_s: 3600, keep: 24, count: 3, last_at: ago(27 * 60) } } as unknown as NodeStatus;
    expect(alerts(input({ status: stale })).map((a) => a.kind)).toEqual(['backup']);
  });
  it('name the oldest of the late kitchen tickets, and not the ones in time', () => {
    const job = (id: string, min: number) => ({ id, order_no: 100 + min, provisional_no: null, station: 'grill', status: 'queued', created_at: ago(min) }) as unknown as Job;
    const list = alerts(input({ jobs: [job('a', 5), job('b', 25), job('c', 40)] }));
    expect(list).toHaveLength(1);
    expect(list[0]).toMatchObject({ kind: 'kitchen', values: { n: '2', order: '#140', station: 'grill' } });
  });
});
