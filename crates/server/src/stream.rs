//! The capsule stream: frames fanned out to every `/ws` subscriber, in stream order, with
//! replay from the capsule log for subscribers that reconnect (`/ws?since=SEQ`).

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::ws::{Message, WebSocket};
use capsule_protocol::{Capsule, Frame, FrameEncoding, ZSTD_FRAME_ABOVE};
use capsule_store::Store;
use futures_util::{SinkExt, StreamExt};
use serde::Serialize;
use tokio::sync::broadcast;

use crate::metrics::{FrameKind, NodeMetrics};

/// Frames a subscriber may fall behind by before it is told it lagged and is disconnected;
/// bounds the hub's memory per slow subscriber.
pub const SUBSCRIBER_BUFFER: usize = 4096;

/// How often an idle subscriber is pinged by default, so a till notices a dead link (Wi-Fi
/// gone without a TCP reset) within its silence timeout and a live one never looks dead.
pub const PING_EVERY: Duration = capsule_protocol::defaults::PING_EVERY;

/// Nodes whose reports the hub keeps.
pub const MAX_REPORTS: usize = 64;

/// Largest message a `/ws` peer may send (subscribers only answer pings and close).
pub const WS_MAX_MESSAGE: usize = 256 * 1024;
/// Largest single frame a `/ws` peer may send.
pub const WS_MAX_FRAME: usize = 64 * 1024;
/// Most bytes queued for one subscriber's socket before a send fails.
pub const WS_MAX_WRITE_BUFFER: usize = 4 * 1024 * 1024;
/// A subscriber that takes longer than this to take one frame is dropped: it stopped
/// reading, and it resynchronises by replay when it comes back.
pub const SEND_DEADLINE: Duration = Duration::from_secs(5);

/// Log entries per replayed frame.
const REPLAY_CHUNK: usize = 500;

/// A frame as published: its log range, its kind and its text, shared by every subscriber.
#[derive(Debug)]
pub struct Published {
    pub from: i64,
    pub seq: i64,
    pub kind: FrameKind,
    pub text: Arc<str>,
    /// The frame zstd-compressed, made once by the first subscriber that asked for zstd and
    /// shared by the others (None: it would not compress).
    packed: OnceLock<Option<Bytes>>,
}

/// What the hub knows of a connected subscriber.
#[derive(Debug, Clone, Serialize)]
pub struct SubscriberInfo {
    pub node_id: String,
    pub role: String,
    pub peer: String,
    pub connected_at: i64,
    /// Last stream position sent to it.
    pub seq: i64,
}

impl SubscriberInfo {
    /// The address it connected from.
    pub fn peer_ip(&self) -> Option<std::net::IpAddr> {
        self.peer
            .parse::<std::net::SocketAddr>()
            .ok()
            .map(|a| a.ip())
    }
}

#[derive(Clone)]
pub struct Stream {
    inner: Arc<Inner>,
}

struct Inner {
    tx: broadcast::Sender<Arc<Published>>,
    last_seq: AtomicI64,
    version: AtomicI64,
    node_id: String,
    role: String,
    metrics: Arc<NodeMetrics>,
    /// Held while publishing (position, then send) and while subscribing (subscribe, then
    /// read the position), so a subscriber either receives a frame or finds it inside its
    /// replay range, never neither.
    order: Mutex<()>,
    subscribers: Mutex<HashMap<u64, SubscriberInfo>>,
    /// The latest report of each till (its sync measurements), for the hub dashboard.
    reports: Mutex<HashMap<String, (i64, serde_json::Value)>>,
    next_subscriber: AtomicU64,
    ping_every_ms: AtomicU64,
    lineage: Mutex<capsule_protocol::Lineage>,
    /// Set when this stream's node stops serving it (a role change): subscribers are closed,
    /// so they reconnect and find what the node is now.
    closed: tokio::sync::watch::Sender<bool>,
}

pub use capsule_protocol::WsParams;

impl Stream {
    pub fn new(node_id: String, role: &str, metrics: Arc<NodeMetrics>) -> Stream {
        let (tx, _) = broadcast::channel(SUBSCRIBER_BUFFER);
        Stream {
            inner: Arc::new(Inner {
                tx,
                last_seq: AtomicI64::new(0),
                version: AtomicI64::new(0),
                node_id,
                role: role.to_string(),
                metrics,
                order: Mutex::new(()),
                subscribers: Mutex::new(HashMap::new()),
                reports: Mutex::new(HashMap::new()),
                next_subscriber: AtomicU64::new(1),
                ping_every_ms: AtomicU64::new(PING_EVERY.as_millis() as u64),
                lineage: Mutex::new(capsule_protocol::Lineage::default()),
                closed: tokio::sync::watch::channel(false).0,
            }),
        }
    }

