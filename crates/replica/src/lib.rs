//! Capsule POS replica: how a till keeps its local SQLite in step with the hub.
//!
//! [`follow`] runs the link: connect to the hub's `/ws`, take a snapshot when the local copy
//! cannot be trusted to be current, then for each burst of capsules pull only the parts that
//! are newer than what is here (one batch request per entity) and merge them. [`Outbox`]
//! commits the till's own writes locally first and drains them to the hub in order.

mod backfill;
mod client;
mod follow;
mod link;
pub mod metrics;
mod outbox;
mod report;

pub use backfill::HISTORY_PAGE;
pub use client::PeerClient;
pub use follow::{FollowConfig, follow};
pub use link::{Link, LinkState};
pub use metrics::ReplicaMetrics;
pub use outbox::{Outbox, QUICK_CONFIRM, Submitted};
pub use report::report;

#[derive(Debug, thiserror::Error)]
pub enum ReplicaError {
    #[error("hub unreachable: {0}")]
    Unreachable(String),
    #[error("hub answered {status}: {message}")]
    Hub { status: u16, message: String },
    #[error("protocol error: {0}")]
    Protocol(String),
    #[error(transparent)]
    Store(#[from] capsule_store::StoreError),
}

pub type Result<T, E = ReplicaError> = std::result::Result<T, E>;

/// A change to the local replica, for the node's own screens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LocalChange {
    /// These parts of this entity changed here (merged, deleted, or a local write).
    Changed(capsule_protocol::Capsule),
    /// Everything was replaced by a snapshot; reload.
    Reset,
}

/// Called for every local change, in order.
pub type OnChange = std::sync::Arc<dyn Fn(LocalChange) + Send + Sync>;

/// Where the hub is now. The mesh (or a fixed `--hub`) points it; following, the outbox and
/// reports read it and move to a new hub the moment it changes.
#[derive(Clone)]
pub struct HubTarget {
    rx: tokio::sync::watch::Receiver<Option<String>>,
    /// Keeps a fixed target's sender alive, so `changed` waits instead of failing.
    _fixed: Option<std::sync::Arc<tokio::sync::watch::Sender<Option<String>>>>,
}

impl HubTarget {
    /// A target that never moves (`--role till --hub URL`).
    pub fn fixed(url: &str) -> HubTarget {
        let (tx, rx) = tokio::sync::watch::channel(Some(url.trim_end_matches('/').to_string()));
        HubTarget {
            rx,
            _fixed: Some(std::sync::Arc::new(tx)),
        }
    }

    /// A target the returned sender moves (None: no hub known).
    pub fn channel() -> (tokio::sync::watch::Sender<Option<String>>, HubTarget) {
        let (tx, rx) = tokio::sync::watch::channel(None);
        (tx, HubTarget { rx, _fixed: None })
    }

    /// The hub's base URL now, marking it seen.
    pub fn get(&mut self) -> Option<String> {
        self.rx.borrow_and_update().clone()
    }

    /// The hub's base URL now.
    pub fn peek(&self) -> Option<String> {
        self.rx.borrow().clone()
    }

    /// Waits until the target moves (for ever if it cannot any more).
    pub async fn changed(&mut self) {
        if self.rx.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

/// `http://host:port` -> `ws://host:port/ws`.
pub fn ws_url(hub_url: &str) -> String {
    let base = hub_url.trim_end_matches('/');
    let rest = base.strip_prefix("http://").map(|r| format!("ws://{r}"));
    let rest = rest.or_else(|| base.strip_prefix("https://").map(|r| format!("wss://{r}")));
    format!("{}/ws", rest.unwrap_or_else(|| base.to_string()))
}

#[cfg(test)]
mod tests {
    #[test]
    fn ws_url_follows_the_scheme() {
        assert_eq!(
            super::ws_url("http://127.0.0.1:9000/"),
            "ws://127.0.0.1:9000/ws"
        );
        assert_eq!(super::ws_url("https://hub.local"), "wss://hub.local/ws");
    }
}
