//! The hub's one writer: write requests wait in a queue per source and are applied
//! round-robin, so one client looping on big writes cannot starve a cashier's single sale.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Condvar, Mutex};

use axum::http::StatusCode;
use capsule_protocol::MutationBatch;
use capsule_store::{Applied, PreparedBatch, Store};
use tokio::sync::{Notify, oneshot};

use crate::error::ApiError;

/// Requests one source may have waiting; more answer 429 (a till sends one at a time).
pub const MAX_WAITING_PER_SOURCE: usize = 16;
/// Requests waiting over all sources; more answer 503.
pub const MAX_WAITING: usize = 1024;
/// Requests one group commit takes at most: bounds how long the first of them waits.
pub const MAX_GROUP_REQUESTS: usize = 64;
/// Mutations one group commit takes at most (a request alone may have up to 200).
pub const MAX_GROUP_MUTATIONS: usize = 1000;
/// Queue key of a request that names no source.
const ANONYMOUS: &str = "";

type Reply = oneshot::Sender<Result<Applied, ApiError>>;

#[derive(Default)]
struct Queues {
    by_source: HashMap<String, VecDeque<(PreparedBatch, Reply)>>,
    /// Sources with waiting requests, in the order they are next served.
    turn: VecDeque<String>,
    waiting: usize,
    closed: bool,
}

struct Shared {
    queues: Mutex<Queues>,
    ready: Condvar,
}

/// Handle to the writer thread; dropping the last handle stops it after the queued work.
#[derive(Clone)]
pub struct WriteQueue {
    shared: Arc<Shared>,
    store: Arc<Store>,
    _stop: Arc<StopOnDrop>,
}

struct StopOnDrop(Arc<Shared>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        lock(&self.0).closed = true;
        self.0.ready.notify_all();
    }
}

fn lock(shared: &Shared) -> std::sync::MutexGuard<'_, Queues> {
    shared.queues.lock().unwrap_or_else(|p| p.into_inner())
}

impl WriteQueue {
    /// Starts the writer thread over `store`; `committed` is woken after each commit that
    /// logged capsules.
    pub fn start(store: Arc<Store>, committed: Arc<Notify>) -> WriteQueue {
        let shared = Arc::new(Shared {
            queues: Mutex::new(Queues::default()),
            ready: Condvar::new(),
        });
        let worker = shared.clone();
        let writer_store = store.clone();
        std::thread::Builder::new()
            .name("hub-writer".into())
            .spawn(move || writer_loop(&worker, &writer_store, &committed))
            .expect("the writer thread starts");
        WriteQueue {
            store,
            _stop: Arc::new(StopOnDrop(shared.clone())),
            shared,
        }
    }

    /// Checks a request against the schema (here, on the request's task: a bad one is
    /// answered 400 without waiting and the writer thread only applies; a fenced node answers
    /// 503 first, as the writer would), queues it behind its source's earlier ones and waits
    /// for its commit.
    pub async fn submit(&self, batch: MutationBatch) -> Result<Applied, ApiError> {
        self.store.ensure_hub()?;
        let batch = self.store.prepare(batch)?;
        let source = batch
            .batch()
            .source
            .clone()
            .unwrap_or_else(|| ANONYMOUS.into());
        let (tx, rx) = oneshot::channel();
        {
            let mut q = lock(&self.shared);
            if q.waiting >= MAX_WAITING {
                return Err(ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!("the hub has {MAX_WAITING} writes waiting; try again shortly"),
                ));
            }
            let queue = q.by_source.entry(source.clone()).or_default();
            if queue.len() >= MAX_WAITING_PER_SOURCE {
                return Err(ApiError::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    format!(
                        "source '{source}' already has {MAX_WAITING_PER_SOURCE} writes waiting; send the next after an answer"
                    ),
                ));
            }
            queue.push_back((batch, tx));
            if queue.len() == 1 {
                q.turn.push_back(source);
            }
            q.waiting += 1;
        }
        self.shared.ready.notify_one();
        rx.await.unwrap_or_else(|_| {
            Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "the hub is shutting down",
            ))
        })
    }
}