    /// Ends every subscription, now and later (the node stopped serving this stream).
    pub fn close(&self) {
        self.inner.closed.send_replace(true);
    }

    /// The hub term this stream's positions belong to and what it took over (told in every
    /// hello).
    pub fn set_lineage(&self, lineage: capsule_protocol::Lineage) {
        *self.inner.lineage.lock().unwrap_or_else(|p| p.into_inner()) = lineage;
    }

    fn term(&self) -> i64 {
        self.inner
            .lineage
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .term
    }

    pub fn set_ping_every(&self, every: Duration) {
        self.inner
            .ping_every_ms
            .store(every.as_millis().max(1) as u64, Ordering::Relaxed);
    }

    pub fn metrics(&self) -> &Arc<NodeMetrics> {
        &self.inner.metrics
    }

    /// Sends a frame covering log entries `from..=seq`. Callers publish in order.
    pub fn publish_frame(&self, frame: &Frame, kind: FrameKind) {
        let (from, seq) = frame.range().unwrap_or_else(|| {
            let next = self.last_seq() + 1;
            (next, next)
        });
        let text: Arc<str> = Arc::from(serde_json::to_string(frame).expect("frames serialise"));
        self.inner.metrics.frames_published.inc();
        let _order = self.inner.order.lock().unwrap_or_else(|p| p.into_inner());
        self.inner.last_seq.store(seq, Ordering::Release);
        // No subscribers is fine: the frame is in the log (hub) or nobody is watching (till UI).
        let _ = self.inner.tx.send(Arc::new(Published {
            from,
            seq,
            kind,
            text,
            packed: OnceLock::new(),
        }));
    }

    /// Sends one capsule at position `seq`.
    pub fn publish(&self, seq: i64, capsule: Capsule) {
        self.inner.version.fetch_max(capsule.v, Ordering::Relaxed);
        self.publish_frame(&Frame::Capsule { seq, capsule }, FrameKind::Capsule);
    }

    /// Sends a capsule at the next position; for a till's local UI stream, which has no log.
    pub fn publish_next(&self, capsule: Capsule) {
        let seq = self.last_seq() + 1;
        self.publish(seq, capsule);
    }

    /// Tells subscribers to reload everything (a till took a fresh snapshot).
    pub fn publish_reset(&self) {
        let seq = self.last_seq() + 1;
        self.publish_frame(&Frame::Reset { seq }, FrameKind::Control);
    }

    pub fn last_seq(&self) -> i64 {
        self.inner.last_seq.load(Ordering::Acquire)
    }

    pub fn version(&self) -> i64 {
        self.inner.version.load(Ordering::Relaxed)
    }

    pub fn set_position(&self, seq: i64, version: i64) {
        self.inner.last_seq.store(seq, Ordering::Release);
        self.inner.version.fetch_max(version, Ordering::Relaxed);
    }

    pub fn note_version(&self, version: i64) {
        self.inner.version.fetch_max(version, Ordering::Relaxed);
    }

    /// Keeps a node's latest report; the oldest is forgotten beyond `MAX_REPORTS` nodes.
    pub fn record_report(&self, node_id: String, report: serde_json::Value) {
        let mut reports = self.inner.reports.lock().unwrap_or_else(|p| p.into_inner());
        reports.insert(node_id, (capsule_protocol::now_ms(), report));
        while reports.len() > MAX_REPORTS {
            let oldest = reports
                .iter()
                .min_by_key(|(_, (at, _))| *at)
                .map(|(k, _)| k.clone());
            match oldest {
                Some(k) => reports.remove(&k),
                None => break,
            };
        }
    }

    /// Node id -> (received at, report).
    pub fn reports(&self) -> HashMap<String, (i64, serde_json::Value)> {
        self.inner
            .reports
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub fn subscribers(&self) -> Vec<SubscriberInfo> {
        let mut subs: Vec<SubscriberInfo> = self
            .inner
            .subscribers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect();
        subs.sort_by_key(|s| s.connected_at);
        subs
    }

    fn set_subscriber_seq(&self, id: u64, seq: i64) {
        if let Some(s) = self
            .inner
            .subscribers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get_mut(&id)
        {
            s.seq = seq;
        }
    }
}

/// Removes a subscriber from the registry when its connection ends, however it ends.
struct Registration {
    stream: Stream,
    id: u64,
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.stream
            .inner
            .subscribers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.id);
    }
}

