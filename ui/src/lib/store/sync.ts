// Capsule -> debounce -> batch pull -> merge -> Svelte stores.
import { writable, derived, get, type Readable } from 'svelte/store';
import { api, subscribe, frameBytesReceived, ApiError } from '../backend';
import type { BatchPull, Frame, NodeStatus, Schema, CapsuleSignal } from '../backend';
import { EntityCache, PullPlan, SeqGate, shapeFromSchema, type EntityRec } from './merge';
import type { Batch, Category, Clock, Job, Lockout, MenuItem, Order, Printer, PrinterState, Role, Settings, Shift, Staff } from './model';
import { setArabicDigits, setMoneyUnit, setShopTimeZone } from '../format';
import { setModifierNames } from '../i18n';

export const ENTITIES = ['order', 'job', 'batch', 'shift', 'settings', 'category', 'item', 'printer', 'staff', 'role', 'clock', 'lockout', 'printerstatus'] as const;
export type Entity = (typeof ENTITIES)[number];

const DEBOUNCE_MS = 50;
/** How often a screen reloads its working set, so its caches never grow with history. */
const WORKING_SET_RELOAD_MS = 10 * 60 * 1000;

const caches = new Map<string, EntityCache>();
const stores = {
  order: writable(new Map<string, EntityRec<Order>>()),
  job: writable(new Map<string, EntityRec<Job>>()),
  batch: writable(new Map<string, EntityRec<Batch>>()),
  shift: writable(new Map<string, EntityRec<Shift>>()),
  settings: writable(new Map<string, EntityRec<Settings>>()),
  category: writable(new Map<string, EntityRec<Category>>()),
  item: writable(new Map<string, EntityRec<MenuItem>>()),
  printer: writable(new Map<string, EntityRec<Printer>>()),
  staff: writable(new Map<string, EntityRec<Staff>>()),
  role: writable(new Map<string, EntityRec<Role>>()),
  clock: writable(new Map<string, EntityRec<Clock>>()),
  lockout: writable(new Map<string, EntityRec<Lockout>>()),
  printerstatus: writable(new Map<string, EntityRec<PrinterState>>()),
};

export const orders: Readable<Map<string, EntityRec<Order>>> = stores.order;
export const jobs: Readable<Map<string, EntityRec<Job>>> = stores.job;
export const batches: Readable<Map<string, EntityRec<Batch>>> = stores.batch;
export const shifts: Readable<Map<string, EntityRec<Shift>>> = stores.shift;
export const categories: Readable<Map<string, EntityRec<Category>>> = stores.category;
export const items: Readable<Map<string, EntityRec<MenuItem>>> = stores.item;
export const printers: Readable<Map<string, EntityRec<Printer>>> = stores.printer;
/** The shop's staff (names and roles; their PINs stay with the nodes). */
export const staff: Readable<Map<string, EntityRec<Staff>>> = stores.staff;
export const roles: Readable<Map<string, EntityRec<Role>>> = stores.role;
/** Open time-clock entries (who is at work, who is on a break). */
export const clocks: Readable<Map<string, EntityRec<Clock>>> = stores.clock;
/** The last PIN lockout each node reported per member of staff (wrong PINs guessed). */
export const lockouts: Readable<Map<string, EntityRec<Lockout>>> = stores.lockout;
/** Whether each node reaches each printer, as the nodes report it when it changes. */
export const printerStates: Readable<Map<string, EntityRec<PrinterState>>> = stores.printerstatus;
/** Active staff by name: who may log in at this screen. */
export const activeStaff: Readable<Staff[]> = derived(stores.staff, (m) =>
  [...m.values()].map((r) => r.data).filter((s) => s.active !== false).sort((a, b) => a.name.localeCompare(b.name)),
);

/** The shop settings row, null until it is loaded (a shop that has none yet). */
export const settings: Readable<Settings | null> = derived(
  stores.settings,
  (m) => m.get('shop')?.data ?? [...m.values()][0]?.data ?? null,
);
// Money is shown in the shop's currency, times in its time zone; modifier names in the staff's
// language.
settings.subscribe((s) => {
  if (s) {
    setMoneyUnit(s.currency, s.currency_digits);
    setShopTimeZone(s.time_zone);
    setArabicDigits(s.arabic_digits);
  }
});
items.subscribe((m) => setModifierNames([...m.values()].flatMap((r) => r.data.modifiers ?? [])));

/** The menu as the till shows it: categories by their sort, items by theirs. */
export const menu: Readable<{ category: Category; items: MenuItem[] }[]> = derived(
  [categories, items],
  ([cs, is]) => {
    const byCat = new Map<string, MenuItem[]>();
    for (const r of is.values()) {
      const list = byCat.get(r.data.category_id) ?? [];
      list.push(r.data);
      byCat.set(r.data.category_id, list);
    }
    return [...cs.values()]
      .map((r) => r.data)
      .sort((a, b) => a.sort - b.sort || a.name_en.localeCompare(b.name_en))
      .map((category) => ({
        category,
        items: (byCat.get(category.id) ?? []).sort((a, b) => a.sort - b.sort || a.code.localeCompare(b.code)),
      }));
  },
);

