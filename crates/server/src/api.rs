//! HTTP routes shared by every node: schema, part pulls, snapshot, status, `/ws`; plus the
//! mutation endpoint, whose handling (apply on the hub, forward on a till) the node supplies.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use axum::extract::rejection::JsonRejection;
use axum::extract::{ConnectInfo, Path, Query, State, WebSocketUpgrade};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use capsule_protocol::{
    BackfillPage, BatchPull, ChangedSince, Changes, EntityParts, ErrorBody, JournalPage, Mode,
    MutationBatch, MutationResponse, NodeStatus, PullAnswer, PullRequest, Snapshot,
};
use capsule_store::{Scope, Store, StoreError};
use serde_json::{Value, json};

use crate::error::ApiError;
use crate::publisher::Modes;
use crate::stream::{Stream, serve_ws};
use crate::writer::WriteQueue;
use capsule_protocol::{FrameEncoding, NodeReport, SetMode, WsParams};

/// Most ids accepted in one batch pull.
pub use capsule_protocol::defaults::MAX_IDS_PER_PULL;
use capsule_protocol::defaults::{MAX_IDS_PER_REQUEST, MAX_PULL_BODY, MAX_PULL_WANTS};

pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;
/// What a node does with `POST /api/mutations`, given the batch and the client that sent it
/// (its IP address: a till queues each client's writes in a line of its own).
pub type MutationHandler = Arc<
    dyn Fn(MutationBatch, String) -> BoxFuture<Result<MutationResponse, ApiError>> + Send + Sync,
>;
/// What a node reports at `GET /api/status`.
pub type StatusHandler = Arc<dyn Fn() -> NodeStatus + Send + Sync>;
/// Node-specific metrics appended to `/metrics` (Prometheus text) and `/api/metrics` (JSON).
pub type ExtraMetrics = Arc<dyn Fn(&mut String, &mut serde_json::Map<String, Value>) + Send + Sync>;

/// Bulk reads (snapshots, the working set, table pages) stream from one read transaction each;
/// at most this many run at once, so a client looping on them cannot take every reader.
static HEAVY_READS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(2);

/// Most capsules one `GET /api/changes` answers with.
pub const MAX_CHANGES: usize = 5000;

#[derive(Clone)]
pub struct ApiState {
    pub store: Arc<Store>,
    pub stream: Stream,
    pub mutations: MutationHandler,
    pub status: StatusHandler,
    /// The hub's stream controls; None on a till (its `/ws` has no log to replay).
    pub modes: Option<Arc<Modes>>,
    pub extra_metrics: Option<ExtraMetrics>,
}

/// Bodies up to this many bytes are not compressed.
const COMPRESS_ABOVE: u16 = 256;

/// The OpenAPI description of the routes every node serves (the node adds its own).
#[derive(utoipa::OpenApi)]
#[openapi(
    paths(
        schema,
        status,
        mutations,
        pull_one,
        pull_many,
        pull_batch,
        table_rows,
        snapshot,
        backfill,
        working_set,
        changed,
        journal,
        changes,
        get_modes,
        set_modes,
        node_report,
        prometheus,
        metrics_json,
        ws,
        healthz
    ),
    components(schemas(
        ErrorBody,
        NodeStatus,
        MutationBatch,
        MutationResponse,
        EntityParts,
        BatchPull,
        PullRequest,
        PullAnswer,
        Snapshot,
        BackfillPage,
        Changes,
        SetMode,
        NodeReport,
        FrameEncoding
    ))
)]
pub struct ApiDoc;

#[utoipa::path(get, path = "/healthz", tag = "node",
    responses((status = 200, content_type = "text/plain", body = String)))]
async fn healthz() -> &'static str {
    "ok"
}

pub fn router(state: ApiState) -> Router {
    let wire = state.stream.metrics().clone();
    // Where the bytes are (pulls, snapshots, change lists, the journal, tables): zstd or gzip
    // for a client that asks for it (the till's client does). `/ws` frames are compressed by
    // the stream itself, once per frame for every subscriber that asked (stream.rs).
    let bulk = Router::new()
        .route("/api/entities", get(pull_many))
        .route("/api/entities/{entity}/{id}", get(pull_one))
        .route(
            "/api/pull",
            post(pull_batch).layer(axum::extract::DefaultBodyLimit::max(MAX_PULL_BODY)),
        )
        .route("/api/tables/{table}", get(table_rows))
        .route("/api/snapshot", get(snapshot))
        .route("/api/backfill", get(backfill))
        .route("/api/working-set", get(working_set))
        .route("/api/changes", get(changes))
        .route("/api/changed", get(changed))
        .route("/api/journal", get(journal))
        .layer(
            // The fastest level: on a LAN the hub's CPU time per byte matters more than the
            // last few percent of size (a day's snapshot compresses 7x even so).
            tower_http::compression::CompressionLayer::new()
                .quality(tower_http::CompressionLevel::Fastest)
                .compress_when(
                    // A tiny body is sent as it is: below a few hundred bytes a compressor's
                    // frame and set-up cost more than the bytes it would save.
                    tower_http::compression::Predicate::and(
                        tower_http::compression::predicate::DefaultPredicate::new(),
                        tower_http::compression::predicate::SizeAbove::new(COMPRESS_ABOVE),
                    ),
                ),
        )
        // Outside the compression: counts the bytes as they go on the wire.
        .layer(axum::middleware::map_response(move |res: Response| {
            let wire = wire.clone();
            async move { count_body_bytes(res, wire) }
        }));
    Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(prometheus))
        .route("/api/metrics", get(metrics_json))
        .route("/api/schema", get(schema))
        .route("/api/status", get(status))
        .route("/api/mutations", post(mutations))
        .merge(bulk)
        .route("/api/admin/modes", get(get_modes).post(set_modes))
        .route(
            "/api/nodes/report",
            post(node_report).layer(axum::extract::DefaultBodyLimit::max(16 * 1024)),
        )
        .route("/ws", get(ws))
        .merge(crate::staff::router())
        .route("/api/{*rest}", axum::routing::any(unknown_api))
        .with_state(state)
}

