import { describe, expect, it } from 'vitest';
import type { OutboxEntry } from './backend';
import { discardableAll, groupRefusals, refusalKind } from './refusals';

function entry(table: string, error: string, mid = `${table}-${Math.random()}`): OutboxEntry {
  return { mid, table, action: 'insert', queued_at: '2026-12-07T01:00:00.000Z', attempts: 1, state: 'rejected', hub_seq: null, error };
}

describe('refused writes', () => {
  it('names what a manager can do about each reason', () => {
    expect(refusalKind("409: shop_settings 'shop' already exists")).toBe('already');
    expect(refusalKind("mutation 0: order 'o1' was counted in Z report #1: a closed day's orders cannot change")).toBe('closed_day');
    expect(refusalKind("404: mutation 0: order_header 'x' does not exist")).toBe('gone');
    expect(refusalKind('400: qty must be between 1 and 10000')).toBe('other');
    expect(refusalKind(null)).toBe('other');
  });

  it('groups 84 replayed menu writes into one line, closed days first with their Z numbers', () => {
    const rejected = [
      ...Array.from({ length: 80 }, (_, i) => entry('menu_item', `409: menu_item 'item-${i}' already exists`)),
      ...Array.from({ length: 4 }, (_, i) => entry('menu_modifier', `409: menu_modifier 'm${i}' already exists`)),
      entry('order_header', "409: order 'o1' was counted in Z report #3: a closed day's orders cannot change"),
      entry('order_line', "409: order 'o2' was counted in Z report #1: a closed day's orders cannot change"),
      entry('order_line', '400: qty must be between 1 and 10000'),
    ];
    const groups = groupRefusals(rejected);
    expect(groups.map((g) => g.kind)).toEqual(['closed_day', 'already', 'other']);
    expect(groups[0].zNumbers).toEqual([1, 3]);
    expect(groups[1].entries).toHaveLength(84);
    expect(groups[1].tables).toEqual([
      ['menu_item', 80],
      ['menu_modifier', 4],
    ]);
    expect(discardableAll('already')).toBe(true);
    expect(discardableAll('other')).toBe(false);
  });

  it('shows nothing when nothing was refused', () => {
    expect(groupRefusals([])).toEqual([]);
  });
});