/** This node's /api/status, refreshed every second; null until the first answer. */
export const status = writable<NodeStatus | null>(null);
/**
 * The names staff know the shop's nodes by, by node id: this node's own, the mesh's (each
 * node gossips its name), and the names nodes put on what they report (printer states, PIN
 * lockouts). `nodeName(id)` answers with the name, else the start of the id.
 */
export const nodeNames: Readable<Map<string, string>> = derived(
  [status, stores.printerstatus, stores.lockout],
  ([s, states, locks]) => {
    const names = new Map<string, string>();
    for (const r of [...states.values(), ...locks.values()]) {
      if (r.data.node_name) names.set(r.data.node_id, r.data.node_name);
    }
    for (const p of s?.peers ?? []) if (p.name) names.set(p.node_id, p.name);
    if (s?.name) names.set(s.node_id, s.name);
    return names;
  },
);
export const nodeName: Readable<(id: string | null | undefined) => string> = derived(
  nodeNames,
  (names) => (id: string | null | undefined) => (id ? (names.get(id) ?? id.slice(0, 8)) : ''),
);
/** False while the node itself does not answer (the UI's own link, not the till-hub link). */
export const nodeReachable = writable(true);
/** The frame stream (WebSocket or IPC) is connected. */
export const streamUp = writable(false);
/** The working set loaded at least once. */
export const ready = writable(false);
// A mark tests and the benchmark wait for: the screen has its data.
ready.subscribe((r) => {
  if (typeof document !== 'undefined') document.documentElement.dataset.ready = String(r);
});
export const loadError = writable<string | null>(null);

export interface ClientStats {
  frames: number;
  capsules: number;
  duplicates: number;
  gaps: number;
  rowFrames: number;
  skipped: number;
  pulls: number;
  pulledItems: number;
  lastPullMs: number | null;
  pullMs: number[];
  bytes: number;
}
export const clientStats = writable<ClientStats>({
  frames: 0,
  capsules: 0,
  duplicates: 0,
  gaps: 0,
  rowFrames: 0,
  skipped: 0,
  pulls: 0,
  pulledItems: 0,
  lastPullMs: null,
  pullMs: [],
  bytes: 0,
});

let schema: Schema | null = null;
const gate = new SeqGate();
let plan = new PullPlan();
let timer: ReturnType<typeof setTimeout> | undefined;
let started = false;
let loading: Promise<void> | null = null;

function publish(entity: string): void {
  const c = caches.get(entity);
  const s = (stores as Record<string, { set: (m: Map<string, EntityRec<never>>) => void }>)[entity];
  if (c && s) s.set(new Map(c.recs) as Map<string, EntityRec<never>>);
}

function allParts(entity: string): string[] {
  return Object.keys(schema?.entities[entity]?.parts ?? {});
}

/**
 * Load what the screens show: the node's working set (open business, the day's newest
 * finished orders with their kitchen work, open shifts, the menu, settings and printers), one
 * bounded answer however much history the shop has. Replaces every cache, so what left the
 * working set (yesterday's orders) leaves the screen too.
 */
async function loadAll(): Promise<void> {
  schema ??= await api.schema();
  const snap = await api.workingSet();
  for (const e of ENTITIES) {
    const def = schema.entities[e];
    if (!def) continue;
    let cache = caches.get(e);
    if (!cache) caches.set(e, (cache = new EntityCache(shapeFromSchema(def))));
    const children: Record<string, (typeof snap.tables)[string]> = {};
    for (const [part, c] of Object.entries(def.children ?? {})) children[part] = snap.tables[c.table] ?? [];
    cache.load(snap.tables[def.table] ?? [], children);
    publish(e);
  }
  ready.set(true);
  loadError.set(null);
}

/** Reload the working set (start, reset frames, reconnects). Concurrent calls share one load. */
export function reload(): Promise<void> {
  loading ??= loadAll()
    .catch((e: unknown) => {
      loadError.set(e instanceof Error ? e.message : String(e));
    })
    .finally(() => {
      loading = null;
    });
  return loading;
}

