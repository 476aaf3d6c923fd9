//! Node routes beyond the shared API: the menu and cashier commands.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::routing::{get, post};
use axum::{Json, Router};
use capsule_hub::{ApiError, MutationHandler};
use capsule_protocol::MutationBatch;
use capsule_store::Store;
use serde_json::{Value, json};

use crate::demo::MENU;

#[derive(Clone)]
struct CommandState {
    store: Arc<Store>,
    mutations: MutationHandler,
}

pub fn router(store: Arc<Store>, mutations: MutationHandler) -> Router {
    Router::new()
        .route("/api/menu", get(menu))
        .route("/api/orders/{id}/send-to-kitchen", post(send_to_kitchen))
        .with_state(CommandState { store, mutations })
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
