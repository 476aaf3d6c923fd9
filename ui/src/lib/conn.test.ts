import { describe, expect, it } from 'vitest';
import type { NodeStatus } from './backend';
import { connState, SYNC_GRACE_MS } from './conn';

const base: NodeStatus = {
  node_id: 'till-a',
  role: 'till',
  state: 'online',
  hub_url: 'http://hub',
  hub_node_id: 'hub',
  seq: 10,
  pending: 0,
  rejected: 0,
  offline_since: null,
};

describe('the connection chip', () => {
  it('stays green while a tap waits for the hub as long as it normally does', () => {
    const s = { ...base, pending: 1 };
    expect(connState(s, true, 1000, 1000 + 400).state).toBe('online');
    expect(connState(s, true, 1000, 1000 + SYNC_GRACE_MS - 1).cls).toBe('ok');
  });
  it('says syncing, with what waits, once a write waits longer', () => {
    const c = connState({ ...base, pending: 3 }, true, 1000, 1000 + SYNC_GRACE_MS);
    expect(c).toMatchObject({ cls: 'warn', state: 'syncing', waiting: 3 });
  });
  it('says offline and what waits when the hub is out of reach, at once', () => {
    const c = connState({ ...base, state: 'offline', pending: 2 }, true, 1000, 1000);
    expect(c).toMatchObject({ cls: 'bad', state: 'offline', waiting: 2 });
  });
  it('shows a catch-up and refused writes as they are', () => {
    expect(connState({ ...base, state: 'syncing' }, true, null, 0).state).toBe('syncing');
    expect(connState({ ...base, rejected: 2 }, true, null, 0)).toMatchObject({ cls: 'warn', state: 'online', refused: 2 });
    expect(connState(base, false, null, 0).state).toBe('node_down');
  });
});
