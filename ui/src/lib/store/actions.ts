// Writes. Only input columns are sent: derived columns are the core's job.
import { api } from '../backend';
import type { MenuItem } from '../backend';
import { touch } from './sync';
import type { Batch, Job, JobStatus, Order, OrderLine, OrderType } from './model';

const now = () => new Date().toISOString();
const uuid = () => crypto.randomUUID();

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

export async function createOrder(o: NewOrder, firstLine?: MenuItem): Promise<string> {
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
        currency: 'SAR',
        status: 'open',
        tax_rate_bp: 1500,
        service_rate_bp: o.type === 'dine_in' ? 1000 : 0,
        order_discount: 0,
      },
    },
  ];
  if (firstLine) muts.push(lineInsert(id, 1, firstLine));
  await api.mutate(muts);
  touch('order', id, ['header', 'status', 'totals', 'lines', 'payments']);
  return id;
}

function lineInsert(orderId: string, lineNo: number, item: MenuItem) {
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
      category: item.category,
      station: item.station,
      qty: 1,
      unit_price: item.price,
      discount: 0,
      modifiers: '',
      note: '',
      status: 'new',
      created_at: now(),
    },
  };
}

/** Adds the item, or bumps the qty of an identical plain new line. */
export async function addItem(order: Order, item: MenuItem): Promise<void> {
  const same = order.lines.find(
    (l) => l.status === 'new' && l.item_code === item.code && !l.modifiers && !l.note && !l.discount,
  );
  if (same) {
    await updateLine(same, { qty: same.qty + 1 });
    return;
  }
  const lineNo = order.lines.reduce((m, l) => Math.max(m, l.line_no), 0) + 1;
  await api.mutate([lineInsert(order.id, lineNo, item)]);
  touch('order', order.id, ['lines', 'totals']);
}

export async function updateLine(
  line: OrderLine,
  patch: Partial<Pick<OrderLine, 'qty' | 'discount' | 'modifiers' | 'note' | 'status'>>,
): Promise<void> {
  await api.mutate([{ table: 'order_line', action: 'merge', row: { id: line.id, order_id: line.order_id, ...patch } }]);
  touch('order', line.order_id, ['lines', 'totals']);
}

export async function deleteLine(line: OrderLine): Promise<void> {
  await api.mutate([{ table: 'order_line', action: 'delete', row: { id: line.id, order_id: line.order_id } }]);
  touch('order', line.order_id, ['lines', 'totals']);
}

export async function sendToKitchen(orderId: string): Promise<string> {
  const r = await api.sendToKitchen(orderId);
  touch('order', orderId, ['status', 'lines']);
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
  if (status === 'ready') row.ready_at = ts;
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
