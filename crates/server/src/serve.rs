//! The one HTTP server every node runs: a bounded accept loop in front of the router.
//!
//! One client on the shop's Wi-Fi must not take a node down for everyone else, so the loop
//! bounds what a connection can hold: at most [`Limits::max_connections`] at once and
//! [`Limits::max_per_ip`] from one address (more are answered with a short 503 and closed,
//! off the accept loop); a request's head must arrive within [`Limits::header_timeout`],
//! which also closes keep-alive connections that stay idle that long; a request body must
//! arrive within [`Limits::body_timeout`]. Accept errors such as running out of file
//! descriptors pause the loop briefly instead of spinning, and connections already admitted
//! keep being served. A paired node's peers speak TLS 1.3 on the same port (see
//! [`crate::peers`]): their connections carry the device they belong to, and end the moment
//! it is revoked.

use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tower::ServiceExt;

use crate::peers::{Closer, DeviceConnections, PeerDevice, PeerTls};

/// Connection limits of a node's server; one place for their defaults.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Connections served at once (HTTP and `/ws` together).
    pub max_connections: usize,
    /// Connections from one IP address at once.
    pub max_per_ip: usize,
    /// Time to send a request's head; also how long a keep-alive connection may sit idle.
    pub header_timeout: Duration,
    /// Time to send a request's body.
    pub body_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_connections: 1024,
            max_per_ip: 128,
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(30),
        }
    }
}

/// File descriptors kept free for the database, logs and outgoing connections.
const FD_RESERVE: u64 = 64;
/// How long a refused connection gets to take its 503.
const REFUSAL_WRITE: Duration = Duration::from_secs(1);
/// Kernel send buffer of each connection. Left to autotuning, Linux lets megabytes pile up for
/// a client that stopped reading before a send blocks; with this bound a stalled `/ws`
/// subscriber blocks within a few hundred KiB and is dropped by its send deadline.
const SEND_BUFFER: usize = 256 * 1024;
/// How long shutdown waits for connections to finish their requests.
const DRAIN: Duration = Duration::from_secs(5);

/// Raises the soft open-file limit to the hard one, and returns how many connections fit.
pub fn connection_capacity(wanted: usize) -> usize {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(n) => wanted.min(n.saturating_sub(FD_RESERVE).max(1) as usize),
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the open-file limit");
            wanted
        }
    }
}

/// Open connections, in all and per address.
#[derive(Default)]
struct Counts {
    total: usize,
    by_ip: HashMap<IpAddr, usize>,
}

/// A connection's place within the limits. Every request carries a handle to it, so a
/// connection upgraded to a WebSocket keeps its place for as long as the socket lives (the
/// `/ws` handler holds it), not just until the upgrade.
#[derive(Clone)]
pub struct ConnectionSlot(#[allow(dead_code)] Arc<Slot>);

/// Gives its place back however the connection ends.
struct Slot {
    counts: Arc<Mutex<Counts>>,
    ip: IpAddr,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut c = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        c.total -= 1;
        if let Some(n) = c.by_ip.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                c.by_ip.remove(&self.ip);
            }
        }
    }
}

/// Takes a slot for a connection from `ip`, or says why not.
fn admit(counts: &Arc<Mutex<Counts>>, ip: IpAddr, limits: &Limits) -> Result<Slot, String> {
    let mut c = counts.lock().unwrap_or_else(|p| p.into_inner());
    let from_ip = c.by_ip.get(&ip).copied().unwrap_or(0);
    if from_ip >= limits.max_per_ip {
        return Err(format!(
            "too many connections from {ip} ({from_ip} open, at most {}); close some and retry",
            limits.max_per_ip
        ));
    }
    if c.total >= limits.max_connections {
        return Err(format!(
            "this node is serving its most connections ({}); retry shortly",
            limits.max_connections
        ));
    }
    c.total += 1;
    *c.by_ip.entry(ip).or_default() += 1;
    Ok(Slot {
        counts: counts.clone(),
        ip,
    })
}

/// Answers a connection over the limits with a short JSON 503 and closes it.
async fn refuse(mut stream: TcpStream, why: String) {
    let body = serde_json::json!({ "error": why }).to_string();
    let answer = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\nretry-after: 1\r\n\r\n{body}",
        body.len()
    );
    let _ = tokio::time::timeout(REFUSAL_WRITE, async {
        let _ = stream.write_all(answer.as_bytes()).await;
        let _ = stream.shutdown().await;
    })
    .await;
}

