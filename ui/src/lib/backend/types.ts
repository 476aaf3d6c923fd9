// Wire types of the node's API. Kept free of any transport detail.

export type Role = 'hub' | 'till' | 'screen';
export type SyncState = 'online' | 'syncing' | 'offline';

export interface NodeStatus {
  node_id: string;
  role: Role;
  state: SyncState;
  hub_url: string | null;
  hub_node_id: string | null;
  seq: number;
  /** A till's own writes not yet back from the hub. */
  pending: number;
  /** A till's writes the hub refused, set aside for the manager. */
  rejected: number;
  offline_since: number | null;
  /** Scheduled backups, on a hub started with --backup-dir. */
  backup?: BackupStatus;
  /** Highest hub term this node has seen (0 for a fixed hub). */
  term?: number;
  priority?: number;
  /** Set when the election decides this node's role (`--role auto` / screens). */
  mesh?: Role;
  /** The shop's nodes this node sees, itself first. */
  peers?: PeerStatus[];
  /** The last change of hub, for the banner. */
  hub_change?: HubChange;
  /** This device's id (the hash of its key) and whether it belongs to a roster. */
  device_id?: string;
  paired?: boolean;
  /** A follower's last failure while offline (the hub unreachable or not admitting it). */
  link_error?: string;
  /** The name staff know this node by ("Till 2"). */
  name?: string;
}

/** A device of the shop's roster (GET /api/devices): no keys, no certificates. */
export interface Device {
  id: string;
  name: string;
  role: 'hub-eligible' | 'till' | 'screen';
  paired_at: string | null;
  paired_by: string | null;
  revoked_at: string | null;
}

/** What a paired browser may do: follow and bump (a kitchen TV), or what the manager's PC does. */
export type ScreenRole = 'kitchen' | 'manager';

/** A browser asking to pair, waiting for a manager (GET /api/pair/screens). */
export interface ScreenAsking {
  id: string;
  code: string;
  name: string;
  role: ScreenRole;
  waiting_s: number;
}

/** A browser a manager paired. */
export interface PairedScreen {
  id: string;
  name: string;
  role: ScreenRole;
  paired_at: string;
}

/** A pairing code ("Add a device"), valid `expires_in_s` seconds. */
export interface PairOffer {
  code: string;
  session: string;
  device_id: string;
  expires_in_s: number;
  tries_left: number;
}

export interface PeerStatus {
  node_id: string;
  name: string;
  url: string;
  role: Role;
  priority: number;
  fresh: number;
  term: number;
  live: boolean;
}

export interface HubChange {
  term: number;
  hub_node_id: string;
  hub_name: string;
  /** RFC 3339 UTC. */
  at: string;
}

export interface OutboxEntry {
  mid: string;
  table: string;
  action: string;
  queued_at: string;
  attempts: number;
  state: 'pending' | 'sent' | 'rejected';
  hub_seq: number | null;
  error: string | null;
}

export interface Outbox {
  /** The oldest of each (a page), and how many there are in all. */
  pending: OutboxEntry[];
  rejected: OutboxEntry[];
  pending_total: number;
  rejected_total: number;
}

export interface BackupStatus {
  dir: string;
  every_s: number;
  keep: number;
  last_file: string | null;
  last_bytes: number | null;
  last_at: string | null;
  last_error: string | null;
  count: number;
}

export type EntityName = 'order' | 'job' | 'batch' | 'shift' | 'settings' | 'category' | 'item' | 'printer';

export interface SchemaEntity {
  table: string;
  id_field: string;
  /** part name -> columns (for child parts: the child table's columns) */
  parts: Record<string, string[]>;
  children?: Record<string, { table: string; parent_field: string }>;
}

export interface Schema {
  entities: Record<string, SchemaEntity>;
}

export type Row = Record<string, unknown> & { id: string };

export interface PulledItem {
  id: string;
  v: number;
  pv: Record<string, number>;
  payload: Record<string, unknown>;
}

export interface BatchPull {
  entity: string;
  parts: string[];
  items: PulledItem[];
  missing: string[];
}

export interface CapsuleSignal {
  entity: string;
  id: string;
  parts: string[];
  v: number;
  ts?: string;
  source?: string;
  gone?: boolean;
}

/**
 * Frames of a node's /ws stream. Stream positions are the hub's capsule-log sequence numbers;
 * a data frame covers `from..=seq` (a single capsule: `seq..=seq`).
 */
