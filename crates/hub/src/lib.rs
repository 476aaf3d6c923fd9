//! Capsule POS hub: the HTTP API over a store and the capsule WebSocket stream.
//!
//! Data flow: `POST /api/mutations` -> [`capsule_store::Store::apply`] (commit + capsule log)
//! -> [`publisher`] reads the log in order -> [`Stream`] broadcasts frames to every `/ws`
//! subscriber -> tills pull parts with `GET /api/entities`. The building blocks are public so
//! a till can serve the same read API and a local UI stream from its replica.

pub mod api;
pub mod error;
pub mod publisher;
pub mod stream;

use std::future::Future;
use std::sync::Arc;

use axum::Router;
use capsule_store::Store;
use tokio::net::TcpListener;

pub use api::{ApiState, MutationHandler, StatusHandler};
pub use error::ApiError;
pub use stream::Stream;

/// A running hub: its store, its stream and the task that feeds the stream from the log.
pub struct Hub {
    pub store: Arc<Store>,
    pub stream: Stream,
    publisher: publisher::Publisher,
}

impl Hub {
    /// Starts the publisher for `store`; call from inside a Tokio runtime.
    pub fn start(store: Arc<Store>) -> capsule_store::Result<Hub> {
        let stream = Stream::new(store.node_id().to_string(), "hub");
        let publisher = publisher::Publisher::start(store.clone(), stream.clone())?;
        Ok(Hub {
            store,
            stream,
            publisher,
        })
    }

    /// Wakes the publisher; whoever commits to this hub's store outside its router calls it.
    pub fn notifier(&self) -> Arc<tokio::sync::Notify> {
        self.publisher.notifier()
    }

    /// The hub's full API: reads, mutations, snapshot and `/ws`.
    pub fn router(&self, status: StatusHandler) -> Router {
        api::router(ApiState {
            store: self.store.clone(),
            stream: self.stream.clone(),
            mutations: api::hub_mutations(self.store.clone(), self.publisher.notifier()),
            status,
        })
    }
}

/// Serves `router` on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown)
        .await
}
