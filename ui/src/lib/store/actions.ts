// Writes. Only input columns are sent: derived columns are the core's job.
import { api } from '../backend';
import { newId as uuid } from '../ids';
import { touch } from './sync';
import type { Batch, Category, Job, JobStatus, MenuItem, Modifier, Order, OrderLine, OrderType, Settings } from './model';
import { splitModifiers, toggleModifier } from './model';
import { watchPrint } from './printing';

const now = () => new Date().toISOString();

export async function openShift(nodeId: string, cashier: string, openingFloat: number): Promise<string> {
  const id = uuid();
  await api.mutate([
    {
      table: 'pos_shift',
      action: 'insert',
      row: { id, node_id: nodeId, cashier, opened_at: now(), opening_float: openingFloat, status: 'open' },
    },
  ]);
  touch('shift', id, ['header', 'status', 'totals']);
  return id;
}

export async function closeShift(id: string, countedCash: number): Promise<void> {
  const ts = now();
  await api.mutate([
    {
      table: 'pos_shift',
      action: 'merge',
      row: { id, status: 'closed', closed_at: ts, counted_cash: countedCash, updated_at: ts },
    },
  ]);
  touch('shift', id, ['status', 'totals']);
}

/** A new order; the hub gives it its number (order_no), so two tills never clash. */
export interface NewOrder {
  shiftId: string;
  nodeId: string;
  cashier: string;
  type: OrderType;
  table: string;
  guests: number;
}

/** Tax, service and currency come from the shop settings as they are when the order opens. */
export async function createOrder(o: NewOrder, shop: Settings, firstLine?: Rung): Promise<string> {
  const id = uuid();
  const ts = now();
  const muts: Parameters<typeof api.mutate>[0] = [
    {
      table: 'order_header',
      action: 'insert',
      row: {
        id,
        shift_id: o.shiftId,
        node_id: o.nodeId,
        table_label: o.table || null,
        order_type: o.type,
        guests: o.guests,
        opened_by: o.cashier,
        opened_at: ts,
        currency: shop.currency,
        status: 'open',
        tax_rate_bp: shop.tax_rate_bp,
        service_rate_bp: o.type === 'dine_in' ? shop.service_rate_bp : 0,
        order_discount: 0,
      },
    },
  ];
  if (firstLine) muts.push(lineInsert(id, 1, firstLine));
  await api.mutate(muts);
  touch('order', id, ['header', 'status', 'totals', 'lines', 'payments']);
  return id;
}

/** A menu item as it is rung up, with the name of its category. */
export interface Rung {
  item: MenuItem;
  category: Category | null;
}

/** The line copies the item's name and price now: a later menu change never alters it. */
function lineInsert(orderId: string, lineNo: number, { item, category }: Rung) {
  return {
    table: 'order_line',
    action: 'insert' as const,
    row: {
      id: uuid(),
      order_id: orderId,
      line_no: lineNo,
      item_code: item.code,
      name_en: item.name_en,
      name_ar: item.name_ar,
      category: category?.name_en ?? null,
      station: item.station,
      qty: 1,
      unit_price: item.price,
      tax_class: item.tax_class,
      discount: 0,
      modifiers: '',
      modifier_price: 0,
      note: '',
      status: 'new',
      created_at: now(),
    },
  };
}

/** Adds the item, or bumps the qty of an identical plain new line. */
export async function addItem(order: Order, rung: Rung): Promise<void> {
  const item = rung.item;
  const same = order.lines.find(
    (l) =>
      l.status === 'new' &&
      l.item_code === item.code &&
      l.unit_price === item.price &&
      !l.modifiers &&
      !l.note &&
      !l.discount,
  );
  if (same) {
    await updateLine(same, { qty: same.qty + 1 });
    return;
  }
  const lineNo = order.lines.reduce((m, l) => Math.max(m, l.line_no), 0) + 1;
  await api.mutate([lineInsert(order.id, lineNo, rung)]);
  touch('order', order.id, ['lines', 'totals']);
}

