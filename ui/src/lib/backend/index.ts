// The only module that talks to the node. Everything else imports from here.
import { writable } from 'svelte/store';
import { httpTransport } from './http';
import { tauriTransport } from './tauri';
import { newId } from '../ids';
import type { Transport, FrameListener, LinkListener } from './transport';
import type {
  AuditEntry,
  BatchPull,
  Device,
  PairedScreen,
  ScreenAsking,
  ScreenRole,
  PairOffer,
  Metrics,
  Mutation,
  MutationResult,
  NodeStatus,
  Outbox,
  Report,
  Row,
  ZReportSummary,
  OrderSearch,
  OrderPage,
  PrintJob,
  PrintQueued,
  Schema,
} from './types';

export type * from './types';

/**
 * Set while the node refuses this screen (401: it serves the shop's paired devices only and
 * this browser holds no credential); cleared by the next answer it gives.
 */
export const notAdmitted = writable<string | null>(null);

/** An error answer from the node; `message` is the node's own `error` text. */
export class ApiError extends Error {
  constructor(
    public readonly status: number,
    message: string,
  ) {
    super(message);
    this.name = 'ApiError';
  }
  /** The endpoint does not exist on this node (yet). */
  get notAvailable(): boolean {
    return this.status === 404 || this.status === 405 || this.status === 501;
  }
}

function pickTransport(): Transport {
  const w = globalThis as { __TAURI_INTERNALS__?: unknown };
  return w.__TAURI_INTERNALS__ ? tauriTransport() : httpTransport();
}

let transport: Transport | null = null;
function t(): Transport {
  transport ??= pickTransport();
  return transport;
}

/** For tests: use a given transport. */
export function setTransport(tr: Transport): void {
  transport = tr;
}

export function transportKind(): 'http' | 'tauri' {
  return t().kind;
}

/** Whether this page is this machine's own screen (the desktop app, or a browser on loopback):
 * a node refuses joining a shop to any other machine. */
export function onThisMachine(): boolean {
  return t().kind === 'tauri' || ['127.0.0.1', 'localhost', '[::1]'].includes(location.hostname);
}

/** Who is logged in at this screen (its node's session), kept for the tab's life. */
export interface StaffSession {
  token: string;
  staff: { id: string; name: string; name_ar?: string | null; role: string };
  permissions: string[];
}

function storedSession(): StaffSession | null {
  try {
    const raw = typeof sessionStorage !== 'undefined' ? sessionStorage.getItem('capsule.staff') : null;
    return raw ? (JSON.parse(raw) as StaffSession) : null;
  } catch {
    return null;
  }
}

export const staffSession = writable<StaffSession | null>(storedSession());
let sessionToken: string | null = null;
staffSession.subscribe((s) => {
  sessionToken = s?.token ?? null;
  try {
    if (s) sessionStorage.setItem('capsule.staff', JSON.stringify(s));
    else sessionStorage.removeItem('capsule.staff');
  } catch {
    /* private mode */
  }
});

/**
 * Asks a manager to approve `permission` on this screen (the approval dialog registers it):
 * the approval token, or null when nobody approved.
 */
export type Approver = (permission: string, reason: string) => Promise<string | null>;
let approver: Approver | null = null;
export function setApprover(a: Approver | null): void {
  approver = a;
}

/** The permission a node's 403 names (`permission 'order.void' needed`). */
export function permissionNeeded(message: string): string | null {
  return /permission '([a-z_.]+)'/.exec(message)?.[1] ?? null;
}

async function send(method: string, path: string, body: unknown, approval?: string) {
  const headers: Record<string, string> = {};
  if (sessionToken) headers['x-capsule-staff'] = sessionToken;
  if (approval) headers['x-capsule-approval'] = approval;
  try {
    return await t().request(method, path, body, headers);
  } catch (e) {
    throw new ApiError(0, `node unreachable: ${e instanceof Error ? e.message : String(e)}`);
  }
}