type WsSink = futures_util::stream::SplitSink<WebSocket, Message>;

/// Why a send to a subscriber failed.
#[derive(Debug)]
enum SendError {
    Closed,
    /// It did not take the frame within [`SEND_DEADLINE`]: it stopped reading.
    Stalled,
}

/// One zstd frame (the fastest level: frames are small and many).
fn compress(text: &str) -> Option<Bytes> {
    zstd::bulk::compress(text.as_bytes(), 1)
        .ok()
        .filter(|z| z.len() < text.len())
        .map(Bytes::from)
}

/// Sends a frame as text, or compressed for a subscriber that asked for zstd when the frame
/// is long enough (`packed` caches the compressed form of a frame many subscribers get).
async fn send(
    tx: &mut WsSink,
    metrics: &NodeMetrics,
    text: &str,
    packed: Option<&OnceLock<Option<Bytes>>>,
    encoding: Option<FrameEncoding>,
    kind: FrameKind,
) -> Result<(), SendError> {
    let zstd = match encoding {
        Some(FrameEncoding::Zstd) if text.len() >= ZSTD_FRAME_ABOVE => match packed {
            Some(cell) => cell.get_or_init(|| compress(text)).clone(),
            None => compress(text),
        },
        _ => None,
    };
    let message = match zstd {
        Some(bytes) => {
            metrics.frame_sent(kind, bytes.len());
            Message::Binary(bytes)
        }
        None => {
            metrics.frame_sent(kind, text.len());
            Message::Text(text.into())
        }
    };
    match tokio::time::timeout(SEND_DEADLINE, tx.send(message)).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(_)) => Err(SendError::Closed),
        Err(_) => Err(SendError::Stalled),
    }
}

async fn send_frame(
    tx: &mut WsSink,
    metrics: &NodeMetrics,
    frame: &Frame,
    encoding: Option<FrameEncoding>,
    kind: FrameKind,
) -> Result<(), SendError> {
    send(
        tx,
        metrics,
        &serde_json::to_string(frame).expect("frames serialise"),
        None,
        encoding,
        kind,
    )
    .await
}