/// Whether a request may read the secret entities (the staff PIN hashes), as the access check
/// decided: the shop's devices may, a paired browser may not. A router without the check (an
/// unpaired shop's, a test's) serves them.
#[derive(Debug, Clone, Copy)]
pub struct ReadsSecrets(pub bool);

/// Refuses a read of a secret entity (or a table of one) to a caller that may not read it.
/// `None` for both: a read that carries every entity (a snapshot, the journal).
fn guard_secret(
    s: &ApiState,
    reads: Option<axum::Extension<ReadsSecrets>>,
    entity: Option<&str>,
    table: Option<&str>,
) -> Result<(), ApiError> {
    if reads.is_none_or(|axum::Extension(ReadsSecrets(ok))| ok) {
        return Ok(());
    }
    let schema = s.store.schema();
    let secret = match (entity, table) {
        (Some(e), _) => schema.entities.get(e).is_some_and(|e| e.secret),
        (None, Some(t)) => schema
            .entities
            .values()
            .any(|e| e.secret && schema.tables.get(t).is_some_and(|td| {
                td.role == capsule_protocol::TableRole::Entity { entity: e.name.clone() }
                    || matches!(&td.role, capsule_protocol::TableRole::Child { entity, .. } if *entity == e.name)
            })),
        // A read of everything carries secrets once there are any.
        (None, None) => s.store.has_staff().unwrap_or(true),
    };
    if secret {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "the staff PINs are for the shop's devices only: a screen logs staff in through its node",
        ));
    }
    Ok(())
}

fn count_body_bytes(res: Response, metrics: Arc<crate::metrics::NodeMetrics>) -> Response {
    use http_body_util::BodyExt;
    let (parts, body) = res.into_parts();
    let counted = body.map_frame(move |frame| {
        if let Some(data) = frame.data_ref() {
            metrics.rest_bytes_sent.add(data.len() as u64);
        }
        frame
    });
    Response::from_parts(parts, axum::body::Body::new(counted))
}

/// The hub's mutation handling: queue for the one writer (fair per source), which applies
/// authoritatively and wakes the publisher.
pub fn hub_mutations(writer: WriteQueue) -> MutationHandler {
    // The hub's writer takes sources in turn (tills name themselves in the batch).
    Arc::new(move |batch: MutationBatch, _client: String| {
        let writer = writer.clone();
        Box::pin(async move {
            let applied = writer.submit(batch).await?;
            Ok(MutationResponse {
                results: applied.results,
            })
        })
    })
}

#[utoipa::path(get, path = "/api/schema", tag = "sync",
    responses((status = 200, description = "entities, parts, tables and every column's type, range and writability", body = Object)))]
async fn schema(State(s): State<ApiState>) -> Json<serde_json::Value> {
    Json(s.store.schema().to_api_json())
}

#[utoipa::path(get, path = "/api/status", tag = "node",
    responses((status = 200, description = "this node's role, link state and hub", body = NodeStatus)))]
async fn status(State(s): State<ApiState>) -> Json<NodeStatus> {
    Json((s.status)())
}

#[utoipa::path(post, path = "/api/mutations", tag = "sync", request_body = MutationBatch,
    responses(
        (status = 200, description = "all applied (or duplicates of applied ones)", body = MutationResponse),
        (status = 202, description = "a till: committed locally, queued for the hub", body = MutationResponse),
        (status = 400, description = "bad input: nothing written", body = ErrorBody),
        (status = 403, description = "a permission the logged-in member of staff lacks (named), or a table only the shop's nodes write", body = ErrorBody),
        (status = 404, description = "a merge or delete of a row that does not exist", body = ErrorBody),
        (status = 409, description = "conflicts with stored data (an existing id, an immutable row, a closed day)", body = ErrorBody),
        (status = 413, description = "body too large", body = ErrorBody),
        (status = 415, description = "not JSON", body = ErrorBody),
        (status = 424, description = "a child row whose parent does not exist", body = ErrorBody),
        (status = 429, description = "a till: this client has as many writes waiting for the hub as it may", body = ErrorBody),
        (status = 503, description = "this node cannot write now (not the hub, or the hub is out of reach)", body = ErrorBody)))]