export async function updateLine(
  line: OrderLine,
  patch: Partial<Pick<OrderLine, 'qty' | 'discount' | 'modifiers' | 'modifier_price' | 'note' | 'status'>> & {
    void_reason?: string;
    discount_reason?: string;
  },
): Promise<void> {
  await api.mutate([{ table: 'order_line', action: 'merge', row: { id: line.id, order_id: line.order_id, ...patch } }]);
  touch('order', line.order_id, ['lines', 'totals']);
}

/**
 * Adds or removes a modifier. The line's modifier price is recomputed from the item's
 * modifiers as the menu prices them now, so it never drifts from what the line shows.
 */
export async function toggleLineModifier(line: OrderLine, mod: Modifier, offered: Modifier[]): Promise<void> {
  const modifiers = toggleModifier(line.modifiers, mod.name_en);
  const chosen = new Set(splitModifiers(modifiers));
  const price = offered.filter((m) => chosen.has(m.name_en)).reduce((sum, m) => sum + m.price, 0);
  await updateLine(line, { modifiers, modifier_price: price });
}

export async function deleteLine(line: OrderLine): Promise<void> {
  // A delete names the row only (the node refuses any other column): it knows the order.
  await api.mutate([{ table: 'order_line', action: 'delete', row: { id: line.id } }]);
  touch('order', line.order_id, ['lines', 'totals']);
}

export async function sendToKitchen(orderId: string): Promise<string> {
  const r = await api.sendToKitchen(orderId);
  touch('order', orderId, ['status', 'lines']);
  if (r.print) watchPrint(r.print, 'print_ticket');
  return r.batch_id;
}

export async function takePayment(
  order: Order,
  p: { method: 'cash' | 'card'; amount: number; tendered?: number; reference?: string; nodeId: string },
): Promise<string> {
  const id = uuid();
  const ts = now();
  await api.mutate([
    {
      table: 'order_payment',
      action: 'insert',
      row: {
        id,
        order_id: order.id,
        method: p.method,
        amount: p.amount,
        tendered: p.method === 'cash' ? (p.tendered ?? p.amount) : null,
        reference: p.method === 'card' ? (p.reference ?? '') : null,
        node_id: p.nodeId,
        paid_at: ts,
      },
    },
  ]);
  await api.mutate([{ table: 'order_header', action: 'merge', row: { id: order.id, status: 'paid', updated_at: ts } }]);
  touch('order', order.id, ['status', 'totals', 'payments']);
  return id;
}

export async function setJobStatus(job: Job, status: JobStatus): Promise<void> {
  const ts = now();
  const row: Record<string, unknown> = { id: job.id, status, updated_at: ts };
  if (status === 'cooking') {
    row.started_at = job.started_at ?? ts;
    row.ready_at = null;
  }
  if (status === 'ready') {
    row.ready_at = ts;
    // Straight from the queue (a one-tap station): it was started when it was finished.
    if (!job.started_at) row.started_at = ts;
  }
  await api.mutate([{ table: 'job_order_header', action: 'merge', row: row as { id: string } }]);
  touch('job', job.id, ['status', 'progress']);
}

export async function setBatchStatus(batch: Batch, status: 'assembled' | 'served', by: string): Promise<void> {
  const ts = now();
  const row: Record<string, unknown> = { id: batch.id, status, updated_at: ts };
  if (status === 'assembled') row.assembled_at = ts;
  if (status === 'served') {
    row.served_at = ts;
    row.served_by = by;
  }
  await api.mutate([{ table: 'job_order_batch', action: 'merge', row: row as { id: string } }]);
  touch('batch', batch.id, ['status', 'handoff']);
}

/** Manager's menu edits: only the columns named are written. */
export async function saveItem(row: Partial<MenuItem> & { id: string }, insert: boolean): Promise<void> {
  const cols: Record<string, unknown> = { ...row, updated_at: now() };
  delete cols.modifiers;
  await api.mutate([{ table: 'menu_item', action: insert ? 'insert' : 'merge', row: cols as { id: string } }]);
  touch('item', row.id, ['header', 'availability', 'modifiers']);
}

