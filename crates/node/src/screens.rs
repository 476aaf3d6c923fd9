//! Pairing a browser (a kitchen TV, a manager's laptop) over HTTP: the browser asks and shows a
//! code, a manager approves that code on the dashboard, and the browser's next poll sets its
//! cookie (`capsule_server::sessions` keeps only the token's hash).

use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use capsule_server::ApiError;
use capsule_server::sessions::{ASK_VALID, Poll, SCREEN_COOKIE, ScreenRole, Screens};
use serde_json::{Value, json};

/// What the manager's answers need: the paired browsers, and the store the staff member's
/// permission is read from.
#[derive(Clone)]
struct ScreensState {
    screens: Screens,
    store: std::sync::Arc<capsule_store::Store>,
}

pub fn router(screens: Screens, store: std::sync::Arc<capsule_store::Store>) -> Router {
    Router::new()
        .route("/api/pair/screen", post(ask))
        .route("/api/pair/screen/{id}", get(poll))
        .route("/api/pair/screens", get(list))
        .route("/api/pair/screens/{id}/approve", post(approve))
        .route("/api/pair/screens/{id}/deny", post(deny))
        .route("/api/pair/screens/{id}/remove", post(remove))
        .with_state(ScreensState { screens, store })
}

#[derive(serde::Deserialize)]
struct Ask {
    name: String,
    role: ScreenRole,
}

/// `POST /api/pair/screen`: a browser asks to pair; it shows the code, a manager approves it.
async fn ask(
    State(ScreensState { screens, .. }): State<ScreensState>,
    from: Option<Extension<ConnectInfo<std::net::SocketAddr>>>,
    Json(body): Json<Ask>,
) -> Result<Json<Value>, ApiError> {
    let name = body.name.trim();
    if name.is_empty() || name.chars().count() > 40 {
        return Err(ApiError::bad_request(
            "a screen's name is 1 to 40 characters",
        ));
    }
    // Served without peer addresses (a test's router): one address for all.
    let from = from.map_or(
        std::net::Ipv4Addr::UNSPECIFIED.into(),
        |Extension(ConnectInfo(a))| a.ip(),
    );
    let (id, code, poll) = screens.ask(name, body.role, from).ok_or_else(|| {
        ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "too many screens are waiting for a manager; try again in a few minutes",
        )
    })?;
    Ok(Json(json!({
        "id": id,
        "code": code,
        "poll": poll,
        "expires_in_s": ASK_VALID.as_secs(),
    })))
}

#[derive(serde::Deserialize)]
struct PollQuery {
    poll: String,
}

/// `GET /api/pair/screen/{id}?poll=SECRET`: 202 while waiting; 200 with the cookie once
/// approved (once); 410 when refused or expired.
async fn poll(
    State(ScreensState { screens, .. }): State<ScreensState>,
    Path(id): Path<String>,
    Query(q): Query<PollQuery>,
) -> Response {
    match screens.poll(&id, &q.poll) {
        Poll::Waiting => (StatusCode::ACCEPTED, Json(json!({"state": "waiting"}))).into_response(),
        Poll::Paired(token) => (
            [(
                header::SET_COOKIE,
                format!(
                    "{SCREEN_COOKIE}={token}; HttpOnly; SameSite=Strict; Path=/; Max-Age=31536000"
                ),
            )],
            Json(json!({"state": "paired"})),
        )
            .into_response(),
        Poll::Gone => ApiError::new(
            StatusCode::GONE,
            "this request was refused or has expired: ask again",
        )
        .into_response(),
    }
}

/// `GET /api/pair/screens`: browsers waiting for an answer, and those paired.
async fn list(State(ScreensState { screens, .. }): State<ScreensState>) -> Json<Value> {
    Json(json!({ "waiting": screens.waiting(), "screens": screens.list() }))
}

async fn approve(
    State(ScreensState { screens, store }): State<ScreensState>,
    stamp: capsule_server::staff::Stamp,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    stamp.require(&store, "settings.edit").await?;
    let now = capsule_protocol::now_rfc3339();
    match screens.approve(&id, &now) {
        Ok(true) => Ok(Json(json!({"approved": id}))),
        Ok(false) => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "no such screen is waiting",
        )),
        Err(e) => Err(ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("cannot keep the paired screen: {e}"),
        )),
    }
}

async fn deny(
    State(ScreensState { screens, store }): State<ScreensState>,
    stamp: capsule_server::staff::Stamp,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    stamp.require(&store, "settings.edit").await?;
    if screens.deny(&id) {
        Ok(Json(json!({"denied": id})))
    } else {
        Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "no such screen is waiting",
        ))
    }
}

async fn remove(
    State(ScreensState { screens, store }): State<ScreensState>,
    stamp: capsule_server::staff::Stamp,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    stamp.require(&store, "settings.edit").await?;
    match screens.remove(&id) {
        Ok(true) => Ok(Json(json!({"removed": id}))),
        Ok(false) => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "no such paired screen",
        )),
        Err(e) => Err(ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("cannot forget the screen: {e}"),
        )),
    }
}