async fn mutations(
    State(s): State<ApiState>,
    ConnectInfo(peer): ConnectInfo<std::net::SocketAddr>,
    stamp: crate::staff::Stamp,
    body: Result<Json<MutationBatch>, JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(mut batch) = body.map_err(|e| json_refusal("mutation request", &e))?;
    stamp.refuse_node_tables(&batch)?;
    stamp.apply(&mut batch);
    stamp.price_lines(&s.store, &mut batch).await?;
    let m = s.stream.metrics().clone();
    m.mutation_requests.inc();
    m.mutations.add(batch.mutations.len() as u64);
    let started = std::time::Instant::now();
    let out = (s.mutations)(batch, peer.ip().to_string()).await;
    m.mutation_latency.observe(started.elapsed());
    let out = out?;
    // A till that committed the write but has no word from the hub yet says so: 202.
    let queued = out
        .results
        .iter()
        .any(|r| r.status == capsule_protocol::MutationStatus::Queued);
    let code = if queued {
        StatusCode::ACCEPTED
    } else {
        StatusCode::OK
    };
    Ok((code, Json(out)).into_response())
}

#[utoipa::path(get, path = "/api/entities/{entity}/{id}", tag = "sync",
    params(("entity" = String, Path, description = "entity name from /api/schema"), ("id" = String, Path),
           ("parts" = Option<String>, Query, description = "comma-separated parts; all when left out")),
    responses((status = 200, body = EntityParts), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn pull_one(
    State(s): State<ApiState>,
    reads: Option<axum::Extension<ReadsSecrets>>,
    Path((entity, id)): Path<(String, String)>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    guard_secret(&s, reads, Some(&entity), None)?;
    let store = s.store.clone();
    let started = std::time::Instant::now();
    let out =
        crate::short_blocking(move || store.pull(&entity, &id, q.get("parts").map(String::as_str)))
            .await??;
    s.stream.metrics().pull_served(1, started.elapsed());
    Ok(Json(out).into_response())
}

#[utoipa::path(get, path = "/api/entities", tag = "sync",
    params(("entity" = String, Query), ("ids" = String, Query, description = "comma-separated ids"),
           ("parts" = Option<String>, Query, description = "comma-separated parts"),
           ("have" = Option<String>, Query, description = "one version per id: child parts come as deltas")),
    responses((status = 200, body = BatchPull), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn pull_many(
    State(s): State<ApiState>,
    reads: Option<axum::Extension<ReadsSecrets>>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let entity = q
        .get("entity")
        .cloned()
        .ok_or_else(|| ApiError::bad_request("query parameter 'entity' is required"))?;
    guard_secret(&s, reads, Some(&entity), None)?;
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
    // The versions the puller holds, one per id: child parts then come as deltas.
    let have: Vec<i64> = match q.get("have") {
        None => Vec::new(),
        Some(list) => list
            .split(',')
            .map(|v| v.trim().parse::<i64>().ok().filter(|v| *v >= 0))
            .collect::<Option<Vec<i64>>>()
            .ok_or_else(|| {
                ApiError::bad_request(
                    "'have' must list one version (a whole number, 0 or more) per id",
                )
            })?,
    };
    check_want(&ids, &have).map_err(ApiError::bad_request)?;
    let store = s.store.clone();
    let parts = q.get("parts").cloned();
    let n = ids.len() as u64;
    let started = std::time::Instant::now();
    let out = crate::short_blocking(move || {
        store.pull_many_since(&entity, &ids, parts.as_deref(), &have)
    })
    .await??;
    s.stream.metrics().pull_served(n, started.elapsed());
    Ok(Json(out).into_response())
}

/// What every batch pull must satisfy, by `GET /api/entities` or in a `POST /api/pull`:
/// 1 to [`MAX_IDS_PER_PULL`] ids, and no versions held or one (0 or more) per id.
fn check_want(ids: &[String], have: &[i64]) -> Result<(), String> {
    if ids.is_empty() || ids.len() > MAX_IDS_PER_PULL {
        return Err(format!(
            "'ids' must list 1 to {MAX_IDS_PER_PULL} ids, got {}",
            ids.len()
        ));
    }
    if !have.is_empty() && have.len() != ids.len() {
        return Err(format!(
            "'have' lists {} versions for {} ids; give one per id or none",
            have.len(),
            ids.len()
        ));
    }
    if have.iter().any(|v| *v < 0) {
        return Err("'have' versions are whole numbers, 0 or more".into());
    }
    Ok(())
}

#[utoipa::path(post, path = "/api/pull", tag = "sync", request_body = PullRequest,
    params(("Content-Encoding" = Option<String>, Header, description = "`zstd` for a compressed body (a till sends one)")),
    responses(
        (status = 200, description = "one batch pull per want, in the order asked", body = PullAnswer),
        (status = 400, description = "bad input", body = ErrorBody),
        (status = 404, description = "an unknown entity", body = ErrorBody),
        (status = 413, description = "body too large", body = ErrorBody),
        (status = 415, description = "a content encoding other than zstd", body = ErrorBody)))]
