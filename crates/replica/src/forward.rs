//! A till's own writes: checked here, sent to the hub, and once confirmed applied locally so
//! the cashier sees them at once. The hub's capsule then brings the authoritative version.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use capsule_protocol::{ErrorBody, MutationBatch, MutationResponse, prepare_batch};
use capsule_store::{ApplyMode, Store, StoreError};

use crate::{LocalChange, OnChange, ReplicaError, Result};

pub struct Forwarder {
    store: Arc<Store>,
    hub_url: String,
    http: reqwest::Client,
    ui: OnChange,
}

impl Forwarder {
    pub fn new(store: Arc<Store>, hub_url: &str, ui: OnChange) -> Forwarder {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(2))
            .timeout(Duration::from_secs(10))
            .build()
            .expect("a plain HTTP client builds");
        Forwarder {
            store,
            hub_url: hub_url.trim_end_matches('/').to_string(),
            http,
            ui,
        }
    }

    /// Validates, forwards and applies. A hub that cannot be reached is an error and nothing
    /// is recorded; a hub that took the request but did not answer may have recorded it, and
    /// the caller is told so. Either way, retrying with the same mids is safe.
    pub async fn submit(&self, mut batch: MutationBatch) -> Result<MutationResponse> {
        prepare_batch(self.store.schema(), &mut batch)
            .map_err(|e| StoreError::Invalid(e.to_string()))?;
        if batch.source.is_none() {
            batch.source = Some(self.store.node_id().to_string());
        }
        let url = format!("{}/api/mutations", self.hub_url);
        let resp = self
            .http
            .post(&url)
            .json(&batch)
            .send()
            .await
            .map_err(|e| {
                if e.is_connect() {
                    ReplicaError::Unreachable(format!(
                        "the hub at {} cannot be reached ({e}); nothing was recorded",
                        self.hub_url
                    ))
                } else {
                    ReplicaError::OutcomeUnknown(format!(
                        "the hub at {} did not confirm in time ({e}); it may have recorded this: \
                         retry with the same mids (a repeat is answered as a duplicate), do not re-enter it",
                        self.hub_url
                    ))
                }
            })?;
        let status = resp.status();
        if !status.is_success() {
            let message = resp
                .json::<ErrorBody>()
                .await
                .map(|b| b.error)
                .unwrap_or_else(|e| e.to_string());
            return Err(ReplicaError::Hub {
                status: status.as_u16(),
                message,
            });
        }
        let answer: MutationResponse = resp
            .json()
            .await
            .map_err(|e| ReplicaError::Protocol(format!("bad answer from the hub: {e}")))?;
        let confirmed: HashMap<String, i64> = answer
            .results
            .iter()
            .map(|r| (r.mid.clone(), r.seq))
            .collect();
        let store = self.store.clone();
        let applied = tokio::task::spawn_blocking(move || {
            store.apply(&batch, &ApplyMode::Provisional { confirmed })
        })
        .await
        .map_err(|e| ReplicaError::Protocol(format!("task failed: {e}")))?;
        match applied {
            Ok(applied) => {
                for c in applied.capsules {
                    (self.ui)(LocalChange::Changed(c.capsule));
                }
            }
            // The hub has it; the stream will bring it here even if the local copy could not
            // take it now.
            Err(e) => {
                tracing::warn!(error = %e, "confirmed mutation not applied locally; waiting for the hub's capsule")
            }
        }
        Ok(answer)
    }
}