async function flush(): Promise<void> {
  timer = undefined;
  const requests = plan.drain(allParts);
  const touched = new Set<string>();
  await Promise.all(
    requests.map(async (r) => {
      const cache = caches.get(r.entity);
      if (!cache) return;
      const t0 = performance.now();
      try {
        const res = await api.pull(r.entity, r.ids, r.parts);
        const ms = performance.now() - t0;
        clientStats.update((s) => ({
          ...s,
          pulls: s.pulls + 1,
          pulledItems: s.pulledItems + res.items.length,
          lastPullMs: ms,
          pullMs: [...s.pullMs.slice(-199), ms],
        }));
        for (const item of res.items) if (cache.merge(item)) touched.add(r.entity);
        for (const id of res.missing) if (cache.remove(id, Number.MAX_SAFE_INTEGER)) touched.add(r.entity);
      } catch (e) {
        // Pull failed (node busy or restarting): ask again later for the same things.
        if (!(e instanceof ApiError && e.notAvailable)) {
          for (const id of r.ids) plan.add({ entity: r.entity, id, parts: r.parts, v: 0 });
          schedule(1000);
        }
      }
    }),
  );
  for (const e of touched) publish(e);
}

function schedule(ms = DEBOUNCE_MS): void {
  timer ??= setTimeout(() => void flush(), ms);
}

function onCapsule(sig: CapsuleSignal): void {
  const cache = caches.get(sig.entity);
  if (!cache) return;
  if (sig.gone) {
    if (cache.remove(sig.id, sig.v)) publish(sig.entity);
    return;
  }
  if (!cache.needsPull(sig)) {
    clientStats.update((s) => ({ ...s, skipped: s.skipped + 1 }));
    return;
  }
  plan.add(sig);
  schedule();
}

let reloadTimer: ReturnType<typeof setTimeout> | undefined;
/** Coalesced full reload (gaps, lag, reset): at most one in flight, none more often than 300 ms. */
function scheduleReload(): void {
  reloadTimer ??= setTimeout(() => {
    reloadTimer = undefined;
    void reload();
  }, 300);
}

function admit(from: number, seq: number): boolean {
  const r = gate.admit(from, seq);
  if (r === 'dup') {
    clientStats.update((s) => ({ ...s, duplicates: s.duplicates + 1 }));
    return false;
  }
  if (r === 'gap') {
    // We missed frames: the simplest correct answer is to read everything again.
    clientStats.update((s) => ({ ...s, gaps: s.gaps + 1 }));
    scheduleReload();
  }
  return true;
}

/** Legacy/both rollout: the frame carries whole entities; merge them without a pull. */
function onRows(pulls: BatchPull[]): void {
  const touched = new Set<string>();
  for (const p of pulls) {
    const cache = caches.get(p.entity);
    if (!cache) continue;
    for (const item of p.items) if (cache.merge(item)) touched.add(p.entity);
    for (const id of p.missing ?? []) if (cache.remove(id, Number.MAX_SAFE_INTEGER)) touched.add(p.entity);
  }
  for (const e of touched) publish(e);
}

function onFrame(f: Frame): void {
  clientStats.update((s) => ({ ...s, frames: s.frames + 1, bytes: frameBytesReceived() }));
  switch (f.type) {
    case 'hello':
      // A (re)connection: anything may have happened meanwhile.
      gate.reset(f.seq);
      if (get(ready)) scheduleReload();
      break;
    case 'reset':
      gate.reset(f.seq);
      plan = new PullPlan();
      scheduleReload();
      break;
    case 'lagged':
    case 'too_old':
      gate.reset(-1);
      scheduleReload();
      break;
    case 'capsule':
      if (!admit(f.seq, f.seq)) return;
      clientStats.update((s) => ({ ...s, capsules: s.capsules + 1 }));
      onCapsule(f.capsule);
      break;
    case 'capsules':
      if (!admit(f.from, f.seq)) return;
      clientStats.update((s) => ({ ...s, capsules: s.capsules + f.items.length }));
      for (const c of f.items) onCapsule(c);
      break;
    case 'rows':
      if (!admit(f.from, f.seq)) return;
      clientStats.update((s) => ({ ...s, rowFrames: s.rowFrames + 1 }));
      onRows(f.rows);
      break;
  }
}

async function pollStatus(): Promise<void> {
  try {
    status.set(await api.status());
    nodeReachable.set(true);
  } catch {
    nodeReachable.set(false);
  }
}

/** Start syncing (idempotent). */
export function start(): void {
  if (started) return;
  started = true;
  void pollStatus();
  // A hub change shows within a second of the node knowing it.
  setInterval(() => void pollStatus(), 1000);
  void reload();
  // A screen that stays open for weeks (a kitchen TV) drops what left the working set: the
  // orders it pulled as they changed stay in its caches only until the next load.
  setInterval(() => void reload(), WORKING_SET_RELOAD_MS);
  subscribe(onFrame, (up) => {
    streamUp.set(up);
    if (up) void pollStatus();
  });
}

/** Ask for an entity now (after our own write, so the screen does not wait for the frame). */
export function touch(entity: Entity, id: string, parts: string[]): void {
  const cache = caches.get(entity);
  if (!cache) return;
  plan.add({ entity, id, parts, v: 0 });
  schedule(0);
}