/// `POST /api/pull`: a till's whole burst in one request (a read, though a POST: its ids
/// travel in a compressible body instead of the query string). Every want is checked before
/// any is read, so one bad want (an unknown part) fails the whole request with its 4xx.
async fn pull_batch(
    State(s): State<ApiState>,
    reads: Option<axum::Extension<ReadsSecrets>>,
    headers: axum::http::HeaderMap,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let json = match headers
        .get(axum::http::header::CONTENT_ENCODING)
        .map(|v| v.to_str().unwrap_or("?").trim().to_ascii_lowercase())
        .as_deref()
    {
        None | Some("" | "identity") => body.to_vec(),
        Some("zstd") => {
            // Streamed and cut at the bound: memory follows what the body really holds.
            use std::io::Read;
            let mut out = Vec::new();
            zstd::stream::read::Decoder::new(&body[..])
                .and_then(|d| d.take(MAX_PULL_BODY as u64 + 1).read_to_end(&mut out))
                .map_err(|e| ApiError::bad_request(format!("the body is not zstd: {e}")))?;
            if out.len() > MAX_PULL_BODY {
                return Err(ApiError::bad_request(format!(
                    "the body is over {MAX_PULL_BODY} bytes once decompressed"
                )));
            }
            out
        }
        Some(other) => {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                format!("Content-Encoding '{other}' is not accepted; send zstd or nothing"),
            ));
        }
    };
    let request: PullRequest = serde_json::from_slice(&json)
        .map_err(|e| ApiError::bad_request(format!("the body is not a pull request: {e}")))?;
    if request.pulls.is_empty() || request.pulls.len() > MAX_PULL_WANTS {
        return Err(ApiError::bad_request(format!(
            "'pulls' must name 1 to {MAX_PULL_WANTS} entities, got {}",
            request.pulls.len()
        )));
    }
    let mut total = 0usize;
    for w in &request.pulls {
        guard_secret(&s, reads, Some(&w.entity), None)?;
    }
    for (i, w) in request.pulls.iter().enumerate() {
        check_want(&w.ids, &w.have)
            .map_err(|e| ApiError::bad_request(format!("pulls[{i}]: {e}")))?;
        // Each id once per want (a follower never repeats one; a repeat only costs the hub).
        let mut seen = std::collections::HashSet::with_capacity(w.ids.len());
        if let Some(id) = w.ids.iter().find(|id| !seen.insert(id.as_str())) {
            return Err(ApiError::bad_request(format!(
                "pulls[{i}]: id '{id}' is named twice"
            )));
        }
        total += w.ids.len();
    }
    if total > MAX_IDS_PER_REQUEST {
        return Err(ApiError::bad_request(format!(
            "at most {MAX_IDS_PER_REQUEST} ids per pull request, got {total}"
        )));
    }
    let store = s.store.clone();
    let started = std::time::Instant::now();
    let pulls = crate::short_blocking(move || store.pull_wants(&request.pulls)).await??;
    s.stream
        .metrics()
        .pull_served(total as u64, started.elapsed());
    Ok(Json(PullAnswer { pulls }).into_response())
}

#[utoipa::path(get, path = "/api/tables/{table}", tag = "sync",
    params(("table" = String, Path, description = "a synced table from /api/schema"),
           ("after" = Option<String>, Query, description = "the page starts after this id (a previous answer's `next`)"),
           ("limit" = Option<u32>, Query, description = "rows per page, 1..=5000 (default 1000)")),
    responses((status = 200, description = "`{rows, next?}`: `next` is there when more rows follow", body = Object),
              (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn table_rows(
    State(s): State<ApiState>,
    reads: Option<axum::Extension<ReadsSecrets>>,
    Path(table): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    guard_secret(&s, reads, None, Some(&table))?;
    let limit = limit_param(&q, DEFAULT_TABLE_PAGE, MAX_TABLE_PAGE)?;
    let after = after_param(&q, "a row id")?;
    if s.store.schema().table(&table).is_none() {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("unknown table '{table}'"),
        ));
    }
    stream_json(s, move |store, out| {
        store
            .write_table(&table, after.as_deref(), limit, out)
            .map(|_| 0)
    })
    .await
}

/// A page's `limit` query parameter: `default` when absent, else 1 to `max`, or a 400.
pub fn limit_param(
    q: &HashMap<String, String>,
    default: usize,
    max: usize,
) -> Result<usize, ApiError> {
    match q.get("limit") {
        None => Ok(default),
        Some(l) => l
            .parse::<usize>()
            .ok()
            .filter(|l| (1..=max).contains(l))
            .ok_or_else(|| ApiError::bad_request(format!("'limit' must be 1 to {max}, got '{l}'"))),
    }
}

/// A page's `after` query parameter (a previous page's `next`): absent, or an id (`what`
/// names which kind in the 400).
fn after_param(q: &HashMap<String, String>, what: &str) -> Result<Option<String>, ApiError> {
    match q.get("after") {
        Some(a) if !capsule_protocol::validate::is_valid_id(a) => Err(ApiError::bad_request(
            format!("'after' is {what} (a previous page's 'next')"),
        )),
        a => Ok(a.cloned()),
    }
}

/// Rows one `GET /api/tables/{table}` page holds unless asked otherwise, and at most.
pub const DEFAULT_TABLE_PAGE: usize = 1000;
pub const MAX_TABLE_PAGE: usize = 5000;

