//! End to end, the capsule stream at scale: rushes with stalled and killed tills, coalescing,
//! replay and snapshots, rollout modes switched mid-rush, and the metrics that watch it all.

mod common;

use std::time::Duration;

use common::*;
use serde_json::json;

#[test]
fn a_rush_with_a_stalled_till_converges_everywhere() {
    let dir = tempfile::tempdir().unwrap();
    let hub = Node::spawn(
        &dir.path().join("hub"),
        &["--role", "hub", "--coalesce-ms", "50"],
    );
    let a = Node::till(&dir.path().join("a"), &hub);
    let b = Node::till(&dir.path().join("b"), &hub);
    let slow = Node::till(&dir.path().join("slow"), &hub);
    wait_until(Duration::from_secs(10), "tills online", || {
        slow.get("/api/status").1["state"] == "online"
    });

    let sent = run_rush(120, 7, &[&hub, &a, &b], |i| {
        if i == 200 {
            slow.pause(true);
        }
        if i == 900 {
            slow.pause(false);
        }
    });
    assert!(sent > 1500, "a rush of thousands of changes, got {sent}");
    assert_converges(&hub, &[&a, &b, &slow]);
    assert_eq!(count(&slow.db(), "order_header"), 120);
}

/// Frames and REST requests one till sees for the same seeded rush with coalescing `ms`.
fn frames_and_pulls(ms: &str) -> (f64, f64, f64) {
    let dir = tempfile::tempdir().unwrap();
    let hub = Node::spawn(
        &dir.path().join("hub"),
        &["--role", "hub", "--coalesce-ms", ms],
    );
    let till = Node::till(&dir.path().join("till"), &hub);
    // The history copy's pages are REST requests too: counted only once they are done.
    wait_settled(&till);
    run_rush(60, 11, &[&hub], |_| {});
    assert_converges(&hub, &[&till]);
    (
        till.metric("replica.ws_frames_received"),
        till.metric("replica.rest_requests"),
        hub.metric("coalescing_ratio"),
    )
}

#[test]
fn coalescing_cuts_frames_and_pulls_without_losing_anything() {
    let (frames_off, pulls_off, ratio_off) = frames_and_pulls("0");
    let (frames_on, pulls_on, ratio_on) = frames_and_pulls("250");
    eprintln!(
        "coalescing 0 ms: {frames_off} frames, {pulls_off} REST requests; 250 ms: {frames_on} frames, {pulls_on} REST requests"
    );
    assert!(
        frames_on * 5.0 < frames_off,
        "250 ms window: {frames_on} frames vs {frames_off} without"
    );
    assert!(
        pulls_on < pulls_off,
        "250 ms window: {pulls_on} pulls vs {pulls_off} without"
    );
    assert_eq!(ratio_off, 1.0);
    // Each request already logs one capsule per entity, so the window merges what several
    // requests said about one entity: fewer items out than capsules in.
    assert!(ratio_on > 1.0, "coalescing ratio {ratio_on}");
}

#[test]
fn a_till_that_missed_hundreds_of_changes_replays_them_without_a_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let hub = Node::hub(&dir.path().join("hub"));
    let till_dir = dir.path().join("till");
    let till = Node::till(&till_dir, &hub);
    wait_until(Duration::from_secs(10), "till online", || {
        till.get("/api/status").1["state"] == "online"
    });
    till.kill9();
    let sent = run_rush(40, 3, &[&hub], |_| {});
    assert!(
        sent > 400,
        "hundreds of changes while it was down, got {sent}"
    );

    let till = Node::till(&till_dir, &hub);
    assert_converges(&hub, &[&till]);
    assert_eq!(
        till.metric("replica.snapshots"),
        0.0,
        "it resumed from its stored position"
    );
    assert!(hub.metric("replayed_frames") >= 1.0);
}

#[test]
fn a_till_whose_position_left_the_log_takes_a_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let hub = Node::spawn(
        &dir.path().join("hub"),
        &["--role", "hub", "--log-keep", "20"],
    );
    let till_dir = dir.path().join("till");
    let till = Node::till(&till_dir, &hub);
    wait_until(Duration::from_secs(10), "till online", || {
        till.get("/api/status").1["state"] == "online"
    });
    till.kill9();
    run_rush(80, 5, &[&hub], |_| {});
    // The log is pruned to its last entries; older positions are gone.
    wait_until(Duration::from_secs(10), "log pruned", || {
        hub.get("/api/changes?since=1").0 == 410
    });
    let (status, answer) = hub.get("/api/changes?since=1");
    assert!(
        answer["error"].as_str().unwrap().contains("too old"),
        "{status} {answer}"
    );

    let till = Node::till(&till_dir, &hub);
    assert_converges(&hub, &[&till]);
    assert_eq!(till.metric("replica.snapshots"), 1.0);
}

