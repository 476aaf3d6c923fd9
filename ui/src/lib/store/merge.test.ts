import { describe, expect, it } from 'vitest';
import { EntityCache, PullPlan, SeqGate, shapeFromSchema, type EntityShape } from './merge';
import type { PulledItem } from '../backend';

const orderShape: EntityShape = shapeFromSchema({
  table: 'order_header',
  id_field: 'id',
  parts: {
    header: ['order_no', 'table_label'],
    status: ['status', 'updated_at'],
    totals: ['subtotal', 'total'],
    lines: ['id', 'order_id', 'line_no', 'name_en', 'qty'],
  },
  children: { lines: { table: 'order_line', parent_field: 'order_id' } },
});

function item(id: string, pv: Record<string, number>, payload: Record<string, unknown>): PulledItem {
  return { id, v: Math.max(...Object.values(pv)), pv, payload };
}

describe('EntityCache.merge', () => {
  it('inserts a new entity with only the pulled parts', () => {
    const c = new EntityCache(orderShape);
    expect(c.merge(item('o1', { status: 3 }, { status: 'open', updated_at: 't' }))).toBe(true);
    const r = c.recs.get('o1')!;
    expect(r.data).toEqual({ id: 'o1', status: 'open', updated_at: 't' });
    expect(r.pv).toEqual({ status: 3 });
    expect(r.v).toBe(3);
  });

  it('keeps the newest version of each part independently', () => {
    const c = new EntityCache(orderShape);
    c.merge(item('o1', { status: 5, totals: 2 }, { status: 'sent', updated_at: 'a', subtotal: 100, total: 115 }));
    // an older status but newer totals arrives late
    const changed = c.merge(item('o1', { status: 4, totals: 6 }, { status: 'open', updated_at: 'b', subtotal: 200, total: 230 }));
    expect(changed).toBe(true);
    const d = c.recs.get('o1')!.data;
    expect(d.status).toBe('sent');
    expect(d.updated_at).toBe('a');
    expect(d.total).toBe(230);
    expect(c.recs.get('o1')!.pv).toEqual({ status: 5, totals: 6 });
    expect(c.recs.get('o1')!.v).toBe(6);
  });

  it('ignores duplicates and stale pulls without producing a new record', () => {
    const c = new EntityCache(orderShape);
    c.merge(item('o1', { status: 5 }, { status: 'sent', updated_at: 'a' }));
    const before = c.recs.get('o1');
    expect(c.merge(item('o1', { status: 5 }, { status: 'sent', updated_at: 'a' }))).toBe(false);
    expect(c.merge(item('o1', { status: 2 }, { status: 'open', updated_at: 'x' }))).toBe(false);
    expect(c.recs.get('o1')).toBe(before);
  });

  it('replaces child arrays whole and sorts them by line_no, without version columns', () => {
    const c = new EntityCache(orderShape);
    c.merge(
      item('o1', { lines: 7 }, {
        lines: [
          { id: 'b', order_id: 'o1', line_no: 2, name_en: 'Fries', qty: 1, _v: 7 },
          { id: 'a', order_id: 'o1', line_no: 1, name_en: 'Hummus', qty: 2, _v: 6 },
        ],
      }),
    );
    const lines = c.recs.get('o1')!.data.lines as { id: string }[];
    expect(lines.map((l) => l.id)).toEqual(['a', 'b']);
    expect(lines[0]).not.toHaveProperty('_v');
    c.merge(item('o1', { lines: 9 }, { lines: [{ id: 'a', order_id: 'o1', line_no: 1, name_en: 'Hummus', qty: 3 }] }));
    expect((c.recs.get('o1')!.data.lines as unknown[]).length).toBe(1);
  });

  it('does not resurrect a deleted entity from an older pull', () => {
    const c = new EntityCache(orderShape);
    c.merge(item('o1', { status: 5 }, { status: 'open', updated_at: 'a' }));
    expect(c.remove('o1', 8)).toBe(true);
    expect(c.merge(item('o1', { status: 7 }, { status: 'open', updated_at: 'a' }))).toBe(false);
    expect(c.recs.has('o1')).toBe(false);
    expect(c.merge(item('o1', { status: 9 }, { status: 'open', updated_at: 'b' }))).toBe(true);
  });

  it('loads full table rows with part versions and grouped children', () => {
    const c = new EntityCache(orderShape);
    c.load(
      [{ id: 'o1', _v: 9, _v_header: 1, _v_status: 9, _v_totals: 4, _v_lines: 8, order_no: 101, status: 'open', total: 5 }],
      {
        lines: [
          { id: 'l2', order_id: 'o1', line_no: 2, _v: 8 },
          { id: 'l1', order_id: 'o1', line_no: 1, _v: 3 },
          { id: 'x', order_id: 'other', line_no: 1, _v: 3 },
        ],
      },
    );
    const r = c.recs.get('o1')!;
    expect(r.pv).toEqual({ header: 1, status: 9, totals: 4, lines: 8 });
    expect(r.data).not.toHaveProperty('_v');
    expect((r.data.lines as { id: string }[]).map((l) => l.id)).toEqual(['l1', 'l2']);
  });

  it('needsPull skips signals we already hold', () => {
    const c = new EntityCache(orderShape);
    c.merge(item('o1', { status: 5, totals: 5 }, { status: 'open', updated_at: 'a', subtotal: 0, total: 0 }));
    expect(c.needsPull({ entity: 'order', id: 'o1', parts: ['status'], v: 5 })).toBe(false);
    expect(c.needsPull({ entity: 'order', id: 'o1', parts: ['status', 'lines'], v: 5 })).toBe(true);
    expect(c.needsPull({ entity: 'order', id: 'o1', parts: ['totals'], v: 6 })).toBe(true);
    expect(c.needsPull({ entity: 'order', id: 'o2', parts: ['status'], v: 1 })).toBe(true);
    // A version announced for a write that changed nothing: nothing to pull for a held order.
    expect(c.needsPull({ entity: 'order', id: 'o1', parts: [], v: 9 })).toBe(false);
    expect(c.needsPull({ entity: 'order', id: 'o2', parts: [], v: 9 })).toBe(true);
    expect(c.needsPull({ entity: 'order', id: 'o1', parts: ['status'], v: 9, gone: true })).toBe(false);
  });
});

