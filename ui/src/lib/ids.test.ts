import { describe, expect, it } from 'vitest';
import { newId } from './ids';

describe('new ids', () => {
  it('are UUIDv7 strings carrying their time', () => {
    const id = newId(Date.UTC(2026, 11, 3, 21, 0, 0));
    expect(id).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
    expect(parseInt(id.replace(/-/g, '').slice(0, 12), 16)).toBe(Date.UTC(2026, 11, 3, 21, 0, 0));
  });

  it('sort by time and never repeat', () => {
    const ids = Array.from({ length: 1000 }, (_, i) => newId(1_700_000_000_000 + i));
    expect([...ids].sort()).toEqual(ids);
    expect(new Set(Array.from({ length: 1000 }, () => newId(1_700_000_000_000))).size).toBe(1000);
  });
});
