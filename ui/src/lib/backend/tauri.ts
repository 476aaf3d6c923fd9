import type { Frame } from './types';
import type { FrameListener, LinkListener, RawResponse, Transport } from './transport';

/** Tauri shell transport: the `node_request` command and the `node_frame` event. */
export function tauriTransport(): Transport {
  let bytes = 0;
  const core = import('@tauri-apps/api/core');
  const event = import('@tauri-apps/api/event');
  return {
    kind: 'tauri',
    async request(method: string, path: string, body?: unknown, headers?: Record<string, string>): Promise<RawResponse> {
      const { invoke } = await core;
      const res = await invoke<RawResponse>('node_request', { method, path, body: body ?? null, headers: headers ?? null });
      return { status: res.status, body: res.body };
    },
    subscribe(onFrame: FrameListener, onLink: LinkListener): () => void {
      let unlisten: (() => void) | null = null;
      let stopped = false;
      void event.then(async ({ listen }) => {
        const un = await listen<Frame | string>('node_frame', (e) => {
          const raw = e.payload;
          const text = typeof raw === 'string' ? raw : JSON.stringify(raw);
          bytes += text.length;
          try {
            onFrame((typeof raw === 'string' ? JSON.parse(raw) : raw) as Frame);
          } catch {
            /* ignore */
          }
        });
        if (stopped) un();
        else {
          unlisten = un;
          onLink(true);
        }
      });
      return () => {
        stopped = true;
        unlisten?.();
      };
    },
    bytesReceived: () => bytes,
  };
}