/// `GET /api/snapshot[?light=1|?scope=day]`: encoded here, off the async threads, so its size
/// and build time can be measured.
#[utoipa::path(get, path = "/api/snapshot", tag = "sync",
    params(
        ("light" = Option<String>, Query, description = "1: only open business"),
        ("scope" = Option<String>, Query, description = "full (default), light, or day: open business and the whole current day (a node that will hold every row opens with it, then copies the history from /api/backfill)")
    ),
    responses((status = 200, body = Snapshot), (status = 400, body = ErrorBody)))]
async fn snapshot(
    State(s): State<ApiState>,
    reads: Option<axum::Extension<ReadsSecrets>>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    guard_secret(&s, reads, None, None)?;
    let light = match q.get("light").map(String::as_str) {
        None | Some("0" | "false") => false,
        Some("1" | "true") => true,
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "'light' must be 1, true, 0 or false, got '{other}'"
            )));
        }
    };
    let scope = match (q.get("scope").map(String::as_str), light) {
        (None, false) | (Some("full"), false) => Scope::Full,
        (None | Some("light"), true) | (Some("light"), false) => Scope::Light,
        (Some("day"), false) => Scope::Day,
        (Some(other), _) => {
            return Err(ApiError::bad_request(format!(
                "'scope' must be full, light or day (and not given with light=1), got '{other}'"
            )));
        }
    };
    streamed_snapshot(s, scope).await
}

/// Entities one `GET /api/backfill` page holds unless asked otherwise.
pub const DEFAULT_BACKFILL_PAGE: usize = 200;

/// `GET /api/backfill?entity=&after=&limit=`: the next page of an entity's rows in id order,
/// every part, for a node copying the shop's history after a day snapshot. Each page is one
/// short read through the primary key: the same cost at a million orders as at ten.
#[utoipa::path(get, path = "/api/backfill", tag = "sync",
    params(
        ("entity" = String, Query, description = "an entity of the schema"),
        ("after" = Option<String>, Query, description = "the previous page's 'next'"),
        ("limit" = Option<usize>, Query, description = "entities per page, 1 to 500 (200)")
    ),
    responses((status = 200, body = BackfillPage), (status = 400, body = ErrorBody)))]
async fn backfill(
    State(s): State<ApiState>,
    reads: Option<axum::Extension<ReadsSecrets>>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    if let Some(e) = q.get("entity") {
        guard_secret(&s, reads, Some(e), None)?;
    }
    let entity = q
        .get("entity")
        .cloned()
        .ok_or_else(|| ApiError::bad_request("query parameter 'entity' is required"))?;
    if s.store.schema().entity(&entity).is_none() {
        return Err(ApiError::bad_request(format!("unknown entity '{entity}'")));
    }
    let limit = limit_param(&q, DEFAULT_BACKFILL_PAGE, capsule_store::MAX_BACKFILL_PAGE)?;
    let after = after_param(&q, "an entity id")?;
    let store = s.store.clone();
    let page = crate::short_blocking(move || store.backfill_page(&entity, after.as_deref(), limit))
        .await??;
    Ok(Json(page).into_response())
}

/// `GET /api/working-set`: what the screens show (open business, the current day's newest
/// finished orders with their kitchen work and shifts, the newest Z report, the menu,
/// settings and printers), as a snapshot document: bounded by the shop's day, never by its
/// history.
#[utoipa::path(get, path = "/api/working-set", tag = "sync",
    responses((status = 200, body = Snapshot)))]
async fn working_set(State(s): State<ApiState>) -> Result<Response, ApiError> {
    streamed_snapshot(s, Scope::Screens).await
}

async fn streamed_snapshot(s: ApiState, scope: Scope) -> Result<Response, ApiError> {
    let metrics = s.stream.metrics().clone();
    stream_json(s, move |store, out| {
        let started = std::time::Instant::now();
        let bytes = store.write_snapshot(scope, out)?;
        metrics.snapshots.inc();
        metrics.snapshot_build.observe(started.elapsed());
        metrics
            .snapshot_last_bytes
            .store(bytes as i64, std::sync::atomic::Ordering::Relaxed);
        Ok(bytes)
    })
    .await
}

/// Answers with the JSON `write` produces, streamed as it is read (a day of 50,000 orders or
/// a whole table is never built in memory), in chunks through a small channel: a client that
/// reads slowly holds the reader back instead of the node buffering for it. At most two such
/// reads run at once.
async fn stream_json(
    s: ApiState,
    write: impl FnOnce(&Store, &mut dyn std::io::Write) -> Result<u64, StoreError> + Send + 'static,
) -> Result<Response, ApiError> {
    let permit = HEAVY_READS
        .acquire()
        .await
        .map_err(|e| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, e.to_string()))?;
    let (tx, rx) = tokio::sync::mpsc::channel::<std::io::Result<axum::body::Bytes>>(8);
    let store = s.store.clone();
    tokio::task::spawn_blocking(move || {
        let _permit = permit;
        let mut out = ChunkWriter {
            buf: Vec::with_capacity(CHUNK),
            tx: tx.clone(),
        };
        if let Err(e) = write(&store, &mut out).and_then(|_| {
            std::io::Write::flush(&mut out)
                .map_err(|e| StoreError::Storage(format!("writing the answer: {e}")))
        }) {
            // Headers are gone already: cut the body short so the client sees it fail.
            tracing::warn!(error = %e, "streamed answer cut short");
            let _ = tx.blocking_send(Err(std::io::Error::other(e.to_string())));
        }
    });
    // (poll_fn, not unfold: the compression layer may poll again after the end.)
    let mut rx = rx;
    let stream = futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx));
    Ok((
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        axum::body::Body::from_stream(stream),
    )
        .into_response())
}

