//! The state of a till's link to the hub, as the UI shows it: online, syncing or offline.

use std::sync::{Arc, Mutex};

use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LinkState {
    /// Connected and following the stream.
    Online,
    /// Connected, catching up (snapshot or pulls under way).
    Syncing,
    /// The hub cannot be reached; retrying with backoff.
    Offline,
}

impl LinkState {
    pub fn as_str(self) -> &'static str {
        match self {
            LinkState::Online => "online",
            LinkState::Syncing => "syncing",
            LinkState::Offline => "offline",
        }
    }
}

#[derive(Debug, Clone)]
pub struct LinkInfo {
    pub state: LinkState,
    pub hub_node_id: Option<String>,
    pub offline_since: Option<i64>,
    /// Last stream sequence merged.
    pub seq: i64,
    /// The last error, while offline.
    pub last_error: Option<String>,
}

/// Shared, cheap-to-read link state.
#[derive(Debug, Clone)]
pub struct Link {
    inner: Arc<Mutex<LinkInfo>>,
}

impl Default for Link {
    fn default() -> Self {
        Link {
            inner: Arc::new(Mutex::new(LinkInfo {
                state: LinkState::Offline,
                hub_node_id: None,
                offline_since: Some(capsule_protocol::now_ms()),
                seq: 0,
                last_error: None,
            })),
        }
    }
}

impl Link {
    pub fn get(&self) -> LinkInfo {
        self.inner.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn update(&self, f: impl FnOnce(&mut LinkInfo)) {
        f(&mut self.inner.lock().unwrap_or_else(|p| p.into_inner()));
    }

    pub(crate) fn set_state(&self, state: LinkState) {
        self.update(|l| {
            l.state = state;
            if state != LinkState::Offline {
                l.offline_since = None;
                l.last_error = None;
            }
        });
    }

    pub(crate) fn set_offline(&self, error: String) {
        self.update(|l| {
            if l.state != LinkState::Offline || l.offline_since.is_none() {
                l.offline_since = Some(capsule_protocol::now_ms());
            }
            l.state = LinkState::Offline;
            l.last_error = Some(error);
        });
    }

    pub(crate) fn set_hub(&self, hub_node_id: &str) {
        self.update(|l| l.hub_node_id = Some(hub_node_id.to_string()));
    }

    pub(crate) fn set_seq(&self, seq: i64) {
        self.update(|l| l.seq = seq);
    }
}