/// Takes what is waiting (round-robin over sources, bounded), applies it as one group commit,
/// answers each request, repeats. Requests that arrive during a commit form the next group,
/// so the fsyncs per second stay what the disk allows while throughput grows with writers.
fn writer_loop(shared: &Shared, store: &Store, committed: &Notify) {
    loop {
        let Some(jobs) = next_group(shared) else {
            return;
        };
        // A client that went away before its turn gets nothing written: an unanswered
        // write is one not made.
        let jobs: Vec<(PreparedBatch, Reply)> =
            jobs.into_iter().filter(|(_, r)| !r.is_closed()).collect();
        if jobs.is_empty() {
            continue;
        }
        let sources: Vec<String> = jobs
            .iter()
            .map(|(b, _)| {
                b.batch()
                    .source
                    .clone()
                    .unwrap_or_else(|| store.node_id().to_string())
            })
            .collect();
        let requests: Vec<(&PreparedBatch, &str)> = jobs
            .iter()
            .zip(&sources)
            .map(|((b, _), s)| (b, s.as_str()))
            .collect();
        let answers = store.apply_prepared(&requests);
        if answers
            .iter()
            .any(|a| a.as_ref().is_ok_and(|a| !a.capsules.is_empty()))
        {
            committed.notify_one();
        }
        for ((_, reply), answer) in jobs.into_iter().zip(answers) {
            let _ = reply.send(answer.map_err(ApiError::from));
        }
    }
}

/// Waits for work, then takes one request from each waiting source, up to
/// [`MAX_GROUP_REQUESTS`] requests and [`MAX_GROUP_MUTATIONS`] mutations. None once closed
/// and empty.
fn next_group(shared: &Shared) -> Option<Vec<(PreparedBatch, Reply)>> {
    let mut q = lock(shared);
    while q.turn.is_empty() {
        if q.closed {
            return None;
        }
        q = shared.ready.wait(q).unwrap_or_else(|p| p.into_inner());
    }
    let q = &mut *q;
    let mut group = Vec::new();
    let mut mutations = 0;
    // One round: at most one request per source, so a source with many requests waiting
    // (a flood) gets one into each group, and a cashier's sale waits for one group at most.
    let round = q.turn.len();
    while group.len() < round
        && let Some(source) = q.turn.front().cloned()
    {
        let queue = q
            .by_source
            .get_mut(&source)
            .expect("a source in turn has a queue");
        let size = queue.front().map_or(0, |(b, _)| b.batch().mutations.len());
        if !group.is_empty()
            && (group.len() >= MAX_GROUP_REQUESTS || mutations + size > MAX_GROUP_MUTATIONS)
        {
            break;
        }
        let job = queue.pop_front().expect("a source in turn has a request");
        q.turn.pop_front();
        if queue.is_empty() {
            q.by_source.remove(&source);
        } else {
            q.turn.push_back(source);
        }
        q.waiting -= 1;
        mutations += size;
        group.push(job);
    }
    Some(group)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use capsule_protocol::{Action, Mutation, MutationBatch, Schema};
    use capsule_store::Store;
    use serde_json::json;

    use super::*;

    fn shift(id: &str, opening_float: serde_json::Value) -> MutationBatch {
        MutationBatch {
            mutations: vec![Mutation {
                mid: uuid::Uuid::new_v4().to_string(),
                table: "pos_shift".into(),
                action: Action::Insert,
                row: json!({"id": id, "node_id": "n", "cashier": "Ann",
                    "opened_at": "2026-11-25T08:00:00Z", "opening_float": opening_float})
                .as_object()
                .unwrap()
                .clone(),
                base: None,
                by: None,
            }],
            source: Some("till-a".into()),
        }
    }

    #[tokio::test]
    async fn a_fenced_hub_answers_every_write_503_and_a_hub_refuses_a_bad_one_400() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(
            Store::open(dir.path().join("hub.sqlite3"), Arc::new(Schema::builtin())).unwrap(),
        );
        let queue = WriteQueue::start(store.clone(), Arc::new(Notify::new()));
        // A negative float breaks the schema's range: refused before it queues.
        let bad = shift("s1", json!(-1));
        let e = queue.submit(bad.clone()).await.unwrap_err();
        assert_eq!(e.status, StatusCode::BAD_REQUEST, "{}", e.message);
        // Fenced, the node sends every write on to the real hub's queue in the till: 503, even
        // one its own schema would refuse (the real hub's may take it).
        store.set_authority(false);
        for batch in [bad, shift("s2", json!(0))] {
            let e = queue.submit(batch).await.unwrap_err();
            assert_eq!(e.status, StatusCode::SERVICE_UNAVAILABLE, "{}", e.message);
        }
        store.set_authority(true);
        let ok = queue.submit(shift("s3", json!(0))).await.unwrap();
        assert_eq!(ok.results.len(), 1);
        assert_eq!(store.table_rows("pos_shift").unwrap().len(), 1);
    }
}