#[test]
fn the_change_log_answers_from_a_position() {
    let dir = tempfile::tempdir().unwrap();
    let hub = Node::hub(&dir.path().join("hub"));
    let (shift, order) = (new_id(), new_id());
    open_order(&hub, &shift, &order, 1);
    let (status, all) = hub.get("/api/changes?since=0");
    assert_eq!(status, 200, "{all}");
    let seq = all["seq"].as_i64().unwrap();
    // One capsule per entity per request: the shift, then the order with its lines.
    assert!(seq >= 2, "{all}");
    assert_eq!(all["items"][0]["entity"], "shift");
    let (_, tail) = hub.get(&format!("/api/changes?since={}&limit=1", seq - 2));
    assert_eq!(tail["items"].as_array().unwrap().len(), 1);
    assert_eq!(tail["more"], true);
    assert_eq!(hub.get("/api/changes").0, 400);
    assert_eq!(hub.get("/api/changes?since=x").0, 400);
}

#[test]
fn switching_rollout_modes_mid_rush_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let hub = Node::hub(&dir.path().join("hub"));
    let till = Node::till(&dir.path().join("till"), &hub);
    let other = Node::till(&dir.path().join("other"), &hub);
    wait_until(Duration::from_secs(10), "till online", || {
        till.get("/api/status").1["state"] == "online"
    });
    let set = |entity: &str, mode: &str| {
        let (status, answer) = hub.post_raw(
            "/api/admin/modes",
            &json!({"entity": entity, "mode": mode}).to_string(),
        );
        assert_eq!(status, 200, "{answer}");
        assert_eq!(answer["modes"][entity], mode);
    };
    run_rush(60, 9, &[&hub, &till], |i| match i {
        100 => set("order", "legacy"),
        250 => set("job", "both"),
        400 => {
            set("batch", "legacy");
            set("shift", "legacy");
        }
        550 => set("order", "capsule"),
        _ => {}
    });
    assert_converges(&hub, &[&till, &other]);
    let (_, m) = hub.get("/api/metrics");
    assert!(
        m["ws_bytes_sent"]["rows"].as_f64().unwrap() > 0.0,
        "legacy rows were sent: {m}"
    );
    assert!(m["ws_bytes_sent"]["capsule"].as_f64().unwrap() > 0.0);
    assert!(till.metric("replica.ws_rows_bytes_received") > 0.0);
    assert_eq!(m["modes"]["job"], "both");

    let (status, answer) = hub.post_raw(
        "/api/admin/modes",
        &json!({"entity": "order", "mode": "fast"}).to_string(),
    );
    assert_eq!(status, 400, "{answer}");
    assert!(answer["error"].as_str().unwrap().contains("unknown mode"));
    let (status, _) = hub.post_raw(
        "/api/admin/modes",
        &json!({"entity": "menu", "mode": "legacy"}).to_string(),
    );
    assert_eq!(status, 404);
    // Modes survive a hub restart.
    let port = hub.port();
    hub.kill9();
    let hub = Node::spawn(
        &dir.path().join("hub"),
        &["--role", "hub", "--listen", &format!("127.0.0.1:{port}")],
    );
    assert_eq!(hub.get("/api/admin/modes").1["modes"]["shift"], "legacy");
}

#[test]
fn metrics_move_with_the_traffic() {
    let dir = tempfile::tempdir().unwrap();
    let hub = Node::hub(&dir.path().join("hub"));
    let till = Node::till(&dir.path().join("till"), &hub);
    wait_until(Duration::from_secs(10), "till online", || {
        till.get("/api/status").1["state"] == "online"
    });
    let text = |n: &Node| {
        client()
            .get(format!("{}/metrics", n.url))
            .send()
            .unwrap()
            .text()
            .unwrap()
    };
    let value = |t: &str, name: &str| -> f64 {
        t.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0)
    };
    let before = text(&hub);
    run_rush(10, 1, &[&till], |_| {});
    assert_converges(&hub, &[&till]);
    let after = text(&hub);
    for name in [
        "capsule_ws_bytes_sent_total{kind=\"capsule\"}",
        "capsule_rest_pulls_total",
        "capsule_mutations_total",
        "capsule_log_entries_published_total",
    ] {
        assert!(
            value(&after, name) > value(&before, name),
            "{name} did not move:\n{after}"
        );
    }
    assert!(after.contains("# TYPE capsule_rest_pull_seconds histogram"));
    let (_, m) = hub.get("/api/metrics");
    let subs = m["subscribers"].as_array().unwrap();
    let node_id = till.get("/api/status").1["node_id"].clone();
    assert!(
        subs.iter()
            .any(|s| s["node_id"] == node_id && s["role"] == "till"),
        "{m}"
    );
    let till_text = text(&till);
    assert!(
        value(&till_text, "capsule_replica_rest_requests_total") > 0.0,
        "{till_text}"
    );
    assert!(till.metric("replica.e2e_lag.count") > 0.0);
    assert!(till.metric("replica.merge_latency.count") > 0.0);
}

