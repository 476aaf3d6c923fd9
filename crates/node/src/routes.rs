//! Node routes beyond the shared API: the menu, cashier commands and a till's outbox.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::routing::{get, post};
use axum::{Json, Router};
use capsule_protocol::{MutationBatch, Outbox as Outbox_};
use capsule_replica::Outbox;
use capsule_server::{ApiError, MutationHandler};
use capsule_store::Store;
use serde_json::{Value, json};

use crate::demo::MENU;

#[derive(Clone)]
struct CommandState {
    store: Arc<Store>,
    mutations: MutationHandler,
    /// A till's outbox drain, woken when the manager retries a refused write.
    outbox: Option<Arc<Outbox>>,
}

pub fn router(
    store: Arc<Store>,
    mutations: MutationHandler,
    outbox: Option<Arc<Outbox>>,
) -> Router {
    Router::new()
        .route("/api/menu", get(menu))
        .route("/api/orders/{id}/send-to-kitchen", post(send_to_kitchen))
        .route("/api/outbox", get(outbox_list))
        .route("/api/outbox/{mid}/retry", post(outbox_retry))
        .route("/api/outbox/{mid}/discard", post(outbox_discard))
        .with_state(CommandState {
            store,
            mutations,
            outbox,
        })
}

/// `GET /api/outbox`: what this node still owes the hub, and what the hub refused.
async fn outbox_list(State(s): State<CommandState>) -> Result<Json<Outbox_>, ApiError> {
    let store = s.store.clone();
    let all = tokio::task::spawn_blocking(move || store.outbox_list()).await??;
    let (rejected, pending) = all.into_iter().partition(|e| e.state == "rejected");
    Ok(Json(Outbox_ { pending, rejected }))
}

/// Puts a refused write back in line (the manager fixed what the hub objected to).
async fn outbox_retry(
    State(s): State<CommandState>,
    Path(mid): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let store = s.store.clone();
    let n = tokio::task::spawn_blocking(move || store.outbox_retry(&mid)).await??;
    if let Some(o) = &s.outbox {
        o.wake();
    }
    Ok(Json(json!({ "requeued": n })))
}

/// Drops a refused write for good.
async fn outbox_discard(
    State(s): State<CommandState>,
    Path(mid): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let store = s.store.clone();
    let n = tokio::task::spawn_blocking(move || store.outbox_discard(&mid)).await??;
    Ok(Json(json!({ "discarded": n })))
}

async fn menu() -> Json<Value> {
    let items: Vec<Value> = MENU
        .iter()
        .map(|m| {
            json!({"code": m.code, "name_en": m.name_en, "name_ar": m.name_ar, "category": m.category,
                   "station": m.station, "price": m.price})
        })
        .collect();
    Json(json!({ "currency": "SAR", "items": items }))
}

/// Plans from this node's data, then submits through the node's own mutation path (applied
/// on the hub, forwarded from a till).
async fn send_to_kitchen(
    State(s): State<CommandState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let store = s.store.clone();
    let (batch, mutations) =
        tokio::task::spawn_blocking(move || store.plan_send_to_kitchen(&id)).await??;
    let answer = (s.mutations)(MutationBatch {
        mutations,
        source: None,
    })
    .await?;
    Ok(Json(
        json!({ "batch_id": batch, "results": answer.results }),
    ))
}