describe('SeqGate', () => {
  it('drops replayed and out-of-order frames', () => {
    const g = new SeqGate();
    expect(g.accept(1)).toBe(true);
    expect(g.accept(2)).toBe(true);
    expect(g.accept(2)).toBe(false);
    expect(g.accept(1)).toBe(false);
    expect(g.accept(5)).toBe(true);
    g.reset(0);
    expect(g.accept(1)).toBe(true);
  });

  it('classifies coalesced ranges as new, duplicate or after a gap', () => {
    const g = new SeqGate();
    g.reset(10); // hello: stream position 10
    expect(g.admit(11, 14)).toBe('new');
    expect(g.admit(12, 14)).toBe('dup');
    expect(g.admit(15, 15)).toBe('new');
    expect(g.admit(18, 20)).toBe('gap');
    expect(g.last).toBe(20);
    expect(g.admit(19, 21)).toBe('new'); // overlapping replay still moves forward
  });
});

describe('PullPlan', () => {
  it('coalesces a burst into one request per entity with the union of parts', () => {
    const p = new PullPlan();
    p.add({ entity: 'order', id: 'o1', parts: ['status'], v: 1 });
    p.add({ entity: 'order', id: 'o1', parts: ['totals'], v: 2 });
    p.add({ entity: 'order', id: 'o2', parts: ['lines'], v: 3 });
    p.add({ entity: 'job', id: 'j1', parts: ['status'], v: 4 });
    p.add({ entity: 'job', id: 'j1', parts: ['status'], v: 5 });
    expect(p.size).toBe(3);
    const reqs = p.drain(() => []);
    expect(reqs).toEqual([
      { entity: 'order', ids: ['o1', 'o2'], parts: ['lines', 'status', 'totals'] },
      { entity: 'job', ids: ['j1'], parts: ['status'] },
    ]);
    expect(p.size).toBe(0);
  });

  it('asks for every part when a signal names none, and chunks long id lists', () => {
    const p = new PullPlan();
    for (let i = 0; i < 5; i++) p.add({ entity: 'batch', id: `b${i}`, parts: [], v: i });
    const reqs = p.drain(() => ['header', 'status'], 2);
    expect(reqs.map((r) => r.ids)).toEqual([['b0', 'b1'], ['b2', 'b3'], ['b4']]);
    expect(reqs[0]!.parts).toEqual(['header', 'status']);
  });
});
