import type { Frame } from './types';

export interface RawResponse {
  status: number;
  body: unknown;
}

export type FrameListener = (frame: Frame) => void;
export type LinkListener = (up: boolean) => void;

/** How the UI reaches its node: HTTP + WebSocket in a browser, IPC inside the Tauri shell. */
export interface Transport {
  readonly kind: 'http' | 'tauri';
  /** `headers`: the staff session and a manager's approval (`x-capsule-*` only). */
  request(method: string, path: string, body?: unknown, headers?: Record<string, string>): Promise<RawResponse>;
  /** Subscribe to the node's frame stream; returns an unsubscribe function. */
  subscribe(onFrame: FrameListener, onLink: LinkListener): () => void;
  /** Bytes of frame text received so far (for the dashboard). */
  bytesReceived(): number;
}