/// Serves one `/ws` subscriber until it goes away or falls too far behind. With `since`, it
/// first replays the log entries after that position (from `store`, the hub's log).
pub async fn serve_ws(
    socket: WebSocket,
    stream: Stream,
    store: Option<Arc<Store>>,
    mut params: WsParams,
    peer: String,
) {
    let foreign = params
        .hub
        .as_deref()
        .is_some_and(|h| h != stream.inner.node_id)
        || params.term.is_some_and(|t| t != stream.term());
    if foreign {
        params.since = None;
    }
    let metrics = stream.metrics().clone();
    let (mut tx, mut rx) = socket.split();
    // Subscribe and read the position under the publish lock: every frame published after
    // `start` reaches this receiver, and everything up to `start` is in the replay range.
    let (mut frames, start) = {
        let _order = stream.inner.order.lock().unwrap_or_else(|p| p.into_inner());
        (stream.inner.tx.subscribe(), stream.last_seq())
    };
    let oldest = match &store {
        Some(s) => {
            let s = s.clone();
            tokio::task::spawn_blocking(move || s.oldest_logged())
                .await
                .ok()
                .and_then(Result::ok)
                .unwrap_or(0)
        }
        None => 0,
    };
    let id = stream.inner.next_subscriber.fetch_add(1, Ordering::Relaxed);
    stream
        .inner
        .subscribers
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(
            id,
            SubscriberInfo {
                node_id: params.node.clone().unwrap_or_default(),
                role: params.role.clone().unwrap_or_else(|| "browser".into()),
                peer,
                connected_at: capsule_protocol::now_ms(),
                seq: params.since.unwrap_or(start),
            },
        );
    let _registration = Registration {
        stream: stream.clone(),
        id,
    };

    let hello = Frame::Hello {
        node_id: stream.inner.node_id.clone(),
        role: stream.inner.role.clone(),
        seq: start,
        v: stream.version(),
        oldest,
        lineage: stream
            .inner
            .lineage
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone(),
    };
    if send_frame(
        &mut tx,
        &metrics,
        &hello,
        params.encoding,
        FrameKind::Control,
    )
    .await
    .is_err()
    {
        return;
    }

    // Replay what the subscriber missed, as capsule frames, up to where the live stream starts.
    let mut sent_upto = params.since.unwrap_or(start);
    if let (Some(since), Some(store)) = (params.since, &store) {
        // Entries after `since` must all still be in the log, or the subscriber is told to
        // take a snapshot. A position ahead of ours means its data came from another history
        // (a hub restored from a backup): it must start over too.
        let mut too_old = (since > start || since < start && (oldest == 0 || since + 1 < oldest))
            .then_some(oldest);
        while too_old.is_none() && sent_upto < start {
            let s = store.clone();
            let from = sent_upto;
            let entries =
                match tokio::task::spawn_blocking(move || s.capsules_since(from, REPLAY_CHUNK))
                    .await
                {
                    Ok(Ok(e)) => e,
                    _ => return,
                };
            let entries: Vec<_> = entries.into_iter().filter(|e| e.seq <= start).collect();
            let Some(last) = entries.last().map(|e| e.seq) else {
                break;
            };
            if entries[0].seq != sent_upto + 1 {
                // Pruned while we replayed.
                too_old = Some(entries[0].seq);
                break;
            }
            let frame = Frame::Capsules {
                seq: last,
                from: sent_upto + 1,
                items: crate::publisher::coalesce(
                    entries.into_iter().map(|e| e.capsule).collect(),
                    store.schema(),
                ),
            };
            metrics.replayed_frames.inc();
            if send_frame(
                &mut tx,
                &metrics,
                &frame,
                params.encoding,
                FrameKind::Capsule,
            )
            .await
            .is_err()
            {
                return;
            }
            sent_upto = last;
            stream.set_subscriber_seq(id, sent_upto);
        }
        if let Some(oldest) = too_old {
            // The subscriber takes a snapshot; it sees live frames from here on.
            if send_frame(
                &mut tx,
                &metrics,
                &Frame::TooOld { oldest },
                params.encoding,
                FrameKind::Control,
            )
            .await
            .is_err()
            {
                return;
            }
            sent_upto = start;
        }
    }

    let replay_end = if params.since.is_some() {
        sent_upto
    } else {
        i64::MIN
    };
    let mut ping = tokio::time::interval(Duration::from_millis(
        stream.inner.ping_every_ms.load(Ordering::Relaxed),
    ));
    ping.tick().await;
    let mut closed = stream.inner.closed.subscribe();
    loop {
        tokio::select! {
            _ = async { let _ = closed.wait_for(|c| *c).await; } => {
                let _ = tx.close().await;
                return;
            }
            frame = frames.recv() => match frame {
                Ok(p) => {
                    // A frame published while we replayed is covered by the replay. Compare
                    // with the replay's end, not the last frame sent: a window can publish a
                    // rows frame and a capsules frame over the same range.
                    if p.seq <= replay_end && p.kind != FrameKind::Control {
                        continue;
                    }
                    // While a send is stuck, frames pile up for this subscriber; it is dropped
                    // when it stops reading (deadline) or falls too far behind (backlog),
                    // whichever comes first, without waiting for it to read again.
                    let backlog = async {
                        loop {
                            tokio::time::sleep(Duration::from_millis(200)).await;
                            if frames.len() >= SUBSCRIBER_BUFFER / 2 {
                                return frames.len();
                            }
                        }
                    };
                    let outcome = tokio::select! {
                        r = send(&mut tx, &metrics, &p.text, Some(&p.packed), params.encoding, p.kind) => r.err(),
                        behind = backlog => {
                            tracing::warn!(behind, node = ?params.node, "subscriber is not reading; dropping it");
                            Some(SendError::Stalled)
                        }
                    };
                    match outcome {
                        None => {}
                        Some(SendError::Stalled) => {
                            tracing::warn!(node = ?params.node, "subscriber stopped reading; dropped");
                            metrics.lagged_disconnects.inc();
                            return;
                        }
                        Some(SendError::Closed) => return,
                    }
                    sent_upto = sent_upto.max(p.seq);
                    stream.set_subscriber_seq(id, sent_upto);
                }
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    tracing::warn!(missed, node = ?params.node, "subscriber lagged; disconnecting it so it resynchronises");
                    metrics.lagged_disconnects.inc();
                    let _ = send_frame(&mut tx, &metrics, &Frame::Lagged { missed }, params.encoding, FrameKind::Control).await;
                    let _ = tx.close().await;
                    return;
                }
                Err(broadcast::error::RecvError::Closed) => return,
            },
            _ = ping.tick() => {
                let ping = tokio::time::timeout(SEND_DEADLINE, tx.send(Message::Ping(Default::default())));
                if !matches!(ping.await, Ok(Ok(()))) {
                    metrics.lagged_disconnects.inc();
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
