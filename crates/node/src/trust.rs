//! What a node needs to know who it talks to: its identity, the shop's roster kept current from
//! the synced `device` rows (closing a revoked device's connections), the launch key of its own
//! screens, and from them the server's TLS and access check and the client it reaches peers with.

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use axum::Router;
use capsule_replica::PeerClient;
use capsule_server::access::{AccessPolicy, LocalKey};
use capsule_server::{DeviceConnections, PeerTls};
use capsule_store::Store;
use capsule_trust::{Anchor, Identity, Roster};

/// The file this launch's key for the node's own screens is written to (mode 0600).
pub const LOCAL_KEY_FILE: &str = "local.key";

/// A node's side of the shop's trust.
#[derive(Clone)]
pub struct DeviceTrust {
    pub identity: Arc<Identity>,
    pub roster: Roster,
    pub connections: DeviceConnections,
    pub local_key: LocalKey,
    /// Browsers a manager paired with this node.
    pub screens: capsule_server::sessions::Screens,
    /// Staff logged in at this node's screens (kept while the node changes role).
    pub staff: Arc<capsule_server::staff::StaffDesk>,
}

impl DeviceTrust {
    /// Loads the identity and the roster as `store` holds it, and makes this launch's key.
    pub async fn load(data_dir: &Path, store: &Arc<Store>) -> anyhow::Result<DeviceTrust> {
        let dir = data_dir.to_path_buf();
        let s = store.clone();
        tokio::task::spawn_blocking(move || {
            let identity = Identity::load_or_create(&dir)
                .context("cannot make or read this device's identity")?;
            let roster = Roster::new(identity.device_id().clone(), Anchor::load(&dir));
            roster.reload(&s.table_rows_committed("device")?);
            let local_key = LocalKey::new(new_key());
            capsule_trust::write_private(&dir.join(LOCAL_KEY_FILE), local_key.as_str().as_bytes())
                .context("cannot write this launch's key for the node's own screens")?;
            Ok(DeviceTrust {
                identity: Arc::new(identity),
                roster,
                connections: DeviceConnections::default(),
                local_key,
                screens: capsule_server::sessions::Screens::load(Some(dir.clone())),
                staff: Arc::new(capsule_server::staff::StaffDesk::from_env(s.node_id())),
            })
        })
        .await?
    }

    /// Keeps the roster current on every path that writes it, and closes the connections of a
    /// device the moment it is no longer a live member. Runs for ever.
    pub fn keep_roster(&self, store: Arc<Store>) -> tokio::task::JoinHandle<()> {
        let changed = Arc::new(tokio::sync::Notify::new());
        let wake = changed.clone();
        store.watch_table("device", Arc::new(move || wake.notify_one()));
        let (roster, connections) = (self.roster.clone(), self.connections.clone());
        tokio::spawn(async move {
            loop {
                changed.notified().await;
                let s = store.clone();
                match tokio::task::spawn_blocking(move || s.table_rows_committed("device")).await {
                    Ok(Ok(rows)) => {
                        let was_paired = roster.is_paired();
                        let gone = roster.reload(&rows);
                        if !gone.is_empty() {
                            connections.close(&gone);
                        }
                        if !was_paired && roster.is_paired() {
                            connections.close_anonymous();
                        }
                    }
                    Ok(Err(e)) => tracing::error!(error = %e, "cannot read the roster"),
                    Err(e) => tracing::error!(error = %e, "reading the roster panicked"),
                }
            }
        })
    }

    /// The server's TLS for paired devices.
    pub fn server_tls(&self) -> PeerTls {
        PeerTls::new(
            capsule_trust::tls::server_config(&self.identity, self.roster.clone()),
            self.connections.clone(),
        )
    }

    /// The client this node reaches its peers with.
    pub fn peers(&self) -> PeerClient {
        PeerClient::for_device(&self.identity, self.roster.clone())
    }

    /// `router` behind the route table's access check, with this node's staff logins.
    pub fn guard(&self, router: Router) -> Router {
        capsule_server::access::layer(
            router.layer(axum::Extension(self.staff.clone())),
            AccessPolicy {
                roster: self.roster.clone(),
                local_key: self.local_key.clone(),
                screens: self.screens.clone(),
            },
        )
    }
}

fn new_key() -> String {
    capsule_server::sessions::random_hex(32)
}