/// Bytes per chunk of a streamed snapshot.
const CHUNK: usize = 64 * 1024;

/// Hands what is written to the response body in chunks; fails once the client is gone.
struct ChunkWriter {
    buf: Vec<u8>,
    tx: tokio::sync::mpsc::Sender<std::io::Result<axum::body::Bytes>>,
}

impl ChunkWriter {
    fn send(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk =
            axum::body::Bytes::from(std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK)));
        self.tx
            .blocking_send(Ok(chunk))
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::BrokenPipe, "client went away"))
    }
}

impl std::io::Write for ChunkWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= CHUNK {
            self.send()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.send()
    }
}

/// `GET /api/changes?since=SEQ[&limit=N]`: capsules logged after `since`, for a subscriber
/// repairing a gap. 410 when the log no longer reaches back that far (take a snapshot).
/// Most entities one `GET /api/changed`, or entries one `GET /api/journal`, answers with.
pub const MAX_CHANGED: usize = 5000;

fn int_param(q: &HashMap<String, String>, name: &str) -> Result<i64, ApiError> {
    q.get(name)
        .ok_or_else(|| ApiError::bad_request(format!("query parameter '{name}' is required")))?
        .parse::<i64>()
        .ok()
        .filter(|v| *v >= 0)
        .ok_or_else(|| {
            ApiError::bad_request(format!("'{name}' must be a non-negative integer version"))
        })
}

/// Entities changed after a version: how a till current under an earlier hub catches up.
#[utoipa::path(get, path = "/api/changed", tag = "sync",
    params(("since_v" = i64, Query, minimum = 0)),
    responses((status = 200, body = ChangedSince), (status = 400, body = ErrorBody), (status = 410, body = ErrorBody)))]
async fn changed(
    State(s): State<ApiState>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Json<capsule_protocol::ChangedSince>, ApiError> {
    let since = int_param(&q, "since_v")?;
    let store = s.store.clone();
    Ok(Json(
        tokio::task::spawn_blocking(move || store.changed_since(since, MAX_CHANGED)).await??,
    ))
}

/// The writes this node's data holds after a version, for replicas that may become hub.
#[utoipa::path(get, path = "/api/journal", tag = "sync",
    params(("after" = i64, Query, minimum = 0), ("upto" = Option<i64>, Query, minimum = 0)),
    responses((status = 200, body = JournalPage), (status = 400, body = ErrorBody)))]
async fn journal(
    State(s): State<ApiState>,
    reads: Option<axum::Extension<ReadsSecrets>>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Json<capsule_protocol::JournalPage>, ApiError> {
    guard_secret(&s, reads, None, None)?;
    let after = int_param(&q, "after")?;
    let upto = match q.get("upto") {
        Some(_) => int_param(&q, "upto")?,
        None => i64::MAX,
    };
    let store = s.store.clone();
    Ok(Json(
        tokio::task::spawn_blocking(move || store.journal_since(after, upto, MAX_CHANGED))
            .await??,
    ))
}

#[utoipa::path(get, path = "/api/changes", tag = "sync",
    params(("since" = i64, Query, minimum = 0), ("limit" = Option<i64>, Query, minimum = 1, maximum = 10000)),
    responses((status = 200, body = Changes), (status = 400, body = ErrorBody), (status = 410, body = ErrorBody)))]
async fn changes(
    State(s): State<ApiState>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Json<Changes>, ApiError> {
    if s.modes.is_none() {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "only the hub keeps a change log",
        ));
    }
    let since: i64 = q
        .get("since")
        .ok_or_else(|| ApiError::bad_request("query parameter 'since' is required"))?
        .parse()
        .map_err(|_| ApiError::bad_request("'since' must be an integer stream position"))?;
    let limit: usize = match q.get("limit") {
        Some(l) => l
            .parse()
            .map_err(|_| ApiError::bad_request("'limit' must be a positive integer"))?,
        None => MAX_CHANGES,
    };
    let limit = limit.clamp(1, MAX_CHANGES);
    s.stream.metrics().changes_requests.inc();
    let store = s.store.clone();
    let last = s.stream.last_seq();
    let (oldest, logged, entries) = tokio::task::spawn_blocking(move || {
        Ok::<_, capsule_store::StoreError>((
            store.oldest_logged()?,
            store.meta_i64(capsule_store::meta::STREAM_SEQ)?,
            store.capsules_since(since, limit + 1)?,
        ))
    })
    .await??;
    if since > logged || since < 0 {
        // Like `/ws?since=` (`too_old`): a position this hub never reached comes from another
        // history (a hub restored from a backup, another hub); start over from a snapshot.
        return Err(ApiError::new(
            StatusCode::GONE,
            format!(
                "position {since} is not in this hub's stream (it is at {logged}); take a snapshot"
            ),
        ));
    }
    if since < last && (oldest == 0 || since + 1 < oldest) {
        return Err(ApiError::new(
            StatusCode::GONE,
            format!(
                "the change log starts at {oldest}; position {since} is too old, take a snapshot"
            ),
        ));
    }
    if since < last && entries.first().map(|e| e.seq) != Some(since + 1) {
        // Pruned between the two reads above.
        return Err(ApiError::new(
            StatusCode::GONE,
            format!("position {since} left the change log while reading; take a snapshot"),
        ));
    }
    let more = entries.len() > limit;
    let entries: Vec<_> = entries.into_iter().take(limit).collect();
    let seq = entries.last().map_or(since, |e| e.seq);
    Ok(Json(Changes {
        since,
        seq,
        items: entries.into_iter().map(|e| e.capsule).collect(),
        more,
    }))
}

