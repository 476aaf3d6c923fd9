//! The capsule stream: frames fanned out to every `/ws` subscriber, in stream order.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use axum::extract::ws::{Message, WebSocket};
use capsule_protocol::{Capsule, Frame};
use futures_util::{SinkExt, StreamExt};
use tokio::sync::broadcast;

/// Frames a subscriber may fall behind by before it is told it lagged and is disconnected;
/// bounds the hub's memory per slow subscriber.
pub const SUBSCRIBER_BUFFER: usize = 4096;

#[derive(Clone)]
pub struct Stream {
    inner: Arc<Inner>,
}

struct Inner {
    tx: broadcast::Sender<Arc<str>>,
    last_seq: AtomicI64,
    version: AtomicI64,
    node_id: String,
    role: String,
}

impl Stream {
    pub fn new(node_id: String, role: &str) -> Stream {
        let (tx, _) = broadcast::channel(SUBSCRIBER_BUFFER);
        Stream {
            inner: Arc::new(Inner {
                tx,
                last_seq: AtomicI64::new(0),
                version: AtomicI64::new(0),
                node_id,
                role: role.to_string(),
            }),
        }
    }

    /// Sends one capsule at stream position `seq`. Callers publish in `seq` order.
    pub fn publish(&self, seq: i64, capsule: Capsule) {
        self.inner.version.fetch_max(capsule.v, Ordering::Relaxed);
        let frame =
            serde_json::to_string(&Frame::Capsule { seq, capsule }).expect("frames serialise");
        // No subscribers is fine: the frame is in the log (hub) or nobody is watching (till UI).
        let _ = self.inner.tx.send(Arc::from(frame));
        self.inner.last_seq.store(seq, Ordering::Release);
    }

    /// Sends a capsule at the next position; for a till's local UI stream, which has no log.
    pub fn publish_next(&self, capsule: Capsule) {
        let seq = self.last_seq() + 1;
        self.publish(seq, capsule);
    }

    /// Tells subscribers to reload everything (a till took a fresh snapshot).
    pub fn publish_reset(&self) {
        let seq = self.last_seq() + 1;
        let frame = serde_json::to_string(&Frame::Reset { seq }).expect("frames serialise");
        let _ = self.inner.tx.send(Arc::from(frame));
        self.inner.last_seq.store(seq, Ordering::Release);
    }

    pub fn last_seq(&self) -> i64 {
        self.inner.last_seq.load(Ordering::Acquire)
    }

    pub fn set_position(&self, seq: i64, version: i64) {
        self.inner.last_seq.store(seq, Ordering::Release);
        self.inner.version.fetch_max(version, Ordering::Relaxed);
    }

    pub fn subscribers(&self) -> usize {
        self.inner.tx.receiver_count()
    }

    /// Subscribes, then reads the position: a frame sent in between arrives twice at worst
    /// (harmless, merges are idempotent), never zero times.
    pub fn subscribe(&self) -> (broadcast::Receiver<Arc<str>>, Frame) {
        let rx = self.inner.tx.subscribe();
        let hello = Frame::Hello {
            node_id: self.inner.node_id.clone(),
            role: self.inner.role.clone(),
            seq: self.last_seq(),
            v: self.inner.version.load(Ordering::Relaxed),
        };
        (rx, hello)
    }
}

/// How often an idle subscriber is pinged, so a till notices a dead link (Wi-Fi gone without
/// a TCP reset) within its silence timeout.
pub const PING_EVERY: std::time::Duration = std::time::Duration::from_secs(10);

/// Serves one `/ws` subscriber until it goes away or falls too far behind.
pub async fn serve_ws(socket: WebSocket, stream: Stream) {
    let (mut tx, mut rx) = socket.split();
    let mut ping = tokio::time::interval(PING_EVERY);
    ping.tick().await;
    let (mut frames, hello) = stream.subscribe();
    let hello = serde_json::to_string(&hello).expect("frames serialise");
    if tx.send(Message::Text(hello.into())).await.is_err() {
        return;
    }
    loop {
        tokio::select! {
            frame = frames.recv() => match frame {
                Ok(text) => {
                    if tx.send(Message::Text(text.as_ref().into())).await.is_err() {
                        return;
                    }
                }
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    tracing::warn!(missed, "subscriber lagged; disconnecting it so it resynchronises");
                    let lagged = serde_json::to_string(&Frame::Lagged { missed }).expect("frames serialise");
                    let _ = tx.send(Message::Text(lagged.into())).await;
                    let _ = tx.close().await;
                    return;
                }
                Err(broadcast::error::RecvError::Closed) => return,
            },
            _ = ping.tick() => {
                if tx.send(Message::Ping(Default::default())).await.is_err() {
                    return;
                }
            }
            incoming = rx.next() => match incoming {
                // Subscribers only listen; pings are answered by axum, anything else is ignored.
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return,
                Some(Ok(_)) => {}
            },
        }
    }
}
