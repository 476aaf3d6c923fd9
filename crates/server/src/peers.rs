//! A paired node's peer connections: TLS 1.3 on the node's one port beside plain HTTP (a TLS
//! client speaks first with a handshake record, byte 0x16; an HTTP request starts with a
//! letter), which device each connection belongs to, and closing a device's connections the
//! moment the roster drops it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use capsule_trust::DeviceId;
use tokio::sync::watch;

/// The first byte of every TLS connection (a handshake record).
pub(crate) const TLS_HANDSHAKE: u8 = 0x16;

/// What the server needs to speak TLS to paired devices.
#[derive(Clone)]
pub struct PeerTls {
    pub(crate) acceptor: tokio_rustls::TlsAcceptor,
    pub(crate) connections: DeviceConnections,
}

impl PeerTls {
    pub fn new(config: Arc<rustls::ServerConfig>, connections: DeviceConnections) -> PeerTls {
        PeerTls {
            acceptor: tokio_rustls::TlsAcceptor::from(config),
            connections,
        }
    }
}

/// The open connections of each paired device, so removing one closes them all at once; and
/// the connections without a device (browsers, scripts, unpaired nodes), closed together when
/// the node becomes paired: what they were allowed before, they must ask for again.
#[derive(Clone)]
pub struct DeviceConnections(Arc<Inner>);

struct Inner {
    devices: Mutex<HashMap<DeviceId, watch::Sender<bool>>>,
    anonymous: watch::Sender<u64>,
}

impl Default for DeviceConnections {
    fn default() -> DeviceConnections {
        DeviceConnections(Arc::new(Inner {
            devices: Mutex::default(),
            anonymous: watch::channel(0).0,
        }))
    }
}

impl DeviceConnections {
    /// A connection of `id` opened: what tells it to close.
    pub(crate) fn open(&self, id: &DeviceId) -> Closer {
        let mut map = self.0.devices.lock().unwrap_or_else(|p| p.into_inner());
        // Forget devices whose connections all ended.
        map.retain(|_, tx| tx.receiver_count() > 0);
        Closer::Device(
            map.entry(id.clone())
                .or_insert_with(|| watch::channel(false).0)
                .subscribe(),
        )
    }

    /// A connection without a device opened.
    pub(crate) fn open_anonymous(&self) -> Closer {
        let rx = self.0.anonymous.subscribe();
        let at = *rx.borrow();
        Closer::Anonymous(rx, at)
    }

    /// Closes every open connection (HTTP and `/ws`) of these devices.
    pub fn close(&self, ids: &[DeviceId]) {
        let mut map = self.0.devices.lock().unwrap_or_else(|p| p.into_inner());
        for id in ids {
            if let Some(tx) = map.remove(id) {
                tracing::info!(device = %id, connections = tx.receiver_count(), "closing a device's connections: it left the roster");
                let _ = tx.send(true);
            }
        }
    }

    /// Closes every connection open without a device (the node just became paired).
    pub fn close_anonymous(&self) {
        tracing::info!(
            connections = self.0.anonymous.receiver_count(),
            "closing connections without a device: this node is paired now"
        );
        self.0.anonymous.send_modify(|g| *g += 1);
    }

    /// Connections open per device, for status and tests.
    pub fn open_count(&self, id: &DeviceId) -> usize {
        let map = self.0.devices.lock().unwrap_or_else(|p| p.into_inner());
        map.get(id).map_or(0, |tx| tx.receiver_count())
    }
}

/// On every request: what ends its connection early (its device removed, or the node paired
/// under a connection that showed no device).
#[derive(Clone)]
pub enum Closer {
    Device(watch::Receiver<bool>),
    Anonymous(watch::Receiver<u64>, u64),
}

impl Closer {
    /// Resolves when the connection must end.
    pub async fn closed(&mut self) {
        match self {
            Closer::Device(rx) => {
                let _ = rx.wait_for(|c| *c).await;
            }
            Closer::Anonymous(rx, at) => {
                let at = *at;
                let _ = rx.wait_for(|g| *g != at).await;
            }
        }
    }
}

/// On every request of a TLS connection that showed a roster member's certificate.
#[derive(Clone)]
pub struct PeerDevice {
    pub id: DeviceId,
}

impl std::fmt::Debug for PeerDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PeerDevice({})", self.id.short())
    }
}
