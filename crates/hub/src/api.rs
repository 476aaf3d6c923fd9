//! HTTP routes shared by every node: schema, part pulls, snapshot, status, `/ws`; plus the
//! mutation endpoint, whose handling (apply on the hub, forward on a till) the node supplies.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, Query, State, WebSocketUpgrade};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use capsule_protocol::{MutationBatch, MutationResponse, NodeStatus};
use capsule_store::{ApplyMode, Store};
use tokio::sync::Notify;

use crate::error::ApiError;
use crate::stream::{Stream, serve_ws};

/// Most ids accepted in one batch pull.
pub const MAX_IDS_PER_PULL: usize = 500;

pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;
/// What a node does with `POST /api/mutations`.
pub type MutationHandler =
    Arc<dyn Fn(MutationBatch) -> BoxFuture<Result<MutationResponse, ApiError>> + Send + Sync>;
/// What a node reports at `GET /api/status`.
pub type StatusHandler = Arc<dyn Fn() -> NodeStatus + Send + Sync>;

#[derive(Clone)]
pub struct ApiState {
    pub store: Arc<Store>,
    pub stream: Stream,
    pub mutations: MutationHandler,
    pub status: StatusHandler,
}

pub fn router(state: ApiState) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/api/schema", get(schema))
        .route("/api/status", get(status))
        .route("/api/mutations", post(mutations))
        .route("/api/entities", get(pull_many))
        .route("/api/entities/{entity}/{id}", get(pull_one))
        .route("/api/tables/{table}", get(table_rows))
        .route("/api/snapshot", get(snapshot))
        .route("/ws", get(ws))
        .route("/api/{*rest}", axum::routing::any(unknown_api))
        .with_state(state)
}

/// The hub's mutation handling: apply authoritatively, then wake the publisher.
pub fn hub_mutations(store: Arc<Store>, notify: Arc<Notify>) -> MutationHandler {
    Arc::new(move |batch: MutationBatch| {
        let store = store.clone();
        let notify = notify.clone();
        Box::pin(async move {
            let applied = tokio::task::spawn_blocking(move || {
                let source = batch
                    .source
                    .clone()
                    .unwrap_or_else(|| store.node_id().to_string());
                store.apply(&batch, &ApplyMode::Authoritative { source })
            })
            .await??;
            if !applied.capsules.is_empty() {
                notify.notify_one();
            }
            Ok(MutationResponse {
                results: applied.results,
            })
        })
    })
}

async fn schema(State(s): State<ApiState>) -> Json<serde_json::Value> {
    Json(s.store.schema().to_api_json())
}

async fn status(State(s): State<ApiState>) -> Json<NodeStatus> {
    Json((s.status)())
}

async fn mutations(
    State(s): State<ApiState>,
    body: Result<Json<MutationBatch>, JsonRejection>,
) -> Result<Json<MutationResponse>, ApiError> {
    let Json(batch) = body.map_err(|e| {
        ApiError::bad_request(format!("malformed mutation request: {}", e.body_text()))
    })?;
    Ok(Json((s.mutations)(batch).await?))
}

async fn pull_one(
    State(s): State<ApiState>,
    Path((entity, id)): Path<(String, String)>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let store = s.store.clone();
    let out = tokio::task::spawn_blocking(move || {
        store.pull(&entity, &id, q.get("parts").map(String::as_str))
    })
    .await??;
    Ok(Json(out).into_response())
}

async fn pull_many(
    State(s): State<ApiState>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let entity = q
        .get("entity")
        .cloned()
        .ok_or_else(|| ApiError::bad_request("query parameter 'entity' is required"))?;
    let ids: Vec<String> = q
        .get("ids")
        .map(|s| {
            s.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default();
    if ids.is_empty() {
        return Err(ApiError::bad_request(
            "query parameter 'ids' must list at least one id",
        ));
    }
    if ids.len() > MAX_IDS_PER_PULL {
        return Err(ApiError::bad_request(format!(
            "at most {MAX_IDS_PER_PULL} ids per pull, got {}",
            ids.len()
        )));
    }
    let store = s.store.clone();
    let parts = q.get("parts").cloned();
    let out = tokio::task::spawn_blocking(move || store.pull_many(&entity, &ids, parts.as_deref()))
        .await??;
    Ok(Json(out).into_response())
}

async fn table_rows(
    State(s): State<ApiState>,
    Path(table): Path<String>,
) -> Result<Response, ApiError> {
    let store = s.store.clone();
    let rows = tokio::task::spawn_blocking(move || store.table_rows(&table)).await??;
    Ok(Json(serde_json::json!({ "rows": rows })).into_response())
}

async fn snapshot(State(s): State<ApiState>) -> Result<Response, ApiError> {
    let store = s.store.clone();
    let snap = tokio::task::spawn_blocking(move || store.snapshot()).await??;
    Ok(Json(snap).into_response())
}

async fn ws(State(s): State<ApiState>, upgrade: WebSocketUpgrade) -> Response {
    upgrade.on_upgrade(move |socket| serve_ws(socket, s.stream))
}

async fn unknown_api(uri: axum::http::Uri) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        format!("no such endpoint: {}", uri.path()),
    )
}
