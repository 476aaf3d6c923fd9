// Typed views of the synced tables (columns from schema/capsule-schema.toml).

export type OrderStatus = 'open' | 'sent' | 'paid' | 'closed' | 'void';
export type OrderType = 'dine_in' | 'takeaway' | 'delivery';
export type LineStatus = 'new' | 'sent' | 'void';
export type JobStatus = 'queued' | 'cooking' | 'ready';
export type BatchStatus = 'queued' | 'cooking' | 'ready' | 'assembled' | 'served';

export type TaxClass = 'standard' | 'zero';

/** The one shop settings row (id 'shop'). */
export interface Settings {
  id: string;
  name: string;
  address: string | null;
  phone: string | null;
  tax_number: string | null;
  currency: string;
  currency_digits: number;
  /** Idle seconds before a screen with someone logged in locks itself (0: never). */
  lock_after_s?: number;
  /** A discount up to this share (basis points) needs no manager. */
  discount_limit_bp?: number;
  /** Reasons a void of something the kitchen has, and a discount, must give; one per line. */
  void_reasons?: string | null;
  discount_reasons?: string | null;
  tax_rate_bp: number;
  service_rate_bp: number;
  /** The shop's IANA time zone (Asia/Riyadh): every time shown and printed is local to it. */
  time_zone?: string | null;
  /** The hour (local) the shop's business day starts: a Z at 02:30 closes the day before. */
  day_starts_hour?: number | null;
  /** ISO 3166 country (SA: receipts carry the ZATCA QR code). */
  country?: string | null;
  receipt_title?: string | null;
  receipt_title_ar?: string | null;
  receipt_lang?: 'en' | 'ar' | 'both' | null;
  /** The digits Arabic screens show. */
  arabic_digits?: 'arabic' | 'latin' | null;
  receipt_header: string | null;
  receipt_footer: string | null;
  updated_at: string | null;
}

export interface Category {
  id: string;
  name_en: string;
  name_ar: string | null;
  sort: number;
  updated_at: string | null;
}

export interface Modifier {
  id: string;
  item_id: string;
  name_en: string;
  name_ar: string | null;
  price: number;
  sort: number;
}

export interface MenuItem {
  id: string;
  code: string;
  name_en: string;
  name_ar: string | null;
  category_id: string;
  price: number;
  tax_class: TaxClass;
  station: string;
  sort: number;
  /** False: sold out. */
  available: boolean;
  updated_at: string | null;
  modifiers: Modifier[];
}

/** A network printer (ESC/POS on raw TCP). */
export interface Staff {
  id: string;
  name: string;
  name_ar?: string | null;
  role: string;
  active: boolean;
  updated_at?: string | null;
}

/** Wrong PINs that locked a login out, as the node that locked it reported them. */
export interface Lockout {
  id: string;
  staff_id?: string | null;
  node_id: string;
  node_name?: string | null;
  address?: string | null;
  lockouts: number;
  locked_at: string;
  until: string;
}

/** Whether a node reaches a printer, as that node last reported it. */
export interface PrinterState {
  id: string;
  printer_id: string;
  node_id: string;
  node_name?: string | null;
  ok: boolean;
  error?: string | null;
  since: string;
}

export interface Clock {
  id: string;
  staff_id: string;
  node_id?: string | null;
  kind: 'work' | 'break';
  started_at: string;
  ended_at?: string | null;
  status: 'open' | 'closed';
}

export interface Role {
  id: string;
  name_en: string;
  name_ar?: string | null;
  permissions: string;
}

export interface Printer {
  id: string;
  name: string;
  role: 'receipt' | 'kitchen';
  station: string | null;
  address: string;
  node_id: string | null;
  drawer: boolean;
  updated_at: string | null;
}

export interface OrderLine {
  id: string;
  order_id: string;
  line_no: number;
  item_code: string | null;
  name_en: string;
  name_ar: string | null;
  category: string | null;
  station: string | null;
  qty: number;
  unit_price: number;
  discount: number;
  modifiers: string | null;
  modifier_price: number;
  tax_class: TaxClass;
  note: string | null;
  status: LineStatus;
  batch_id: string | null;
  created_at: string;
  line_total: number;
}

