// Pure merge/dedup logic of the capsule store. No I/O here, so it is unit-tested directly.
import type { CapsuleSignal, PulledItem, Row, SchemaEntity } from '../backend';

/** One entity as this screen knows it: flat columns plus child arrays under their part name. */
export interface EntityRec<T = Record<string, unknown>> {
  id: string;
  /** newest version of any part we hold */
  v: number;
  /** version of each part we hold */
  pv: Record<string, number>;
  data: T;
}

export interface EntityShape {
  /** column part -> its columns */
  columns: Record<string, string[]>;
  /** child part -> sort key for its rows */
  children: Record<string, { table: string; parentField: string }>;
}

export function shapeFromSchema(e: SchemaEntity): EntityShape {
  const columns: Record<string, string[]> = {};
  const children: EntityShape['children'] = {};
  for (const [part, cols] of Object.entries(e.parts)) {
    const child = e.children?.[part];
    if (child) children[part] = { table: child.table, parentField: child.parent_field };
    else columns[part] = cols;
  }
  return { columns, children };
}

const CHILD_SORT = ['line_no', 'batch_no', 'paid_at', 'created_at'];

export function sortChildren(rows: Row[]): Row[] {
  const key = CHILD_SORT.find((k) => rows.some((r) => r[k] !== undefined && r[k] !== null));
  const out = rows.map(stripVersions);
  if (!key) return out;
  return out.sort((a, b) => {
    const x = a[key] as string | number;
    const y = b[key] as string | number;
    return x < y ? -1 : x > y ? 1 : 0;
  });
}

export function stripVersions(row: Row): Row {
  const out: Row = { id: row.id };
  for (const [k, val] of Object.entries(row)) if (!k.startsWith('_v')) out[k] = val;
  return out;
}

/**
 * The replica of one entity kind. `merge` keeps, part by part, whatever is newest by `pv`,
 * so a late or duplicated pull can never roll a part back.
 */
export class EntityCache {
  readonly recs = new Map<string, EntityRec>();
  /** id -> version at which it was deleted; older pulls must not resurrect it */
  readonly gone = new Map<string, number>();

  constructor(readonly shape: EntityShape) {}

  /** Merge one pulled item. Returns true if anything changed. */
  merge(item: PulledItem): boolean {
    const tomb = this.gone.get(item.id);
    if (tomb !== undefined) {
      if (item.v <= tomb) return false;
      this.gone.delete(item.id);
    }
    const old = this.recs.get(item.id);
    let data: Record<string, unknown> | null = null;
    let pv: Record<string, number> | null = null;
    for (const part of Object.keys(item.pv)) {
      const incoming = item.pv[part] ?? item.v;
      if (old && (old.pv[part] ?? -1) >= incoming) continue;
      data ??= { ...(old?.data ?? { id: item.id }) };
      pv ??= { ...(old?.pv ?? {}) };
      pv[part] = incoming;
      if (part in this.shape.children) {
        const rows = item.payload[part];
        data[part] = Array.isArray(rows) ? sortChildren(rows as Row[]) : [];
      } else {
        for (const col of this.shape.columns[part] ?? []) {
          if (col in item.payload) data[col] = item.payload[col];
        }
      }
    }
    if (!data || !pv) return false;
    data.id = item.id;
    this.recs.set(item.id, { id: item.id, v: Math.max(old?.v ?? 0, item.v), pv, data });
    return true;
  }

  /** The entity was deleted at version v (or reported missing: v = Infinity). */
  remove(id: string, v: number): boolean {
    const prev = this.gone.get(id) ?? -1;
    this.gone.set(id, Math.max(prev, v));
    return this.recs.delete(id);
  }

  /** Does this signal carry anything newer than what we hold? */
  needsPull(sig: CapsuleSignal): boolean {
    if (sig.gone) return false;
    const tomb = this.gone.get(sig.id);
    if (tomb !== undefined && sig.v <= tomb) return false;
    const rec = this.recs.get(sig.id);
    if (!rec) return true;
    // No part named: the hub only announces a version (a write that changed no row).
    if (sig.parts.length === 0) return false;
    return sig.parts.some((p) => (rec.pv[p] ?? -1) < sig.v);
  }

  /** Replace everything with full table rows (initial load or reset). */
  load(headers: Row[], children: Record<string, Row[]>): void {
    this.recs.clear();
    this.gone.clear();
    const byParent: Record<string, Map<string, Row[]>> = {};
    for (const [part, def] of Object.entries(this.shape.children)) {
      const m = new Map<string, Row[]>();
      for (const r of children[part] ?? []) {
        const pid = String(r[def.parentField]);
        let list = m.get(pid);
        if (!list) m.set(pid, (list = []));
        list.push(r);
      }
      byParent[part] = m;
    }
    for (const row of headers) {
      const v = Number(row._v ?? 0);
      const pv: Record<string, number> = {};
      for (const part of [...Object.keys(this.shape.columns), ...Object.keys(this.shape.children)]) {
        pv[part] = Number(row[`_v_${part}`] ?? v);
      }
      const data: Record<string, unknown> = stripVersions(row);
      for (const part of Object.keys(this.shape.children)) {
        data[part] = sortChildren(byParent[part]?.get(row.id) ?? []);
      }
      this.recs.set(row.id, { id: row.id, v, pv, data });
    }
  }
}

/**
 * Tracks the stream position. A frame covering `from..=seq` is a duplicate if `seq` was
 * already seen (reconnects replay), and follows a gap if `from` is past the next position.
 */
export class SeqGate {
  last = -1;

  admit(from: number, seq: number): 'new' | 'dup' | 'gap' {
    if (seq <= this.last) return 'dup';
    const gap = this.last >= 0 && from > this.last + 1;
    this.last = seq;
    return gap ? 'gap' : 'new';
  }

  /** Returns true if the frame is new (gaps included). */
  accept(seq: number): boolean {
    return this.admit(seq, seq) !== 'dup';
  }

  reset(seq = -1): void {
    this.last = seq;
  }
}

/** Accumulates signals; `drain` yields one request per entity: all ids, union of parts. */
export class PullPlan {
  private readonly pending = new Map<string, Map<string, Set<string>>>();

  add(sig: CapsuleSignal): void {
    let ids = this.pending.get(sig.entity);
    if (!ids) this.pending.set(sig.entity, (ids = new Map()));
    let parts = ids.get(sig.id);
    if (!parts) ids.set(sig.id, (parts = new Set()));
    for (const p of sig.parts) parts.add(p);
  }

  get size(): number {
    let n = 0;
    for (const ids of this.pending.values()) n += ids.size;
    return n;
  }

  drain(allParts: (entity: string) => string[], chunk = 100): { entity: string; ids: string[]; parts: string[] }[] {
    const out: { entity: string; ids: string[]; parts: string[] }[] = [];
    for (const [entity, ids] of this.pending) {
      const union = new Set<string>();
      for (const ps of ids.values()) for (const p of ps) union.add(p);
      const parts = union.size > 0 ? [...union].sort() : allParts(entity);
      const list = [...ids.keys()];
      for (let i = 0; i < list.length; i += chunk) out.push({ entity, ids: list.slice(i, i + chunk), parts });
    }
    this.pending.clear();
    return out;
  }
}