async function call<T>(method: string, path: string, body?: unknown): Promise<T> {
  let res = await send(method, path, body);
  const errorOf = (r: { status: number; body: unknown }) => {
    const b = r.body as { error?: unknown } | null;
    return b && typeof b.error === 'string' ? b.error : `HTTP ${r.status}`;
  };
  // A write the logged-in member of staff may not make alone: a manager approves it here, on
  // the spot, and it is sent once more with the approval.
  if (res.status === 403 && sessionToken && approver && !path.startsWith('/api/staff/')) {
    const msg = errorOf(res);
    const permission = permissionNeeded(msg);
    if (permission) {
      const approval = await approver(permission, msg);
      if (approval) res = await send(method, path, body, approval);
    }
  }
  if (res.status >= 200 && res.status < 300) {
    // Asking to pair is public: an answer to it says nothing about being admitted.
    if (!path.startsWith('/api/pair/screen/') && path !== '/api/pair/screen') notAdmitted.set(null);
    return res.body as T;
  }
  const msg = errorOf(res);
  // A wrong PIN or an ended staff session is not this screen being refused by the node.
  if (res.status === 401 && !path.startsWith('/api/staff/')) notAdmitted.set(msg);
  // The node no longer knows the session (it restarted): back to the PIN pad.
  if (res.status === 403 && msg.includes('log in first')) staffSession.set(null);
  throw new ApiError(res.status, msg);
}

