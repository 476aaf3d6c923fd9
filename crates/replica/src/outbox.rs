//! A till's own writes: committed locally first (rows and outbox entry in one transaction, so
//! the cashier never waits on the network), then drained to the hub in order by one task.
//!
//! [`Outbox::submit`] answers `applied` when the hub confirmed the write within
//! [`QUICK_CONFIRM`], `queued` otherwise; either way the sale is on the till's disk. The drain
//! ([`Outbox::run`]) sends one request at a time with the same mids, so a resend after a lost
//! answer is a duplicate at the hub. Each client (a device) has its own line, taken in turn
//! (a flooding client delays a cashier's sale by one request, not by its backlog), oldest
//! first within a line, and never ahead of an older write to the same entity. A request the hub refuses (4xx) is set aside
//! with its reason and its entities are re-read from the hub, so the refused change leaves the
//! screens; the queue moves on. Network trouble, 5xx and 429 keep the request at the head and
//! retry with backoff.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use capsule_protocol::{
    BatchPull, ErrorBody, MutationBatch, MutationResponse, MutationResult, MutationStatus,
};
use capsule_store::{OutboxRequest, Store};
use tokio::sync::{Notify, broadcast};

use crate::follow::blocking;
use crate::{HubTarget, LocalChange, OnChange, ReplicaError, Result};

/// How long a write waits for the hub's confirmation before it is answered as queued.
pub const QUICK_CONFIRM: Duration = Duration::from_millis(400);
/// Longest wait between two attempts while the hub cannot be reached.
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// What became of a queued request at the hub.
#[derive(Debug, Clone)]
enum Outcome {
    Confirmed(Vec<MutationResult>),
    Rejected {
        status: u16,
        message: String,
    },
    /// The hub could not be reached (or was busy); the write stays queued.
    Deferred,
}

/// The answer to a till's write.
#[derive(Debug, Clone)]
pub struct Submitted {
    /// Every mid confirmed by the hub (or a repeat of a known one).
    pub confirmed: bool,
    pub response: MutationResponse,
}

/// Mutations one send to the hub carries at most (a round of requests, clients in turn): a
/// backlog drains in few hub commits. A send that carries a client's last waiting write (a
/// cashier's sale) ends with that round, so the sale waits for a round of the others, not for
/// a send of this size per flooding client.
const SEND_MUTATIONS: usize = 64;

/// A refusal that retrying the same request will not change (not a timeout, not "busy").
fn refused_for_good(status: u16) -> bool {
    (400..500).contains(&status) && !matches!(status, 408 | 425 | 429)
}

/// How long a write whose parent row the hub lacks is retried before it is set aside.
const MISSING_PARENT_WAIT_MS: i64 = 60_000;

pub struct Outbox {
    store: Arc<Store>,
    hub: HubTarget,
    /// How the hub is reached (TLS once paired).
    peers: crate::PeerClient,
    ui: OnChange,
    /// Provisional order numbers are `{prefix}-{n}`.
    prefix: String,
    wake: Notify,
    outcomes: broadcast::Sender<(String, Outcome)>,
    /// The drain's last attempt reached the hub. While it did not, a write is answered as
    /// queued at once instead of waiting for a confirmation that cannot come.
    reachable: AtomicBool,
}

impl Outbox {
    pub fn new(
        store: Arc<Store>,
        hub: HubTarget,
        ui: OnChange,
        prefix: String,
        peers: crate::PeerClient,
    ) -> Outbox {
        Outbox {
            store,
            hub,
            peers,
            ui,
            prefix,
            wake: Notify::new(),
            outcomes: broadcast::channel(256).0,
            reachable: AtomicBool::new(true),
        }
    }