/// Serves `router` on `listener` within `limits` until `shutdown` resolves; with `tls`, a
/// connection that opens with a TLS handshake is served over TLS 1.3 (paired devices), the
/// others as plain HTTP (browsers on this machine, pairing).
pub async fn serve(
    listener: TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
    limits: Limits,
    tls: Option<PeerTls>,
) -> std::io::Result<()> {
    let router = router.layer(tower_http::timeout::RequestBodyTimeoutLayer::new(
        limits.body_timeout,
    ));
    let counts: Arc<Mutex<Counts>> = Arc::default();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut shutdown = std::pin::pin!(shutdown);
    let mut tasks = tokio::task::JoinSet::new();
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            () = &mut shutdown => break,
            // Reap finished connection tasks so the set stays small.
            Some(_) = tasks.join_next(), if !tasks.is_empty() => continue,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // Out of file descriptors (or a connection reset before accept): the
                // connections already open keep being served; try again shortly.
                tracing::warn!(error = %e, "accept failed; pausing the accept loop");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let slot = match admit(&counts, peer.ip(), &limits) {
            Ok(s) => s,
            Err(why) => {
                tracing::debug!(%peer, %why, "connection refused");
                tokio::spawn(refuse(stream, why));
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let _ = socket2::SockRef::from(&stream).set_send_buffer_size(SEND_BUFFER);
        let conn = Conn {
            router: router.clone(),
            peer,
            slot: ConnectionSlot(Arc::new(slot)),
            limits,
            stop: stop_rx.clone(),
        };
        let tls = tls.clone();
        tasks.spawn(async move {
            match tls {
                Some(tls) => conn.serve_either(stream, tls).await,
                None => conn.serve(stream, None, None).await,
            }
        });
    }
    let _ = stop_tx.send(true);
    let _ = tokio::time::timeout(DRAIN, async { while tasks.join_next().await.is_some() {} }).await;
    Ok(())
}

/// One admitted connection, before its protocol is known.
struct Conn {
    router: Router,
    peer: SocketAddr,
    slot: ConnectionSlot,
    limits: Limits,
    stop: tokio::sync::watch::Receiver<bool>,
}

impl Conn {
    /// Reads the first byte (without taking it) to tell TLS from plain HTTP, then serves it.
    async fn serve_either(self, stream: TcpStream, tls: PeerTls) {
        // Until it has said which it speaks, a connection is not served: shutdown does not
        // wait for it.
        let mut stop = self.stop.clone();
        let stopped = async move {
            let _ = stop.wait_for(|s| *s).await;
        };
        let mut first = [0u8; 1];
        let opening = async {
            let peeked =
                tokio::time::timeout(self.limits.header_timeout, stream.peek(&mut first)).await;
            if !matches!(peeked, Ok(Ok(1))) {
                return None;
            }
            if first[0] != crate::peers::TLS_HANDSHAKE {
                return Some(Err(stream));
            }
            match tokio::time::timeout(self.limits.header_timeout, tls.acceptor.accept(stream))
                .await
            {
                Ok(Ok(s)) => Some(Ok(s)),
                Ok(Err(e)) => {
                    // Not a roster member, revoked, or not TLS 1.3: nothing is served.
                    tracing::debug!(peer = %self.peer, error = %e, "TLS handshake refused");
                    None
                }
                Err(_) => None,
            }
        };
        let opened_as = tokio::select! {
            o = opening => o,
            () = stopped => None,
        };
        let stream = match opened_as {
            None => return,
            Some(Err(plain)) => {
                let closer = tls.connections.open_anonymous();
                return self.serve(plain, None, Some(closer)).await;
            }
            Some(Ok(s)) => s,
        };
        let device = stream
            .get_ref()
            .1
            .peer_certificates()
            .and_then(capsule_trust::tls::peer_device);
        let closer = opened(&tls.connections, device.as_ref());
        self.serve(stream, device.map(|id| PeerDevice { id }), Some(closer))
            .await
    }

    /// Serves HTTP/1.1 (and upgrades) on `io` until it ends, the server stops, or `closer`
    /// says it must end (its device left the roster; the node became paired under it).
    async fn serve<I>(self, io: I, device: Option<PeerDevice>, closer: Option<Closer>)
    where
        I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let Conn {
            router,
            peer,
            slot,
            limits,
            mut stop,
        } = self;
        let on_request = closer.clone();
        let service = TowerToHyperService::new(router.map_request(
            move |mut req: axum::http::Request<Incoming>| {
                req.extensions_mut().insert(ConnectInfo(peer));
                req.extensions_mut().insert(slot.clone());
                if let Some(d) = &device {
                    req.extensions_mut().insert(d.clone());
                }
                if let Some(c) = &on_request {
                    req.extensions_mut().insert(c.clone());
                }
                req
            },
        ));
        let mut builder = hyper::server::conn::http1::Builder::new();
        builder
            .timer(TokioTimer::new())
            .header_read_timeout(limits.header_timeout)
            .max_buf_size(64 * 1024);
        let conn = builder
            .serve_connection(TokioIo::new(io), service)
            .with_upgrades();
        let mut conn = std::pin::pin!(conn);
        // A removed device's connection is dropped at once, whatever it was doing; one that
        // showed no device finishes the request under way (it may be the pairing that made
        // the node paired) and then closes.
        let graceful = matches!(closer, Some(Closer::Anonymous(..)));
        let closed = async {
            match closer {
                Some(mut c) => c.closed().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            r = conn.as_mut() => {
                if let Err(e) = r {
                    tracing::debug!(%peer, error = %e, "connection ended with an error");
                }
            }
            _ = async { let _ = stop.wait_for(|s| *s).await; } => {
                conn.as_mut().graceful_shutdown();
                let _ = tokio::time::timeout(DRAIN, conn).await;
            }
            () = closed => {
                if graceful {
                    conn.as_mut().graceful_shutdown();
                    let _ = tokio::time::timeout(DRAIN, conn).await;
                }
            }
        }
    }
}

/// What closes a connection of `device` (or of no device).
fn opened(connections: &DeviceConnections, device: Option<&capsule_trust::DeviceId>) -> Closer {
    match device {
        Some(id) => connections.open(id),
        None => connections.open_anonymous(),
    }
}

/// The peer address of a request served by [`serve`].
pub type Peer = ConnectInfo<SocketAddr>;
