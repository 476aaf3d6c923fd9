// What the header's connection chip says. A till's write waits for the hub's word for a few
// hundred milliseconds on an ordinary tap: that is not news, so "Syncing" shows only once a
// write has waited longer than the hub normally takes (it flickered amber on ordinary taps).
import type { NodeStatus } from './backend';

/** A write the hub has not confirmed for this long is worth saying so. */
export const SYNC_GRACE_MS = 2000;

export type ConnKind = 'bad' | 'warn' | 'ok';
export interface Conn {
  cls: ConnKind;
  /** Which message: `node_down`, `loading`, `offline`, `syncing`, `online`. */
  state: 'node_down' | 'loading' | 'offline' | 'syncing' | 'online';
  /** Writes waiting for the hub, and writes it refused, to show beside the state. */
  waiting: number;
  refused: number;
}

/**
 * The chip for `s`; `pendingSince` is when this screen first saw writes waiting (null when
 * none are), `now` the time now.
 */
export function connState(s: NodeStatus | null, reachable: boolean, pendingSince: number | null, now: number): Conn {
  if (!reachable) return { cls: 'bad', state: 'node_down', waiting: 0, refused: 0 };
  if (!s) return { cls: 'warn', state: 'loading', waiting: 0, refused: 0 };
  const refused = s.rejected;
  if (s.state === 'offline') return { cls: 'bad', state: 'offline', waiting: s.pending, refused };
  const slow = s.pending > 0 && pendingSince !== null && now - pendingSince >= SYNC_GRACE_MS;
  if (s.state === 'syncing' || slow) return { cls: 'warn', state: 'syncing', waiting: s.pending, refused };
  return { cls: refused > 0 ? 'warn' : 'ok', state: 'online', waiting: 0, refused };
}