export type Frame =
  | { type: 'hello'; node_id: string; role: Role; seq: number; v?: number; oldest?: number }
  | { type: 'capsule'; seq: number; capsule: CapsuleSignal }
  | { type: 'capsules'; seq: number; from: number; items: CapsuleSignal[] }
  | { type: 'rows'; seq: number; from: number; ts?: number; rows: BatchPull[] }
  | { type: 'lagged'; missed?: number }
  | { type: 'too_old'; oldest?: number }
  | { type: 'reset'; seq: number };

export type MutationAction = 'insert' | 'merge' | 'save' | 'delete';

export interface Mutation {
  mid: string;
  table: string;
  action: MutationAction;
  row: Row;
}

export interface MutationResult {
  mid: string;
  /** queued: committed on this till, not yet confirmed by the hub (answered 202). */
  status: 'applied' | 'duplicate' | 'queued';
  seq: number;
}

/** Counters from GET /api/metrics. Every field is optional: the endpoint is still growing. */
export type Metrics = Record<string, unknown>;

/** A row of a report's by-category or by-item table. */
export interface SalesRow {
  key: string;
  name_en: string;
  name_ar: string | null;
  qty: number;
  amount: number;
}

/** One member of staff in a report's day: payments taken and time worked. */
export interface StaffDay {
  staff_id: string;
  name: string;
  name_ar: string | null;
  payments: number;
  amount: number;
  clocked_s: number;
  break_s: number;
  worked_s: number;
  clocked_in: boolean;
}

/** One audited write (GET /api/orders/{id}/timeline, GET /api/audit). */
export interface AuditEntry {
  mid: string;
  v: number;
  at: string | null;
  staff: string | null;
  approver: string | null;
  device: string | null;
  table: string;
  row_id: string;
  what: string;
  staff_name: string | null;
  approver_name: string | null;
}

export interface ShiftCash {
  id: string;
  cashier: string;
  node_id: string;
  status: string;
  opened_at: string;
  closed_at: string | null;
  opening_float: number;
  cash_sales: number;
  card_sales: number;
  expected_cash: number;
  counted_cash: number | null;
  difference: number | null;
}

/** An X or Z report, computed by the core (GET /api/reports/x, /api/reports/z/N). */
export interface Report {
  kind: 'X' | 'Z';
  number: number | null;
  taken_at: string;
  taken_by: string | null;
  /** The business day it reports (`2026-12-07`). */
  business_date?: string | null;
  shop: string | null;
  currency: string | null;
  currency_digits: number;
  from_v: number;
  to_v: number;
  orders: number;
  guests: number;
  items: number;
  gross_sales: number;
  discounts: number;
  net_sales: number;
  service: number;
  tax: number;
  total: number;
  paid: number;
  by_category: SalesRow[];
  by_item: SalesRow[];
  by_method: { method: string; count: number; amount: number }[];
  void_orders: number;
  void_orders_amount: number;
  void_lines: number;
  void_lines_amount: number;
  open_orders: number;
  open_orders_amount: number;
  shifts: ShiftCash[];
  by_staff?: StaffDay[];
}

/** A search of past and present orders (GET /api/orders); every field given must match. */
export interface OrderSearch {
  number?: number;
  /** Opened at or after / before these UTC instants (RFC 3339). */
  from?: string;
  to?: string;
  table?: string;
  /** The order's total in minor units. */
  amount?: number;
  reference?: string;
  before?: string;
  limit?: number;
}

export interface OrderHit {
  id: string;
  order_no: number | null;
  provisional_no: string | null;
  opened_at: string | null;
  closed_at: string | null;
  table_label: string | null;
  status: string | null;
  total: number;
  paid_total: number;
  shift_id: string | null;
  node_id: string | null;
}

export interface OrderPage {
  orders: OrderHit[];
  next: string | null;
}

export interface ZReportSummary {
  number: number;
  taken_at: string;
  taken_by: string | null;
  orders: number;
  total: number;
}

/** What a print request queued (GET-free: printing happens in the node's background). */
export interface PrintQueued {
  queued: string[];
  already: string[];
  skipped: string[];
}

export interface PrintJob {
  id: string;
  printer_id: string;
  printer: string;
  address: string;
  kind: 'receipt' | 'kitchen' | 'report' | 'test';
  about: string;
  created_at: string;
  state: 'pending' | 'done' | 'expired';
  attempts: number;
  error: string | null;
  bytes: number;
}
