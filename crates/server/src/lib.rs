//! Capsule POS server: what every node serves (the server layer, the HTTP API over its store,
//! `/ws`), and as hub the writer, the capsule log and the stream fed from it.
//!
//! Data flow: `POST /api/mutations` -> [`capsule_store::Store::apply`] (commit + capsule log)
//! -> [`publisher`] reads the log in order, coalesces and applies rollout modes -> [`Stream`]
//! fans frames out to every `/ws` subscriber (replaying the log to reconnecting ones) -> tills
//! pull parts with `GET /api/entities`. The building blocks are public so a till can serve the
//! same read API and a local UI stream from its replica.

pub mod access;
pub mod api;
pub mod error;
pub mod guard;
pub mod metrics;
pub mod peers;
pub mod publisher;
pub mod serve;
pub mod sessions;
pub mod staff;
pub mod stream;
pub mod writer;

use std::sync::Arc;

use axum::Router;
use capsule_store::Store;

pub use api::{ApiState, ExtraMetrics, MutationHandler, StatusHandler};
pub use error::ApiError;
pub use metrics::NodeMetrics;
pub use publisher::{Modes, PublisherConfig};
pub use stream::Stream;

/// Runs a short store call (a pull, a read of the capsule log) on this worker with
/// `block_in_place` (its other tasks move elsewhere), not on a blocking thread: on an idle
/// node the two thread wake-ups of `spawn_blocking` cost more than the call. Falls back to
/// `spawn_blocking` on a current-thread runtime, where `block_in_place` is not allowed.
pub(crate) async fn short_blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, tokio::task::JoinError> {
    match tokio::runtime::Handle::current().runtime_flavor() {
        tokio::runtime::RuntimeFlavor::MultiThread => Ok(tokio::task::block_in_place(f)),
        _ => tokio::task::spawn_blocking(f).await,
    }
}

/// A running hub: its store, its stream and the task that feeds the stream from the log.
pub struct Hub {
    pub store: Arc<Store>,
    pub stream: Stream,
    pub modes: Arc<Modes>,
    publisher: publisher::Publisher,
    writer: writer::WriteQueue,
}

impl Hub {
    /// Starts the publisher for `store`; call from inside a Tokio runtime.
    pub fn start(store: Arc<Store>, config: PublisherConfig) -> capsule_store::Result<Hub> {
        let stream = Stream::new(
            store.node_id().to_string(),
            "hub",
            Arc::new(NodeMetrics::default()),
        );
        stream.set_ping_every(config.ping_every);
        let modes = Arc::new(Modes::load(store.clone())?);
        let publisher =
            publisher::Publisher::start(store.clone(), stream.clone(), modes.clone(), config)?;
        let writer = writer::WriteQueue::start(store.clone(), publisher.notifier());
        Ok(Hub {
            store,
            stream,
            modes,
            publisher,
            writer,
        })
    }

    /// Wakes the publisher; whoever commits to this hub's store outside its router calls it.
    pub fn notifier(&self) -> Arc<tokio::sync::Notify> {
        self.publisher.notifier()
    }

    /// What `POST /api/mutations` does on this hub; for routes outside [`Hub::router`] that write.
    pub fn mutations(&self) -> MutationHandler {
        api::hub_mutations(self.writer.clone())
    }

    /// The hub's full API: reads, mutations, snapshot, changes, modes, metrics and `/ws`.
    pub fn router(&self, status: StatusHandler, extra_metrics: Option<ExtraMetrics>) -> Router {
        api::router(ApiState {
            store: self.store.clone(),
            stream: self.stream.clone(),
            mutations: self.mutations(),
            status,
            modes: Some(self.modes.clone()),
            extra_metrics,
        })
    }
}

pub use peers::{Closer, DeviceConnections, PeerDevice, PeerTls};
pub use serve::{Limits, connection_capacity, serve};
