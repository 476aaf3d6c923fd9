//! A till newer than its hub (mid-upgrade): a hub without `POST /api/pull`, day snapshots and
//! `GET /api/backfill` is still followed (entity by entity, from a whole snapshot), and the
//! till converges holding the whole history.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::http::{Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use capsule_protocol::{NodeStatus, Schema};
use capsule_replica::{FollowConfig, HubTarget, Link, LinkState, OnChange, ReplicaMetrics};
use capsule_server::{PublisherConfig, StatusHandler};
use capsule_store::{Durability, Store};
use serde_json::json;

const T: &str = "2026-11-25T12:00:00Z";

#[derive(Default)]
struct Seen {
    batch_refused: AtomicU64,
    entity_gets: AtomicU64,
    scoped_snapshots: AtomicU64,
}

/// What a hub from before `POST /api/pull` and the history copy answers: 404 for them, as
/// for any unknown path, and every row for a snapshot of any `scope` (it knew only `light`).
async fn as_an_older_hub(State(seen): State<Arc<Seen>>, mut req: Request, next: Next) -> Response {
    if req.uri().path() == "/api/snapshot"
        && req.uri().query().is_some_and(|q| q.contains("scope="))
    {
        seen.scoped_snapshots.fetch_add(1, Ordering::Relaxed);
        *req.uri_mut() = "/api/snapshot".parse().unwrap();
    }
    if (req.method() == Method::POST && req.uri().path() == "/api/pull")
        || req.uri().path() == "/api/backfill"
    {
        seen.batch_refused.fetch_add(1, Ordering::Relaxed);
        return (
            StatusCode::NOT_FOUND,
            axum::Json(json!({"error": "no such endpoint"})),
        )
            .into_response();
    }
    if req.uri().path() == "/api/entities" {
        seen.entity_gets.fetch_add(1, Ordering::Relaxed);
    }
    next.run(req).await
}

fn mutation(table: &str, row: serde_json::Value) -> serde_json::Value {
    json!({"mid": uuid::Uuid::now_v7().to_string(), "table": table, "action": "insert", "row": row})
}

/// Posts mutations to the hub at `url`, asserting they were applied.
async fn write_at(url: &str, batch: &serde_json::Value) {
    let answer = reqwest::Client::new()
        .post(format!("{url}/api/mutations"))
        .json(batch)
        .send()
        .await
        .unwrap();
    let status = answer.status().as_u16();
    assert_eq!(status, 200, "{}", answer.text().await.unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_till_follows_a_hub_that_has_no_batch_pull() {
    let dir = tempfile::tempdir().unwrap();
    let schema = Arc::new(Schema::builtin());
    let hub_store = Arc::new(Store::open(dir.path().join("hub.sqlite3"), schema.clone()).unwrap());
    let hub = capsule_server::Hub::start(hub_store.clone(), PublisherConfig::default()).unwrap();
    let node_id = hub_store.node_id().to_string();
    let status: StatusHandler = Arc::new(move || NodeStatus {
        node_id: node_id.clone(),
        role: "hub".into(),
        state: "online".into(),
        hub_url: None,
        hub_node_id: None,
        seq: 0,
        pending: 0,
        rejected: 0,
        offline_since: None,
        backup: None,
        term: 0,
        priority: 0,
        mesh: None,
        peers: vec![],
        hub_change: None,
        history_copying: None,
        device_id: None,
        paired: false,
        link_error: None,
        name: None,
    });
    let seen = Arc::new(Seen::default());
    let router = hub
        .router(status, None)
        .layer(axum::middleware::from_fn_with_state(
            seen.clone(),
            as_an_older_hub,
        ));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        axum::serve(
            listener,
            router.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await
    });

    let till = Arc::new(
        Store::open_with(dir.path().join("till.sqlite3"), schema, Durability::Replica).unwrap(),
    );
    let link = Link::default();
    let on_change: OnChange = Arc::new(|_| {});
    let following = tokio::spawn(capsule_replica::follow(
        till.clone(),
        FollowConfig::new(url.as_str(), till.node_id()),
        HubTarget::fixed(&url),
        link.clone(),
        on_change,
        Arc::new(ReplicaMetrics::default()),
    ));
    let wait = |what: &'static str, cond: Box<dyn Fn() -> bool + Send>| async move {
        let t = Instant::now();
        while !cond() {
            assert!(t.elapsed() < Duration::from_secs(20), "timed out: {what}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    let l = link.clone();
    wait(
        "the till online",
        Box::new(move || l.get().state == LinkState::Online),
    )
    .await;

    // A shift, an order and two lines, written at the hub.
    let (shift, order) = (
        uuid::Uuid::now_v7().to_string(),
        uuid::Uuid::now_v7().to_string(),
    );
    let batch = json!({"mutations": [
        mutation("pos_shift", json!({"id": shift, "node_id": "hub", "cashier": "Sam", "opened_at": T, "opening_float": 0})),
        mutation("order_header", json!({"id": order, "shift_id": shift, "opened_at": T, "table_label": "T1", "tax_rate_bp": 1500})),
        mutation("order_line", json!({"id": uuid::Uuid::now_v7().to_string(), "order_id": order, "name_en": "Tea", "qty": 2, "unit_price": 300, "station": "bar", "created_at": T})),
        mutation("order_line", json!({"id": uuid::Uuid::now_v7().to_string(), "order_id": order, "name_en": "Cake", "qty": 1, "unit_price": 450, "station": "bar", "created_at": T})),
    ]});
    write_at(&url, &batch).await;

    let (h, t) = (hub_store.clone(), till.clone());
    wait(
        "the till to hold what the hub holds",
        Box::new(move || h.digest().unwrap() == t.digest().unwrap()),
    )
    .await;
    let gets = seen.entity_gets.load(Ordering::Relaxed);
    assert!(gets > 0);

    // A later burst goes straight to the old way: the till remembers what this hub lacks.
    let line = json!({"mutations": [mutation("order_line", json!({"id": uuid::Uuid::now_v7().to_string(),
        "order_id": order, "name_en": "Juice", "qty": 1, "unit_price": 500, "station": "bar", "created_at": T}))]});
    write_at(&url, &line).await;
    let (h, t) = (hub_store.clone(), till.clone());
    wait(
        "the till to hold the new line",
        Box::new(move || h.digest().unwrap() == t.digest().unwrap()),
    )
    .await;
    assert!(seen.entity_gets.load(Ordering::Relaxed) > gets);
    assert_eq!(seen.batch_refused.load(Ordering::Relaxed), 1);
    // It asked for the day and got everything: nothing is left to copy, it may lead.
    assert_eq!(seen.scoped_snapshots.load(Ordering::Relaxed), 1);
    assert!(till.history_complete().unwrap());
    following.abort();
}
