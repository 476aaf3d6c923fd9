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

/// The open connections of each paired device, so revoking one closes them all at once.
#[derive(Clone, Default)]
pub struct DeviceConnections(Arc<Mutex<HashMap<DeviceId, watch::Sender<bool>>>>);

impl DeviceConnections {
    /// A connection of `id` opened: what tells it to close.
    pub(crate) fn open(&self, id: &DeviceId) -> watch::Receiver<bool> {
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        // Forget devices whose connections all ended.
        map.retain(|_, tx| tx.receiver_count() > 0);
        map.entry(id.clone())
            .or_insert_with(|| watch::channel(false).0)
            .subscribe()
    }

    /// Closes every open connection (HTTP and `/ws`) of these devices.
    pub fn close(&self, ids: &[DeviceId]) {
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        for id in ids {
            if let Some(tx) = map.remove(id) {
                tracing::info!(device = %id, connections = tx.receiver_count(), "closing a device's connections: it left the roster");
                let _ = tx.send(true);
            }
        }
    }

    /// Connections open per device, for status and tests.
    pub fn open_count(&self, id: &DeviceId) -> usize {
        let map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        map.get(id).map_or(0, |tx| tx.receiver_count())
    }
}

/// On every request of a TLS connection that showed a roster member's certificate.
#[derive(Clone)]
pub struct PeerDevice {
    pub id: DeviceId,
    closed: watch::Receiver<bool>,
}

impl PeerDevice {
    pub(crate) fn new(id: DeviceId, closed: watch::Receiver<bool>) -> PeerDevice {
        PeerDevice { id, closed }
    }

    /// Resolves when the device leaves the roster (revoked): its connections must end.
    pub async fn closed(&mut self) {
        let _ = self.closed.wait_for(|c| *c).await;
    }
}

impl std::fmt::Debug for PeerDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PeerDevice({})", self.id.short())
    }
}