#[utoipa::path(get, path = "/api/admin/modes", tag = "node",
    responses((status = 200, description = "rollout mode per entity", body = Object), (status = 404, body = ErrorBody)))]
async fn get_modes(State(s): State<ApiState>) -> Result<Json<Value>, ApiError> {
    let modes = s
        .modes
        .as_ref()
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, "rollout modes live on the hub"))?;
    Ok(Json(json!({ "modes": modes.all() })))
}

#[utoipa::path(post, path = "/api/admin/modes", tag = "node", request_body = SetMode,
    responses((status = 200, body = Object), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn set_modes(
    State(s): State<ApiState>,
    stamp: crate::staff::Stamp,
    body: Result<Json<SetMode>, JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    stamp.require(&s.store, "settings.edit").await?;
    let modes = s
        .modes
        .clone()
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, "rollout modes live on the hub"))?;
    let Json(req) = body.map_err(|e| json_refusal("mode change {\"entity\", \"mode\"}", &e))?;
    let mode: Mode = req.mode.parse().map_err(ApiError::bad_request)?;
    if mode.sends_rows()
        && s.store
            .schema()
            .entities
            .get(&req.entity)
            .is_some_and(|e| e.secret)
    {
        // Rows on `/ws` reach every subscriber, browsers too: never the PIN hashes.
        return Err(ApiError::bad_request(format!(
            "'{}' holds secrets: it is streamed as capsules only",
            req.entity
        )));
    }
    let m = modes.clone();
    tokio::task::spawn_blocking(move || m.set(&req.entity, mode)).await??;
    Ok(Json(json!({ "modes": modes.all() })))
}

/// `POST /api/nodes/report`: a till's periodic report of how its sync is doing, so the hub
/// dashboard can show every node's state, lag and merge latency.
#[utoipa::path(post, path = "/api/nodes/report", tag = "node", request_body = NodeReport,
    responses((status = 200, body = Object), (status = 400, body = ErrorBody), (status = 413, body = ErrorBody)))]
async fn node_report(
    State(s): State<ApiState>,
    ConnectInfo(peer): ConnectInfo<std::net::SocketAddr>,
    body: Result<Json<NodeReport>, JsonRejection>,
) -> Result<StatusCode, ApiError> {
    if s.modes.is_none() {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "only the hub collects node reports",
        ));
    }
    let Json(r) = body.map_err(|e| json_refusal("node report", &e))?;
    if !capsule_protocol::validate::is_valid_node_id(&r.node_id) || r.role.len() > 32 {
        return Err(ApiError::bad_request(
            "node_id must be a node id and role a short name",
        ));
    }
    // Only a node that follows this hub's stream, from the same address, may report: a
    // made-up id cannot push real tills off the dashboard.
    let live = s
        .stream
        .subscribers()
        .iter()
        .any(|sub| sub.node_id == r.node_id && sub.peer_ip() == Some(peer.ip()));
    if !live {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            format!(
                "node {} has no live /ws stream to this hub from {}; connect first",
                r.node_id,
                peer.ip()
            ),
        ));
    }
    let report = json!({"role": r.role, "state": r.state, "replica": r.replica});
    s.stream.record_report(r.node_id, report);
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(get, path = "/metrics", tag = "node",
    responses((status = 200, description = "Prometheus text", content_type = "text/plain", body = String)))]
async fn prometheus(State(s): State<ApiState>) -> Response {
    let mut out = String::new();
    s.stream.metrics().render(&mut out);
    let subs = s.stream.subscribers();
    capsule_protocol::metrics::render_value(
        &mut out,
        "capsule_subscribers",
        "gauge",
        "connected /ws subscribers",
        "",
        subs.len() as f64,
    );
    let last = s.stream.last_seq();
    for sub in &subs {
        let labels = format!(
            "{{node=\"{}\",role=\"{}\"}}",
            sub.node_id.replace('"', ""),
            sub.role.replace('"', "")
        );
        capsule_protocol::metrics::render_value(
            &mut out,
            "capsule_subscriber_lag",
            "gauge",
            "stream positions a subscriber is behind",
            &labels,
            (last - sub.seq) as f64,
        );
    }
    capsule_protocol::metrics::render_value(
        &mut out,
        "capsule_stream_seq",
        "gauge",
        "last stream position published",
        "",
        last as f64,
    );
    if let Some(extra) = &s.extra_metrics {
        extra(&mut out, &mut serde_json::Map::new());
    }
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        out,
    )
        .into_response()
}