/** Sold out (or back): from the dashboard or the kitchen screen. */
export async function setAvailable(item: MenuItem, available: boolean): Promise<void> {
  await saveItem({ id: item.id, available }, false);
}

export async function saveSettings(row: Partial<Settings> & { id: string }): Promise<void> {
  await api.mutate([{ table: 'shop_settings', action: 'merge', row: { ...row, updated_at: now() } }]);
  touch('settings', row.id, ['shop', 'money']);
}

export { uuid as newId };

/** The order's receipt on this till's printer: once per state of payment, however often asked. */
export async function printReceipt(orderId: string, copy = false): Promise<void> {
  const r = await api.printReceipt(orderId, copy ? uuid() : undefined);
  if (copy && r.skipped.length) throw new Error(r.skipped.join('; '));
  // Followed until it prints: a printer that is off shows here, with Retry; a copy confirms.
  watchPrint(r, 'print_receipt', copy);
}

/** A round's kitchen tickets again, marked as a reprint. */
export async function reprintTickets(batchId: string): Promise<void> {
  const r = await api.reprintTickets(batchId, uuid());
  if (r.skipped.length && !r.queued.length) throw new Error(r.skipped.join('; '));
  watchPrint(r, 'print_ticket', true);
}

export async function savePrinter(row: Record<string, unknown> & { id: string }, insert: boolean): Promise<void> {
  await api.mutate([{ table: 'printer', action: insert ? 'insert' : 'merge', row: { ...row, updated_at: now() } }]);
  touch('printer', row.id, ['header']);
}

/** A printer taken out: its waiting jobs stay on their nodes and fail with a clear error. */
export async function deletePrinter(id: string): Promise<void> {
  await api.mutate([{ table: 'printer', action: 'delete', row: { id } }]);
  touch('printer', id, ['header']);
}

/**
 * An item off the menu. The core deletes an entity's child rows with it (its modifiers go
 * too); orders already rung up keep their lines, which copied the item's name and price.
 */
export async function deleteItem(id: string): Promise<void> {
  await api.mutate([{ table: 'menu_item', action: 'delete', row: { id } }]);
  touch('item', id, ['header', 'availability', 'modifiers']);
}

/** A menu category: added, renamed or moved; only the columns named are written. */
export async function saveCategory(row: Partial<Category> & { id: string }, insert: boolean): Promise<void> {
  await api.mutate([{ table: 'menu_category', action: insert ? 'insert' : 'merge', row: { ...row, updated_at: now() } }]);
  touch('category', row.id, ['header']);
}

/** New positions of categories (lowest first), in one write so the order never shows half done. */
export async function sortCategories(rows: { id: string; sort: number }[]): Promise<void> {
  if (!rows.length) return;
  const ts = now();
  await api.mutate(rows.map((r) => ({ table: 'menu_category', action: 'merge' as const, row: { id: r.id, sort: r.sort, updated_at: ts } })));
  for (const r of rows) touch('category', r.id, ['header']);
}

/** An empty category off the menu (the editor refuses one that still has items). */
export async function deleteCategory(id: string): Promise<void> {
  await api.mutate([{ table: 'menu_category', action: 'delete', row: { id } }]);
  touch('category', id, ['header']);
}

/** A modifier of an item (a child row of the item): added or changed. */
export async function saveModifier(row: Partial<Modifier> & { id: string; item_id: string }, insert: boolean): Promise<void> {
  await api.mutate([{ table: 'menu_modifier', action: insert ? 'insert' : 'merge', row }]);
  touch('item', row.item_id, ['modifiers']);
}

/** A modifier off its item (a delete names the row's id only; the node refuses other columns). */
export async function deleteModifier(mod: { id: string; item_id: string }): Promise<void> {
  await api.mutate([{ table: 'menu_modifier', action: 'delete', row: { id: mod.id } }]);
  touch('item', mod.item_id, ['modifiers']);
}