export interface Payment {
  id: string;
  order_id: string;
  method: 'cash' | 'card';
  amount: number;
  tendered: number | null;
  reference: string | null;
  node_id: string | null;
  paid_at: string;
  change_due: number | null;
}

export interface Order {
  id: string;
  /** Given by the hub; null while an order opened offline waits for it. */
  order_no: number | null;
  /** What staff call an order opened while the hub was out of reach (e.g. B-7). */
  provisional_no: string | null;
  shift_id: string;
  node_id: string | null;
  table_label: string | null;
  order_type: OrderType;
  guests: number;
  note: string | null;
  opened_by: string | null;
  opened_at: string;
  currency: string;
  status: OrderStatus;
  updated_at: string | null;
  closed_at: string | null;
  tax_rate_bp: number;
  service_rate_bp: number;
  order_discount: number;
  subtotal: number;
  discount_total: number;
  service_total: number;
  tax_total: number;
  total: number;
  paid_total: number;
  balance_due: number;
  item_count: number;
  lines: OrderLine[];
  payments: Payment[];
}

export interface JobItem {
  id: string;
  job_id: string;
  order_line_id: string | null;
  name_en: string;
  name_ar: string | null;
  qty: number;
  modifiers: string | null;
  note: string | null;
  status: 'pending' | 'done';
}

export interface Job {
  id: string;
  order_id: string;
  batch_id: string;
  station: string;
  order_no: number | null;
  provisional_no: string | null;
  table_label: string | null;
  created_at: string;
  status: JobStatus;
  started_at: string | null;
  ready_at: string | null;
  updated_at: string | null;
  items_total: number;
  items_done: number;
  items: JobItem[];
}

export interface Batch {
  id: string;
  order_id: string;
  batch_no: number;
  kind: 'initial' | 'addition';
  order_no: number | null;
  provisional_no: string | null;
  table_label: string | null;
  created_at: string;
  status: BatchStatus;
  jobs_total: number;
  jobs_ready: number;
  stations: string | null;
  updated_at: string | null;
  ready_at: string | null;
  assembled_at: string | null;
  served_at: string | null;
  served_by: string | null;
}

export interface Shift {
  id: string;
  node_id: string;
  cashier: string;
  opened_at: string;
  opening_float: number;
  status: 'open' | 'closed';
  closed_at: string | null;
  counted_cash: number | null;
  updated_at: string | null;
  orders_count: number;
  cash_sales: number;
  card_sales: number;
  total_sales: number;
  expected_cash: number;
}

export function nextJobStatus(s: JobStatus): JobStatus | null {
  return s === 'queued' ? 'cooking' : s === 'cooking' ? 'ready' : null;
}

/** "no onion; extra cheese" <-> ["no onion", "extra cheese"] */
export function splitModifiers(m: string | null | undefined): string[] {
  return (m ?? '')
    .split(';')
    .map((s) => s.trim())
    .filter(Boolean);
}

export function toggleModifier(m: string | null | undefined, mod: string): string {
  const list = splitModifiers(m);
  const i = list.indexOf(mod);
  if (i >= 0) list.splice(i, 1);
  else list.push(mod);
  return list.join('; ');
}

export interface KitchenProgress {
  total: number;
  ready: number;
  cooking: number;
  state: 'none' | 'queued' | 'cooking' | 'ready';
}

/** How far the kitchen is with an order, from its jobs' status. */
export function kitchenProgress(orderId: string, jobs: Iterable<{ data: Job }>): KitchenProgress {
  let total = 0;
  let ready = 0;
  let cooking = 0;
  for (const { data: j } of jobs) {
    if (j.order_id !== orderId) continue;
    total++;
    if (j.status === 'ready') ready++;
    else if (j.status === 'cooking') cooking++;
  }
  const state = total === 0 ? 'none' : ready === total ? 'ready' : cooking + ready > 0 ? 'cooking' : 'queued';
  return { total, ready, cooking, state };
}
