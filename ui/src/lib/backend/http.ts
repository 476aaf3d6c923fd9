import type { Frame } from './types';
import type { FrameListener, LinkListener, RawResponse, Transport } from './transport';

/** Browser transport: relative URLs on the origin that served the UI, and /ws for frames. */
export function httpTransport(): Transport {
  let bytes = 0;
  return {
    kind: 'http',
    async request(method: string, path: string, body?: unknown, extra?: Record<string, string>): Promise<RawResponse> {
      const headers: Record<string, string> = { accept: 'application/json', ...extra };
      const init: RequestInit = { method, headers };
      if (body !== undefined) {
        init.body = JSON.stringify(body);
        headers['content-type'] = 'application/json';
      }
      const res = await fetch(path, init);
      const text = await res.text();
      let parsed: unknown = null;
      if (text.length > 0) {
        try {
          parsed = JSON.parse(text);
        } catch {
          parsed = { error: text.slice(0, 300) };
        }
      }
      return { status: res.status, body: parsed };
    },
    subscribe(onFrame: FrameListener, onLink: LinkListener): () => void {
      let ws: WebSocket | null = null;
      let closed = false;
      let retry = 500;
      let timer: ReturnType<typeof setTimeout> | undefined;
      const open = () => {
        if (closed) return;
        const url = new URL('ws', location.href.replace(/#.*$/, ''));
        url.protocol = location.protocol === 'https:' ? 'wss:' : 'ws:';
        url.pathname = '/ws';
        ws = new WebSocket(url.toString());
        ws.onopen = () => {
          retry = 500;
          onLink(true);
        };
        ws.onmessage = (ev: MessageEvent) => {
          if (typeof ev.data !== 'string') return;
          bytes += ev.data.length;
          try {
            onFrame(JSON.parse(ev.data) as Frame);
          } catch {
            /* not a frame we understand */
          }
        };
        ws.onclose = () => {
          ws = null;
          onLink(false);
          if (!closed) {
            timer = setTimeout(open, retry);
            retry = Math.min(retry * 2, 5000);
          }
        };
        ws.onerror = () => ws?.close();
      };
      open();
      return () => {
        closed = true;
        if (timer) clearTimeout(timer);
        ws?.close();
      };
    },
    bytesReceived: () => bytes,
  };
}