#[utoipa::path(get, path = "/api/metrics", tag = "node", responses((status = 200, body = Object)))]
async fn metrics_json(State(s): State<ApiState>) -> Json<Value> {
    let last = s.stream.last_seq();
    let subs: Vec<Value> = s
        .stream
        .subscribers()
        .into_iter()
        .map(|sub| {
            let lag = last - sub.seq;
            let mut v = serde_json::to_value(sub).expect("serialises");
            v["lag"] = json!(lag);
            v
        })
        .collect();
    let mut out = serde_json::to_value(s.stream.metrics().to_json()).expect("serialises");
    let obj = out.as_object_mut().expect("an object");
    obj.insert("ts".into(), json!(capsule_protocol::now_ms()));
    obj.insert("seq".into(), json!(last));
    obj.insert("subscribers".into(), json!(subs));
    // Every node that reported, with its lag when it is connected now.
    let mut nodes: Vec<Value> = s
        .stream
        .reports()
        .into_iter()
        .map(|(node_id, (at, report))| {
            let sub = subs.iter().find(|sub| sub["node_id"] == node_id.as_str());
            json!({
                "node_id": node_id,
                "reported_at": at,
                "connected": sub.is_some(),
                "lag": sub.map(|sub| sub["lag"].clone()).unwrap_or(Value::Null),
                "report": report,
            })
        })
        .collect();
    nodes.sort_by(|a, b| a["node_id"].as_str().cmp(&b["node_id"].as_str()));
    obj.insert("nodes".into(), json!(nodes));
    if let Some(modes) = &s.modes {
        obj.insert("modes".into(), json!(modes.all()));
    }
    if let Some(extra) = &s.extra_metrics {
        extra(&mut String::new(), obj);
    }
    Json(out)
}

#[utoipa::path(get, path = "/ws", tag = "sync",
    params(("since" = Option<i64>, Query), ("hub" = Option<String>, Query), ("term" = Option<i64>, Query),
           ("node" = Option<String>, Query), ("role" = Option<String>, Query),
           ("encoding" = Option<FrameEncoding>, Query, description = "`zstd`: frames of 512 bytes or more as binary zstd messages")),
    responses((status = 101, description = "WebSocket: `hello`, then capsule frames"),
              (status = 400, description = "not a WebSocket upgrade, or bad parameters", body = ErrorBody),
              (status = 503, description = "too many subscribers", body = ErrorBody)))]
async fn ws(
    State(s): State<ApiState>,
    params: Result<Query<WsParams>, axum::extract::rejection::QueryRejection>,
    ConnectInfo(peer): ConnectInfo<std::net::SocketAddr>,
    upgrade: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
    slot: Option<axum::Extension<crate::serve::ConnectionSlot>>,
    closer: Option<axum::Extension<crate::peers::Closer>>,
) -> Result<Response, ApiError> {
    let Query(params) = params.map_err(|e| {
        ApiError::bad_request(format!(
            "bad /ws query (since=SEQ&node=ID&role=ROLE&encoding=zstd): {}",
            e.body_text()
        ))
    })?;
    if params
        .node
        .as_deref()
        .is_some_and(|n| !capsule_protocol::validate::is_valid_node_id(n))
        || params.role.as_deref().is_some_and(|r| r.len() > 32)
    {
        return Err(ApiError::bad_request(
            "node must be a node id and role a short name",
        ));
    }
    let upgrade = upgrade.map_err(|e| ApiError::new(e.status(), e.body_text()))?;
    let store = s.modes.as_ref().map(|_| s.store.clone());
    let peer = peer.to_string();
    // A subscriber only listens: what it sends is bounded small, so a half-sent giant message
    // cannot make the node buffer it. Buffers are kept small per connection.
    Ok(upgrade
        .max_message_size(crate::stream::WS_MAX_MESSAGE)
        .max_frame_size(crate::stream::WS_MAX_FRAME)
        .read_buffer_size(8 * 1024)
        .write_buffer_size(16 * 1024)
        .max_write_buffer_size(crate::stream::WS_MAX_WRITE_BUFFER)
        .on_upgrade(move |socket| async move {
            // The subscriber counts against the connection limits while it is connected.
            let _slot = slot;
            let served = serve_ws(socket, s.stream, store, params, peer);
            match closer {
                // Ends the moment its device leaves the roster (or the node is paired under
                // a subscriber that showed no device).
                Some(axum::Extension(mut c)) => tokio::select! {
                    () = served => {}
                    () = c.closed() => {}
                },
                None => served.await,
            }
        }))
}

/// A JSON body that could not be read, with the framework's status (400 bad JSON or wrong
/// shape, 413 too large, 415 not JSON) and what was expected.
fn json_refusal(what: &str, e: &JsonRejection) -> ApiError {
    if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
        return ApiError::new(
            e.status(),
            format!("the {what} is larger than this endpoint accepts"),
        );
    }
    // A body of the wrong shape is a plain bad request here, like any other invalid input.
    let status = match e.status() {
        StatusCode::UNPROCESSABLE_ENTITY => StatusCode::BAD_REQUEST,
        other => other,
    };
    ApiError::new(status, format!("malformed {what}: {}", e.body_text()))
}

async fn unknown_api(uri: axum::http::Uri) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        format!("no such endpoint: {}", uri.path()),
    )
}