    /// Makes the drain look at the queue now (a refused write was put back in line).
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// A read this node cannot answer from its own data (an order's timeline on a till that
    /// keeps no journal), asked of the hub: its status and JSON answer.
    pub async fn ask_hub(&self, path: &str) -> Result<(u16, serde_json::Value)> {
        let hub = self
            .hub
            .peek()
            .ok_or_else(|| ReplicaError::Unreachable("no hub known".into()))?;
        let resp = self
            .peers
            .http()
            .get(format!("{}{path}", self.peers.base(&hub)))
            .timeout(std::time::Duration::from_secs(5))
            .send()
            .await
            .map_err(|e| ReplicaError::Unreachable(e.to_string()))?;
        let status = resp.status().as_u16();
        let body = resp
            .json()
            .await
            .map_err(|e| ReplicaError::Protocol(e.to_string()))?;
        Ok((status, body))
    }

    /// Commits the write here and queues it in `client`'s line; waits briefly for the hub's
    /// confirmation.
    pub async fn submit(&self, batch: MutationBatch, client: String) -> Result<Submitted> {
        let mut outcomes = self.outcomes.subscribe();
        let (s, prefix) = (self.store.clone(), self.prefix.clone());
        let local = blocking(move || s.apply_local_for(&batch, &prefix, &client)).await?;
        for c in &local.capsules {
            (self.ui)(LocalChange::Changed(c.clone()));
        }
        let Some(request) = local.request else {
            // Every mid was seen before: nothing new to send.
            return Ok(Submitted {
                confirmed: true,
                response: MutationResponse {
                    results: local.results,
                },
            });
        };
        self.wake.notify_one();
        // Offline, or behind older queued writes of the same client: the answer cannot come
        // quickly.
        let quick = if self.reachable.load(Ordering::Relaxed) && !local.behind {
            QUICK_CONFIRM
        } else {
            Duration::ZERO
        };
        let wait = async {
            loop {
                match outcomes.recv().await {
                    Ok((r, outcome)) if r == request => return Some(outcome),
                    Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(broadcast::error::RecvError::Closed) => return None,
                }
            }
        };
        match tokio::time::timeout(quick, wait).await {
            Ok(Some(Outcome::Confirmed(hub))) => {
                let mut results = local.results;
                for r in &mut results {
                    if let Some(h) = hub.iter().find(|h| h.mid == r.mid) {
                        r.seq = h.seq;
                    }
                }
                Ok(Submitted {
                    confirmed: true,
                    response: MutationResponse { results },
                })
            }
            Ok(Some(Outcome::Rejected { status, message })) => {
                Err(ReplicaError::Hub { status, message })
            }
            Ok(Some(Outcome::Deferred) | None) | Err(_) => {
                let mut results = local.results;
                for r in &mut results {
                    if r.status == MutationStatus::Applied {
                        r.status = MutationStatus::Queued;
                    }
                }
                Ok(Submitted {
                    confirmed: false,
                    response: MutationResponse { results },
                })
            }
        }
    }

    /// Drains the outbox to the hub for as long as the node runs: each send carries a round
    /// of requests, clients in turn ([`Store::outbox_next_fair`]), in one hub request.
    pub async fn run(self: Arc<Self>) {
        let source = self.store.node_id().to_string();
        let mut backoff = Duration::from_millis(100);
        // The client whose request went last: the next send starts with the client after it.
        let mut turn = String::new();
        // The hub refused a combined send: its first request goes alone next, to find out
        // which request it refuses (each is all or nothing on its own).
        let mut alone = false;
        loop {
            let s = self.store.clone();
            let (src, after) = (source.clone(), turn.clone());
            let most = if alone { 0 } else { SEND_MUTATIONS };
            let reqs = match blocking(move || s.outbox_next_fair(&src, &after, most)).await {
                Ok(n) => n,
                Err(e) => {
                    tracing::error!(error = %e, "cannot read the outbox");
                    tokio::time::sleep(MAX_BACKOFF).await;
                    continue;
                }
            };
            let Some(last) = reqs.last() else {
                // Nothing queued: sleep until a write arrives (or look again now and then, in
                // case a retry was asked for through another path).
                let _ = tokio::time::timeout(Duration::from_secs(1), self.wake.notified()).await;
                continue;
            };
            turn = last.client.clone();
            let used = self.hub.peek();
            let batch = MutationBatch {
                mutations: reqs
                    .iter()
                    .flat_map(|r| r.batch.mutations.iter().cloned())
                    .collect(),
                source: Some(source.clone()),
            };
            alone = false;
            match self.send(&batch).await {
                Ok(answer) => {
                    self.reachable.store(true, Ordering::Relaxed);
                    backoff = Duration::from_millis(100);
                    self.confirmed(reqs, answer).await;
                }
                // Refused together: the first request goes alone next.
                Err(ReplicaError::Hub { status, .. })
                    if reqs.len() > 1 && refused_for_good(status) =>
                {
                    self.reachable.store(true, Ordering::Relaxed);
                    alone = true;
                }
                Err(e) => {
                    let req = reqs.into_iter().next().expect("a send has a request");
                    self.failed(req, e, used, &mut backoff).await;
                }
            }
        }
    }

