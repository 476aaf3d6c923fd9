// Reading /api/metrics. The endpoint is still being built; see ui/API-REQUESTS.md for the
// shape this reads. Anything missing is reported as null and shown as "not available yet".
import type { Metrics } from './backend';

export function num(m: Metrics | null, ...paths: string[]): number | null {
  if (!m) return null;
  for (const p of paths) {
    let cur: unknown = m;
    for (const k of p.split('.')) {
      if (cur && typeof cur === 'object' && k in (cur as Record<string, unknown>)) cur = (cur as Record<string, unknown>)[k];
      else {
        cur = undefined;
        break;
      }
    }
    if (typeof cur === 'number' && Number.isFinite(cur)) return cur;
    // per-kind counters ({"capsule": 10, "rows": 2}) add up; lists (subscribers) count
    if (Array.isArray(cur)) return cur.length;
    if (cur && typeof cur === 'object') {
      const vals = Object.values(cur as Record<string, unknown>);
      if (vals.length > 0 && vals.every((v) => typeof v === 'number')) return (vals as number[]).reduce((a, b) => a + b, 0);
    }
  }
  return null;
}

export type Mode = 'legacy' | 'both' | 'capsule';

export function modes(m: Metrics | null): Record<string, Mode> | null {
  if (!m) return null;
  const raw = (m.modes ?? m.rollout ?? m.entity_modes) as unknown;
  if (!raw || typeof raw !== 'object') return null;
  const out: Record<string, Mode> = {};
  for (const [k, v] of Object.entries(raw as Record<string, unknown>)) {
    const mode = typeof v === 'string' ? v : v && typeof v === 'object' ? (v as { mode?: unknown }).mode : null;
    if (mode === 'legacy' || mode === 'both' || mode === 'capsule') out[k] = mode;
  }
  return out;
}

/** Per-second rate between two counter samples; null if unknown or the counter went back. */
export function rate(prev: number | null, cur: number | null, dtMs: number): number | null {
  if (prev === null || cur === null || dtMs <= 0 || cur < prev) return null;
  return ((cur - prev) * 1000) / dtMs;
}

/** p-th percentile (0..100) of samples, nearest-rank. */
export function percentile(samples: number[], p: number): number | null {
  if (samples.length === 0) return null;
  const s = [...samples].sort((a, b) => a - b);
  const i = Math.min(s.length - 1, Math.max(0, Math.ceil((p / 100) * s.length) - 1));
  return s[i] ?? null;
}