#[test]
fn a_light_till_opens_with_the_open_business_only() {
    let dir = tempfile::tempdir().unwrap();
    let hub = Node::spawn(&dir.path().join("hub"), &["--role", "hub", "--demo"]);
    let light = Node::spawn(
        &dir.path().join("light"),
        &["--role", "till", "--hub", &hub.url, "--light"],
    );
    wait_until(Duration::from_secs(10), "light till online", || {
        light.get("/api/status").1["state"] == "online"
    });
    let (_, all) = hub.get("/api/tables/order_header");
    let (_, mine) = light.get("/api/tables/order_header");
    let open = all["rows"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|o| o["status"] == "open" || o["status"] == "sent")
        .count();
    assert_eq!(mine["rows"].as_array().unwrap().len(), open);
    assert!(
        open < all["rows"].as_array().unwrap().len(),
        "the demo has paid orders too"
    );
    let (_, light_snap) = hub.get("/api/snapshot?light=1");
    let (_, full_snap) = hub.get("/api/snapshot");
    assert!(light_snap.to_string().len() < full_snap.to_string().len());
    // New business still flows to it.
    let order = new_id();
    let shift = all["rows"][0]["shift_id"].as_str().unwrap().to_string();
    hub.apply(&[(
        "order_header",
        "insert",
        json!({"id": order, "order_no": 500, "shift_id": shift, "opened_at": T}),
    )]);
    wait_until(
        Duration::from_secs(10),
        "new order on the light till",
        || light.get(&format!("/api/entities/order/{order}")).0 == 200,
    );
}

#[test]
fn tills_report_their_sync_health_to_the_hub_dashboard() {
    let dir = tempfile::tempdir().unwrap();
    let hub = Node::hub(&dir.path().join("hub"));
    let till = Node::till(&dir.path().join("till"), &hub);
    let node_id = till.get("/api/status").1["node_id"].clone();
    run_rush(5, 2, &[&till], |_| {});
    wait_until(
        Duration::from_secs(10),
        "a report with merges in it",
        || {
            let (_, m) = hub.get("/api/metrics");
            m["nodes"].as_array().is_some_and(|nodes| {
                nodes.iter().any(|n| {
                    n["node_id"] == node_id
                        && n["connected"] == true
                        && n["report"]["state"] == "online"
                        && n["report"]["replica"]["merge_latency"]["count"]
                            .as_u64()
                            .unwrap_or(0)
                            > 0
                })
            })
        },
    );
    let (status, answer) =
        hub.post_raw("/api/nodes/report", r#"{"node_id": "a,b", "role": "till"}"#);
    assert_eq!(status, 400, "{answer}");
    let (status, _) = till.post_raw("/api/nodes/report", r#"{"node_id": "x", "role": "till"}"#);
    assert_eq!(status, 404, "tills do not collect reports");
}

#[test]
fn an_idle_link_stays_up_on_pings() {
    // Pings every 100 ms, silence allowed for 600 ms: two seconds of a quiet shop must not
    // look like a dead hub.
    let dir = tempfile::tempdir().unwrap();
    let hub = Node::spawn(
        &dir.path().join("hub"),
        &["--role", "hub", "--ping-ms", "100"],
    );
    let till = Node::spawn(
        &dir.path().join("till"),
        &["--role", "till", "--hub", &hub.url, "--silence-ms", "600"],
    );
    wait_until(Duration::from_secs(10), "till online", || {
        till.get("/api/status").1["state"] == "online"
    });
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        till.metric("replica.reconnects"),
        1.0,
        "the till reconnected on an idle link"
    );
    assert_eq!(till.get("/api/status").1["state"], "online");
    // Without pings the same silence is a dead link, and the till says so.
    let quiet = Node::spawn(
        &dir.path().join("hub2"),
        &["--role", "hub", "--ping-ms", "60000"],
    );
    let t2 = Node::spawn(
        &dir.path().join("till2"),
        &["--role", "till", "--hub", &quiet.url, "--silence-ms", "600"],
    );
    wait_until(
        Duration::from_secs(10),
        "second till to notice silence",
        || t2.metric("replica.reconnects") >= 2.0,
    );
}

#[test]
fn in_both_mode_the_rows_are_enough_and_tills_pull_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let hub = Node::hub(&dir.path().join("hub"));
    for entity in ["order", "job", "batch", "shift"] {
        let (status, _) = hub.post_raw(
            "/api/admin/modes",
            &json!({"entity": entity, "mode": "both"}).to_string(),
        );
        assert_eq!(status, 200);
    }
    let till = Node::till(&dir.path().join("till"), &hub);
    // Online and done copying the history behind its day snapshot: those pages are REST
    // requests too, and on a loaded machine they were still under way (8 pulls counted).
    wait_settled(&till);
    let before = till.metric("replica.rest_requests");
    run_rush(20, 4, &[&hub], |_| {});
    assert_converges(&hub, &[&till]);
    assert!(
        till.metric("replica.capsules_received") > 0.0
            || till.metric("replica.ws_rows_bytes_received") > 0.0
    );
    assert_eq!(
        till.metric("replica.rest_requests"),
        before,
        "capsules covered by rows frames pulled anyway"
    );
}