export const api = {
  status: () => call<NodeStatus>('GET', '/api/status'),
  schema: () => call<Schema>('GET', '/api/schema'),
  /** What the screens show, bounded by the shop's day (GET /api/working-set). */
  workingSet: () => call<{ seq: number; v: number; tables: Record<string, Row[]> }>('GET', '/api/working-set'),
  pull: (entity: string, ids: string[], parts: string[]) =>
    call<BatchPull>(
      'GET',
      `/api/entities?entity=${encodeURIComponent(entity)}&ids=${ids.map(encodeURIComponent).join(',')}&parts=${parts
        .map(encodeURIComponent)
        .join(',')}`,
    ),
  mutate: (mutations: Omit<Mutation, 'mid'>[]) =>
    call<{ results: MutationResult[] }>('POST', '/api/mutations', {
      mutations: mutations.map((m) => ({ mid: newId(), ...m })),
    }),
  // State changes always carry a JSON body: nodes refuse other content types (cross-site forms).
  sendToKitchen: (orderId: string) =>
    call<{ batch_id: string; results: MutationResult[]; print?: PrintQueued }>(
      'POST',
      `/api/orders/${encodeURIComponent(orderId)}/send-to-kitchen`,
      {},
    ),
  outbox: () => call<Outbox>('GET', '/api/outbox'),
  outboxRetry: (mid: string) => call<unknown>('POST', `/api/outbox/${encodeURIComponent(mid)}/retry`, {}),
  outboxDiscard: (mid: string) => call<unknown>('POST', `/api/outbox/${encodeURIComponent(mid)}/discard`, {}),
  metrics: () => call<Metrics>('GET', '/api/metrics'),
  xReport: () => call<Report>('GET', '/api/reports/x'),
  printReceipt: (orderId: string, requestId?: string) =>
    call<PrintQueued>('POST', `/api/orders/${encodeURIComponent(orderId)}/receipt`, requestId ? { request_id: requestId } : {}),
  reprintTickets: (batchId: string, requestId: string) =>
    call<PrintQueued>('POST', `/api/batches/${encodeURIComponent(batchId)}/tickets`, { request_id: requestId }),
  printReport: (number: number | null, requestId: string) =>
    call<PrintQueued>('POST', number === null ? '/api/reports/x/print' : `/api/reports/z/${number}/print`, {
      request_id: requestId,
    }),
  printJobs: () => call<{ jobs: PrintJob[] }>('GET', '/api/print/jobs'),
  retryPrint: (id: string) => call<{ retried: string }>('POST', `/api/print/jobs/${encodeURIComponent(id)}/retry`, {}),
  testPrinter: (id: string, requestId: string) =>
    call<PrintQueued>('POST', `/api/printers/${encodeURIComponent(id)}/test`, { request_id: requestId }),
  devices: () => call<{ devices: Device[] }>('GET', '/api/devices'),
  /** A browser asks to pair: the code it shows for a manager to approve. */
  askToPair: (name: string, role: ScreenRole) =>
    call<{ id: string; code: string; poll: string; expires_in_s: number }>('POST', '/api/pair/screen', { name, role }),
  /** Waiting (202), or paired (200: the node set this browser's cookie); 410 when refused. */
  pairAnswer: (id: string, poll: string) =>
    call<{ state: 'waiting' | 'paired' }>('GET', `/api/pair/screen/${encodeURIComponent(id)}?poll=${encodeURIComponent(poll)}`),
  screens: () => call<{ waiting: ScreenAsking[]; screens: PairedScreen[] }>('GET', '/api/pair/screens'),
  screenAnswer: (id: string, answer: 'approve' | 'deny' | 'remove') =>
    call<unknown>('POST', `/api/pair/screens/${encodeURIComponent(id)}/${answer}`, {}),
  pairOffer: () => call<PairOffer>('POST', '/api/pair/offer', {}),
  /** Pairs this machine's node with the code another device shows (this machine only). */
  pairJoin: (code: string, peer: string) =>
    call<{ paired_with: string; device_id: string }>('POST', '/api/pair/join', { code, peer }),
  revokeDevice: (id: string) => call<unknown>('POST', `/api/devices/${encodeURIComponent(id)}/revoke`, {}),
  zReports: (before?: number) =>
    call<{ reports: ZReportSummary[]; next?: number | null }>(
      'GET',
      before === undefined ? '/api/reports/z' : `/api/reports/z?before=${before}`,
    ),
  findOrders: (q: OrderSearch) =>
    call<OrderPage>(
      'GET',
      `/api/orders?${Object.entries(q)
        .filter(([, v]) => v !== undefined && v !== '')
        .map(([k, v]) => `${k}=${encodeURIComponent(String(v))}`)
        .join('&')}`,
    ),
  zReport: (n: number) => call<Report>('GET', `/api/reports/z/${n}`),
  takeZ: (takenBy: string, number: number) =>
    call<Report>('POST', '/api/reports/z', { taken_by: takenBy || null, number }),
  staffLogin: (staff: string, pin: string) =>
    call<Omit<StaffSession, never>>('POST', '/api/staff/login', { staff, pin }),
  staffLogout: () => call<unknown>('POST', '/api/staff/logout', {}),
  staffMe: () => call<{ staff: StaffSession['staff']; permissions: string[] }>('GET', '/api/staff/me'),
  staffApprove: (staff: string, pin: string, permission: string) =>
    call<{ approval: string; approver: StaffSession['staff'] }>('POST', '/api/staff/approve', { staff, pin, permission }),
  addStaff: (m: { name: string; name_ar?: string | null; role: string; pin: string }) =>
    call<{ id: string }>('POST', '/api/staff', m),
  setPin: (staff: string, pin: string) => call<unknown>('POST', '/api/staff/pin', { staff, pin }),
  staffRoles: () =>
    call<{
      permissions: { name: string; doc: string }[];
      roles: { id: string; name_en: string; name_ar: string | null; permissions: string[]; builtin: boolean }[];
    }>('GET', '/api/staff/roles'),
  orderTimeline: (orderId: string) =>
    call<{ entries: AuditEntry[] }>('GET', `/api/orders/${encodeURIComponent(orderId)}/timeline`),
  audit: (q: { staff?: string; what?: string; from?: string; to?: string; before?: number; limit?: number }) =>
    call<{ entries: AuditEntry[]; next: number | null }>(
      'GET',
      `/api/audit?${Object.entries(q)
        .filter(([, v]) => v !== undefined && v !== '')
        .map(([k, v]) => `${k}=${encodeURIComponent(String(v))}`)
        .join('&')}`,
    ),
  setMode: (entity: string, mode: 'legacy' | 'both' | 'capsule') =>
    call<unknown>('POST', '/api/admin/modes', { entity, mode }),
};

export function subscribe(onFrame: FrameListener, onLink: LinkListener): () => void {
  return t().subscribe(onFrame, onLink);
}

export function frameBytesReceived(): number {
  return t().bytesReceived();
}