    /// Records the hub's answer to a send, request by request, and tells each waiting submit.
    async fn confirmed(&self, reqs: Vec<OutboxRequest>, answer: MutationResponse) {
        let by_mid: HashMap<&str, &MutationResult> =
            answer.results.iter().map(|r| (r.mid.as_str(), r)).collect();
        let answers: Vec<(String, Vec<MutationResult>)> = reqs
            .iter()
            .map(|req| {
                let results = req
                    .batch
                    .mutations
                    .iter()
                    .filter_map(|m| by_mid.get(m.mid.as_str()).map(|r| (*r).clone()))
                    .collect();
                (req.request.clone(), results)
            })
            .collect();
        let (s, all) = (self.store.clone(), answers.clone());
        match blocking(move || s.outbox_confirmed_all(&all)).await {
            // Taken only in part: the hub's version replaces the till's own.
            Ok(partial) => self.reread(partial).await,
            Err(e) => tracing::error!(error = %e, "cannot record a confirmation"),
        }
        for (request, results) in answers {
            let _ = self.outcomes.send((request, Outcome::Confirmed(results)));
        }
    }

    /// A request sent alone was not taken: set aside, retried at its next turn, or retried
    /// after a backoff, as the reason says.
    async fn failed(
        &self,
        req: OutboxRequest,
        e: ReplicaError,
        used: Option<String>,
        backoff: &mut Duration,
    ) {
        match e {
            // Taken ahead of older writes (another client's turn), it may need one of them
            // (an order on a shift opened just before): it waits for its next turn, the
            // queue moves on at once.
            ReplicaError::Hub { status: 424, .. } if !req.oldest => {
                self.reachable.store(true, Ordering::Relaxed);
                let _ = self.outcomes.send((req.request.clone(), Outcome::Deferred));
            }
            // The parent of a row is not at the hub yet (after a failover its write may be
            // on its way from another node): retried like an unreachable hub, for a while.
            ReplicaError::Hub {
                status: 424,
                message,
            } if capsule_protocol::now_ms() - req.queued_at < MISSING_PARENT_WAIT_MS => {
                self.reachable.store(true, Ordering::Relaxed);
                let _ = self.outcomes.send((req.request.clone(), Outcome::Deferred));
                let (s, r) = (self.store.clone(), req.request.clone());
                let _ = blocking(move || s.outbox_attempt_failed(&r, &message)).await;
                let _ = tokio::time::timeout(*backoff, self.wake.notified()).await;
                *backoff = (*backoff * 2).min(MAX_BACKOFF);
            }
            ReplicaError::Hub { status, message } if refused_for_good(status) => {
                self.reachable.store(true, Ordering::Relaxed);
                *backoff = Duration::from_millis(100);
                tracing::warn!(status, %message, "the hub refused a queued write; set aside");
                self.set_aside(&req.request, status, &message).await;
                let _ = self
                    .outcomes
                    .send((req.request, Outcome::Rejected { status, message }));
            }
            e => {
                self.reachable.store(false, Ordering::Relaxed);
                let _ = self.outcomes.send((req.request.clone(), Outcome::Deferred));
                let (s, r, msg) = (self.store.clone(), req.request.clone(), e.to_string());
                let _ = blocking(move || s.outbox_attempt_failed(&r, &msg)).await;
                tracing::debug!(error = %e, "hub not reachable for the outbox; retrying");
                let jitter = rand::random_range(0..=backoff.as_millis() as u64 / 2);
                let wait = *backoff + Duration::from_millis(jitter);
                // A new hub is worth trying at once, not after the backoff.
                let mut moved = self.hub.clone();
                if moved.get() != used {
                    *backoff = Duration::from_millis(100);
                    return;
                }
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = self.wake.notified() => {}
                    _ = moved.changed() => *backoff = Duration::from_millis(100),
                }
                *backoff = (*backoff * 2).min(MAX_BACKOFF);
            }
        }
    }

    /// Records a refusal and re-reads the entities the refused request touched.
    async fn set_aside(&self, request: &str, status: u16, message: &str) {
        let (s, r, m) = (
            self.store.clone(),
            request.to_string(),
            format!("{status}: {message}"),
        );
        match blocking(move || s.outbox_rejected(&r, &m)).await {
            Ok(touched) => self.reread(touched).await,
            Err(e) => tracing::error!(error = %e, "cannot set a refused write aside"),
        }
    }

    /// Re-reads entities from the hub over whatever is here: the hub refused a write to them,
    /// or took it only in part, so the till's own version must leave the screens.
    async fn reread(&self, touched: Vec<(String, String)>) {
        for (entity, id) in touched {
            let Some(hub) = self.hub.peek() else { return };
            let url = format!(
                "{}/api/entities?entity={entity}&ids={id}",
                self.peers.base(&hub)
            );
            let pull: BatchPull = match self.get(&url).await {
                Ok(p) => p,
                Err(e) => {
                    // The stream or a later snapshot brings the hub's rows; the refused write
                    // is no longer re-applied either way.
                    tracing::warn!(error = %e, "cannot re-read an entity the hub had its say on");
                    continue;
                }
            };
            let s = self.store.clone();
            match blocking(move || s.merge_pulled_over_local(&pull)).await {
                Ok(outcome) => {
                    for c in outcome.changed {
                        (self.ui)(LocalChange::Changed(c));
                    }
                }
                Err(e) => tracing::warn!(error = %e, "cannot restore an entity from the hub"),
            }
        }
    }

    async fn send(&self, batch: &MutationBatch) -> Result<MutationResponse> {
        let hub = self
            .hub
            .peek()
            .ok_or_else(|| ReplicaError::Unreachable("no hub is known yet".into()))?;
        let resp = self
            .peers
            .http()
            .post(format!("{}/api/mutations", self.peers.base(&hub)))
            .timeout(Duration::from_secs(10))
            .json(batch)
            .send()
            .await
            .map_err(|e| ReplicaError::Unreachable(e.to_string()))?;
        read(resp).await
    }

    async fn get<T: serde::de::DeserializeOwned>(&self, url: &str) -> Result<T> {
        let resp = self
            .peers
            .http()
            .get(url)
            .timeout(Duration::from_secs(10))
            .send()
            .await
            .map_err(|e| ReplicaError::Unreachable(e.to_string()))?;
        read(resp).await
    }
}

async fn read<T: serde::de::DeserializeOwned>(resp: reqwest::Response) -> Result<T> {
    let status = resp.status();
    if !status.is_success() {
        let message = resp
            .json::<ErrorBody>()
            .await
            .map(|b| b.error)
            .unwrap_or_else(|e| e.to_string());
        if status == reqwest::StatusCode::UNAUTHORIZED {
            // The hub does not admit this device (not paired yet, or paired since with a
            // roster it has not got): the write's fault is none, it waits in line.
            return Err(ReplicaError::Unreachable(format!(
                "the hub does not admit this device: {message}"
            )));
        }
        return Err(ReplicaError::Hub {
            status: status.as_u16(),
            message,
        });
    }
    resp.json()
        .await
        .map_err(|e| ReplicaError::Protocol(format!("bad answer from the hub: {e}")))
}
