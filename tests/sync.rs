//! End to end: a hub and tills as real processes converge, survive kill -9, and refuse bad input.

mod common;

use std::time::Duration;

use common::*;
use futures_util::StreamExt;
use serde_json::{Value, json};

#[test]
fn tills_converge_on_writes_through_the_hub_and_through_a_till() {
    let dir = tempfile::tempdir().unwrap();
    let hub = Node::hub(&dir.path().join("hub"));
    let a = Node::till(&dir.path().join("a"), &hub);
    let b = Node::till(&dir.path().join("b"), &hub);

    // The cashier at till A rings up an order; it is in A's own file when the call returns.
    let (shift, order) = (new_id(), new_id());
    open_order(&a, &shift, &order, 1);
    let (_, local) = a.get(&format!("/api/entities/order/{order}?parts=totals"));
    assert_eq!(local["payload"]["subtotal"], 7200, "{local}");
    assert_eq!(local["payload"]["total"], 8280);

    // The hub sends it to the kitchen: a batch with a job per station.
    let (batch, grill, cold) = (new_id(), new_id(), new_id());
    hub.apply(&[
        ("job_order_batch", "insert", json!({"id": batch, "order_id": order, "batch_no": 1, "created_at": T})),
        ("job_order_header", "insert", json!({"id": grill, "order_id": order, "batch_id": batch, "station": "grill", "created_at": T})),
        ("job_order_header", "insert", json!({"id": cold, "order_id": order, "batch_id": batch, "station": "cold", "created_at": T})),
        ("job_order_detail", "insert", json!({"id": new_id(), "job_id": grill, "name_en": "Lamb kofta", "name_ar": "كفتة لحم", "qty": 1})),
        ("order_header", "merge", json!({"id": order, "status": "sent"})),
    ]);
    assert_converges(&hub, &[&a, &b]);

    // The kitchen bumps both jobs from till B's screen: the batch turns ready everywhere.
    b.apply(&[(
        "job_order_header",
        "merge",
        json!({"id": grill, "status": "ready"}),
    )]);
    b.apply(&[(
        "job_order_header",
        "merge",
        json!({"id": cold, "status": "ready"}),
    )]);
    assert_converges(&hub, &[&a, &b]);
    let (_, on_a) = a.get(&format!("/api/entities/batch/{batch}?parts=status"));
    assert_eq!(on_a["payload"]["status"], "ready");
    assert_eq!(on_a["payload"]["jobs_ready"], 2);

    // Payment at till A; shift totals follow on every node.
    a.apply(&[
        ("order_payment", "insert", json!({"id": new_id(), "order_id": order, "method": "cash", "amount": 8280, "tendered": 10000, "paid_at": T})),
        ("order_header", "merge", json!({"id": order, "status": "paid"})),
    ]);
    assert_converges(&hub, &[&a, &b]);
    let (_, shift_on_b) = b.get(&format!("/api/entities/shift/{shift}?parts=totals"));
    assert_eq!(shift_on_b["payload"]["cash_sales"], 8280);

    // A line deleted at the hub disappears from the tills' files.
    let (_, lines) = hub.get(&format!("/api/entities/order/{order}?parts=lines"));
    let line = lines["payload"]["lines"][0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    hub.apply(&[("order_line", "delete", json!({"id": line}))]);
    assert_converges(&hub, &[&a, &b]);
    assert_eq!(count(&a.db(), "order_line"), 1);
}

#[test]
fn capsule_frames_are_signals_without_row_data() {
    let dir = tempfile::tempdir().unwrap();
    // Coalescing off: one frame per capsule, as the walking skeleton sends them.
    let hub = Node::spawn(
        &dir.path().join("hub"),
        &["--role", "hub", "--coalesce-ms", "0"],
    );
    let (shift, order) = (new_id(), new_id());
    open_order(&hub, &shift, &order, 7);
    // The publisher runs behind the commits: subscribe once it has sent everything logged, so
    // the next frame is the next write's (a busy machine may otherwise deliver the order's
    // own capsules after `hello`).
    wait_until(
        Duration::from_secs(10),
        "the stream to publish the order",
        || {
            let logged = hub.get("/api/changes?since=0").1["seq"].as_i64();
            logged.is_some() && hub.get("/api/status").1["seq"].as_i64() == logged
        },
    );

    let rt = tokio::runtime::Runtime::new().unwrap();
    let ws_url = format!("{}/ws", hub.url.replace("http://", "ws://"));
    let (mut ws, _) = rt
        .block_on(tokio_tungstenite::connect_async(ws_url))
        .unwrap();
    let next = |ws: &mut _| -> String {
        rt.block_on(async {
            let ws: &mut tokio_tungstenite::WebSocketStream<_> = ws;
            loop {
                let m = tokio::time::timeout(Duration::from_secs(5), ws.next())
                    .await
                    .unwrap()
                    .unwrap()
                    .unwrap();
                if let tokio_tungstenite::tungstenite::Message::Text(t) = m {
                    return t.to_string();
                }
            }
        })
    };
    let hello: Value = serde_json::from_str(&next(&mut ws)).unwrap();
    assert_eq!(hello["type"], "hello");
    assert_eq!(hello["role"], "hub");

    hub.apply(&[(
        "order_line",
        "insert",
        json!({"id": new_id(), "order_id": order, "name_en": "Saffron kunafa", "name_ar": "كنافة بالزعفران", "qty": 3, "unit_price": 2275, "created_at": T}),
    )]);
    let text = next(&mut ws);
    let frame: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(frame["type"], "capsule");
    assert_eq!(frame["seq"], hello["seq"].as_i64().unwrap() + 1);
    let capsule = frame["capsule"].as_object().unwrap();
    let mut keys: Vec<&str> = capsule.keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(keys, ["entity", "id", "parts", "source", "ts", "v"]);
    assert_eq!(capsule["entity"], "order");
    assert_eq!(capsule["id"], order.as_str());
    assert_eq!(capsule["parts"], json!(["lines", "totals"]));
    for data in ["kunafa", "كنافة", "2275", "6825"] {
        assert!(
            !text.contains(data),
            "frame carries row data {data}: {text}"
        );
    }

    // What the capsule replaces: the whole order as the legacy stream sent it.
    let (_, full) = hub.get(&format!("/api/entities/order/{order}"));
    let row_bytes = serde_json::to_string(&full["payload"]).unwrap().len();
    eprintln!(
        "capsule frame: {} bytes; full order row with lines: {row_bytes} bytes",
        text.len()
    );
    assert!(
        text.len() * 5 < row_bytes,
        "capsule {} bytes vs row {row_bytes} bytes",
        text.len()
    );
}

#[test]
fn stream_frames_come_zstd_compressed_to_tills_that_ask_and_say_the_same() {
    use tokio_tungstenite::tungstenite::Message;
    let dir = tempfile::tempdir().unwrap();
    // A 300 ms window: a busy moment's capsules travel as one frame, big enough to compress.
    let hub = Node::spawn(
        &dir.path().join("hub"),
        &["--role", "hub", "--coalesce-ms", "300"],
    );
    let rt = tokio::runtime::Runtime::new().unwrap();
    let ws_url = format!("{}/ws", hub.url.replace("http://", "ws://"));
    let (mut plain, _) = rt
        .block_on(tokio_tungstenite::connect_async(ws_url.clone()))
        .unwrap();
    let (mut packed, _) = rt
        .block_on(tokio_tungstenite::connect_async(format!(
            "{ws_url}?encoding=zstd"
        )))
        .unwrap();
    // Frames as JSON until the one at `upto`, with the bytes each took on the wire and
    // whether it came compressed.
    let read_upto = |ws: &mut tokio_tungstenite::WebSocketStream<_>, upto: i64| {
        rt.block_on(async {
            let mut out: Vec<(Value, usize, bool)> = Vec::new();
            loop {
                let m = tokio::time::timeout(Duration::from_secs(10), ws.next())
                    .await
                    .expect("a frame within 10 s")
                    .unwrap()
                    .unwrap();
                let (text, wire, binary) = match m {
                    Message::Text(t) => (t.to_string(), t.len(), false),
                    Message::Binary(b) => (
                        String::from_utf8(zstd::bulk::decompress(&b, 1 << 24).unwrap()).unwrap(),
                        b.len(),
                        true,
                    ),
                    _ => continue,
                };
                let frame: Value = serde_json::from_str(&text).unwrap();
                let seq = frame["seq"].as_i64().unwrap_or(0);
                out.push((frame, wire, binary));
                if seq >= upto {
                    return out;
                }
            }
        })
    };
    let shift = new_id();
    let mut writes = vec![(
        "pos_shift",
        "save",
        json!({"id": shift, "node_id": "till-a", "cashier": "Mona", "opened_at": T}),
    )];
    for n in 0..12 {
        writes.push(("order_header", "insert", json!({"id": new_id(), "order_no": n + 1, "shift_id": shift, "opened_at": T, "tax_rate_bp": 1500, "table_label": format!("T{n}")})));
    }
    hub.apply(&writes);
    let seq = hub.get("/api/changes?since=0").1["seq"].as_i64().unwrap();
    let plain_frames = read_upto(&mut plain, seq);
    let packed_frames = read_upto(&mut packed, seq);
    // The same frames (hello aside: it names each connection's start), decoded alike.
    let without_hello = |frames: &[(Value, usize, bool)]| -> Vec<Value> {
        frames
            .iter()
            .filter(|(f, _, _)| f["type"] != "hello")
            .map(|(f, _, _)| f.clone())
            .collect()
    };
    assert_eq!(without_hello(&packed_frames), without_hello(&plain_frames));
    let capsules: usize = plain_frames
        .iter()
        .map(|(f, _, _)| f["items"].as_array().map_or(0, Vec::len))
        .sum();
    assert!(capsules >= 12, "{plain_frames:?}");
    // The browser's plain subscriber never gets binary; the till's gets the big frame packed.
    assert!(plain_frames.iter().all(|(_, _, binary)| !binary));
    let (plain_bytes, packed_bytes) = (
        plain_frames.iter().map(|(_, w, _)| w).sum::<usize>(),
        packed_frames.iter().map(|(_, w, _)| w).sum::<usize>(),
    );
    assert!(
        packed_frames.iter().any(|(_, _, binary)| *binary),
        "{packed_frames:?}"
    );
    assert!(
        packed_bytes * 2 < plain_bytes,
        "{packed_bytes} bytes compressed vs {plain_bytes} plain"
    );
    // An encoding the hub does not speak is a clear 400, not a silent plain stream.
    let (status, body) = hub.get("/ws?encoding=brotli");
    assert_eq!(status, 400, "{body}");
    assert!(body["error"].as_str().unwrap().contains("brotli"), "{body}");
}

#[test]
fn bad_input_gets_a_clear_4xx_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let hub = Node::hub(&dir.path().join("hub"));
    let till = Node::till(&dir.path().join("till"), &hub);
    let (shift, order) = (new_id(), new_id());
    open_order(&hub, &shift, &order, 1);
    assert_converges(&hub, &[&till]);
    let before = dump(&hub.db());

    let mid = uuid::Uuid::new_v4().to_string();
    let cases: Vec<(&str, String, u16, &str)> = vec![
        ("malformed JSON", "{\"mutations\": [".into(), 400, "malformed"),
        ("not an object", "[1,2]".into(), 400, "malformed"),
        ("unknown action", json!({"mutations": [{"mid": mid, "table": "order_header", "action": "upsert", "row": {"id": order}}]}).to_string(), 400, "upsert"),
        ("unknown table", json!({"mutations": [mutation("menu", "insert", json!({"id": "x"}))]}).to_string(), 400, "unknown table 'menu'"),
        ("unknown column", json!({"mutations": [mutation("order_header", "merge", json!({"id": order, "colour": "red"}))]}).to_string(), 400, "no column 'colour'"),
        ("wrong type", json!({"mutations": [mutation("order_line", "merge", json!({"id": order, "qty": "two"}))]}).to_string(), 400, "'qty' must be an integer"),
        ("float money", json!({"mutations": [mutation("order_header", "merge", json!({"id": order, "order_discount": 1.5}))]}).to_string(), 400, "minor units"),
        ("missing id", json!({"mutations": [mutation("order_header", "merge", json!({"note": "x"}))]}).to_string(), 400, "row.id is missing"),
        ("derived column", json!({"mutations": [mutation("order_header", "merge", json!({"id": order, "total": 1}))]}).to_string(), 400, "computed by the core"),
        ("insert existing id", json!({"mutations": [mutation("order_header", "insert", json!({"id": order, "order_no": 9, "shift_id": shift, "opened_at": T}))]}).to_string(), 409, "already exists"),
        ("merge missing row", json!({"mutations": [mutation("order_header", "merge", json!({"id": "ghost", "note": "x"}))]}).to_string(), 404, "does not exist"),
        // A good mutation before a bad one is rolled back with it.
        ("good then bad", json!({"mutations": [mutation("order_header", "merge", json!({"id": order, "note": "should not stick"})), mutation("order_header", "merge", json!({"id": "ghost", "note": "x"}))]}).to_string(), 404, "mutation 1"),
    ];
    for node in [&hub, &till] {
        for (what, body, status, needle) in &cases {
            let (got, answer) = node.post_raw("/api/mutations", body);
            assert_eq!(got, *status, "{what} at {}: {answer}", node.url);
            let error = answer["error"]
                .as_str()
                .unwrap_or_else(|| panic!("{what}: no error field in {answer}"));
            assert!(
                error.contains(needle),
                "{what}: '{error}' should mention '{needle}'"
            );
        }
    }
    let reads: Vec<(String, u16, &str)> = vec![
        ("/api/entities/menu/x".into(), 404, "unknown entity"),
        ("/api/entities/order/ghost".into(), 404, "does not exist"),
        (
            format!("/api/entities/order/{order}?parts=status,colour"),
            400,
            "no part 'colour'",
        ),
        ("/api/entities?entity=job".into(), 400, "ids"),
        ("/api/entities?ids=a".into(), 400, "entity"),
        (
            format!("/api/entities?entity=order&ids={order},ghost&have=5"),
            400,
            "one per id",
        ),
        (
            format!("/api/entities?entity=order&ids={order}&have=-1"),
            400,
            "0 or more",
        ),
        ("/api/nothing-here".into(), 404, "no such endpoint"),
    ];
    for (path, status, needle) in reads {
        let (got, answer) = hub.get(&path);
        assert_eq!(got, status, "{path}: {answer}");
        assert!(
            answer["error"].as_str().unwrap().contains(needle),
            "{path}: {answer}"
        );
    }
    let (got, batch) = hub.get(&format!(
        "/api/entities?entity=order&ids={order},ghost&parts=status"
    ));
    assert_eq!(got, 200);
    assert_eq!(batch["missing"], json!(["ghost"]));
    assert_eq!(batch["items"][0]["payload"]["status"], "open");

    assert_eq!(dump(&hub.db()), before, "bad input changed stored data");
    assert_eq!(hub.get("/healthz").0, 200);
    // And the hub still takes good writes from the till afterwards.
    till.apply(&[(
        "order_header",
        "merge",
        json!({"id": order, "note": "after the storm"}),
    )]);
    assert_converges(&hub, &[&till]);
}

#[test]
fn a_retried_mutation_is_applied_once() {
    let dir = tempfile::tempdir().unwrap();
    let hub = Node::hub(&dir.path().join("hub"));
    let till = Node::till(&dir.path().join("till"), &hub);
    let (shift, order) = (new_id(), new_id());
    open_order(&till, &shift, &order, 1);
    let body = json!({"mutations": [mutation("order_line", "insert", json!({"id": new_id(), "order_id": order, "name_en": "Ayran", "qty": 1, "unit_price": 900, "created_at": T}))]}).to_string();
    let (s1, first) = till.post_raw("/api/mutations", &body);
    let (s2, second) = till.post_raw("/api/mutations", &body);
    assert_eq!((s1, s2), (200, 200));
    assert_eq!(first["results"][0]["status"], "applied");
    assert_eq!(second["results"][0]["status"], "duplicate");
    assert_eq!(second["results"][0]["seq"], first["results"][0]["seq"]);
    assert_converges(&hub, &[&till]);
    assert_eq!(count(&hub.db(), "order_line"), 3);
    let (_, o) = hub.get(&format!("/api/entities/order/{order}?parts=totals"));
    assert_eq!(o["payload"]["subtotal"], 7200 + 900);
}

#[test]
fn a_till_killed_with_sigkill_catches_up_after_restart() {
    let dir = tempfile::tempdir().unwrap();
    let hub = Node::hub(&dir.path().join("hub"));
    let till_dir = dir.path().join("till");
    let till = Node::till(&till_dir, &hub);
    let other = Node::till(&dir.path().join("other"), &hub);
    let (shift, order) = (new_id(), new_id());
    open_order(&hub, &shift, &order, 1);
    assert_converges(&hub, &[&till, &other]);

    till.kill9();
    // Life goes on while it is down: writes through the hub and the other till, a delete.
    for n in 2..12 {
        open_order(&other, &shift, &new_id(), n);
    }
    hub.apply(&[("order_header", "delete", json!({"id": order}))]);

    let till = Node::till(&till_dir, &hub);
    assert_converges(&hub, &[&till, &other]);
    assert_eq!(count(&till.db(), "order_header"), 10);
    let (_, status) = till.get("/api/status");
    assert_eq!(status["state"], "online");
    assert_eq!(status["role"], "till");
}

#[test]
fn a_till_sells_while_the_hub_is_down_and_its_sales_reach_the_hub_once_when_it_returns() {
    let dir = tempfile::tempdir().unwrap();
    let hub_dir = dir.path().join("hub");
    let hub = Node::hub(&hub_dir);
    let port = hub.port();
    let till = Node::spawn(
        &dir.path().join("till"),
        &["--role", "till", "--hub", &hub.url, "--till-letter", "B"],
    );
    let (shift, order) = (new_id(), new_id());
    open_order(&hub, &shift, &order, 1);
    assert_converges(&hub, &[&till]);

    hub.kill9();
    // The cashier keeps selling: each write is committed on the till and answered at once.
    let (status, answer) = till.mutate(&[(
        "order_header",
        "merge",
        json!({"id": order, "note": "no onions"}),
    )]);
    assert_eq!(status, 202, "{answer}");
    assert_eq!(answer["results"][0]["status"], "queued", "{answer}");
    let new_order = new_id();
    let (status, answer) = till.mutate(&[
        ("order_header", "insert", json!({"id": new_order, "shift_id": shift, "opened_at": T})),
        ("order_line", "insert", json!({"id": new_id(), "order_id": new_order, "name_en": "Tea", "qty": 2, "unit_price": 500, "created_at": T})),
    ]);
    assert_eq!(status, 202, "{answer}");
    let (_, header) = till.get(&format!(
        "/api/entities/order/{new_order}?parts=header,totals"
    ));
    assert_eq!(header["payload"]["provisional_no"], "B-1", "{header}");
    assert!(header["payload"]["order_no"].is_null(), "{header}");
    assert_eq!(header["payload"]["subtotal"], 1000, "{header}");
    let (_, o) = till.get(&format!("/api/entities/order/{order}?parts=header"));
    assert_eq!(o["payload"]["note"], "no onions");
    wait_until(Duration::from_secs(10), "till to report offline", || {
        till.get("/api/status").1["state"] == "offline"
    });
    let (_, st) = till.get("/api/status");
    assert!(st["offline_since"].as_i64().is_some(), "{st}");
    assert_eq!(st["pending"], 3, "{st}");
    let (_, outbox) = till.get("/api/outbox");
    assert_eq!(outbox["pending"].as_array().unwrap().len(), 3, "{outbox}");
    assert_eq!(outbox["pending"][0]["table"], "order_header");
    assert!(outbox["pending"][0]["attempts"].as_i64().unwrap() >= 0);

    // The hub returns: the queue drains in order, each write exactly once.
    let listen = format!("127.0.0.1:{port}");
    let hub = Node::spawn(&hub_dir, &["--role", "hub", "--listen", &listen]);
    wait_until(Duration::from_secs(15), "the outbox to drain", || {
        till.get("/api/status").1["pending"] == 0
    });
    assert_eq!(count(&hub.db(), "order_header"), 2);
    assert_eq!(count(&hub.db(), "order_line"), 3);
    let (_, h) = hub.get(&format!("/api/entities/order/{new_order}?parts=header"));
    assert_eq!(h["payload"]["order_no"], 2, "{h}");
    assert_eq!(h["payload"]["provisional_no"], "B-1", "{h}");
    till.apply(&[(
        "order_header",
        "merge",
        json!({"id": order, "note": "back"}),
    )]);
    assert_converges(&hub, &[&till]);
}

#[test]
fn pulls_and_snapshots_are_gzipped_for_clients_that_ask_and_say_the_same() {
    let dir = tempfile::tempdir().unwrap();
    let hub = Node::spawn(&dir.path().join("hub"), &["--role", "hub", "--demo"]);
    let plain_client = reqwest::blocking::Client::builder()
        .no_gzip()
        .build()
        .unwrap();
    for path in [
        "/api/snapshot",
        "/api/tables/order_line",
        "/api/changed?since_v=0",
    ] {
        let url = format!("{}{path}", hub.url);
        let plain = plain_client.get(&url).send().unwrap();
        assert!(plain.headers().get("content-encoding").is_none());
        let plain: Value = plain.json().unwrap();
        let raw = plain_client
            .get(&url)
            .header("accept-encoding", "gzip")
            .send()
            .unwrap();
        assert_eq!(raw.headers()["content-encoding"], "gzip", "{path}");
        let squeezed = raw.bytes().unwrap().len();
        let full = serde_json::to_vec(&plain).unwrap().len();
        assert!(
            squeezed * 3 < full,
            "{path}: {squeezed} gzip bytes for {full}"
        );
        // A client that decodes gzip (the till's does) reads the same data.
        let decoded: Value = client().get(&url).send().unwrap().json().unwrap();
        assert_eq!(decoded, plain, "{path}");
    }
}

#[test]
fn a_changed_line_reaches_a_till_without_resending_the_other_lines() {
    let dir = tempfile::tempdir().unwrap();
    let hub = Node::hub(&dir.path().join("hub"));
    let till = Node::till(&dir.path().join("till"), &hub);
    let (shift, order) = (new_id(), new_id());
    open_order(&hub, &shift, &order, 1);
    let lines: Vec<String> = (0..40).map(|_| new_id()).collect();
    let adds: Vec<(&str, &str, Value)> = lines
        .iter()
        .map(|id| {
            ("order_line", "insert", json!({"id": id, "order_id": order, "name_en": "Falafel wrap",
                "name_ar": "لفافة فلافل", "qty": 1, "unit_price": 1200, "station": "fry", "created_at": T}))
        })
        .collect();
    hub.apply(&adds);
    assert_converges(&hub, &[&till]);
    let before = till.metric("replica.rest_bytes");

    // One line changes, one goes away: the till gets that line, the totals and the ids.
    hub.apply(&[
        ("order_line", "merge", json!({"id": lines[7], "qty": 3})),
        ("order_line", "delete", json!({"id": lines[8]})),
    ]);
    assert_converges(&hub, &[&till]);
    let pulled = till.metric("replica.rest_bytes") - before;
    let (_, whole) = hub.get(&format!(
        "/api/entities?entity=order&ids={order}&parts=lines,totals"
    ));
    let whole = serde_json::to_vec(&whole).unwrap().len() as f64;
    assert!(
        pulled > 0.0 && pulled * 4.0 < whole,
        "the till pulled {pulled} bytes; the whole order's lines are {whole}"
    );
    assert_eq!(till.metric("replica.full_repulls"), 0.0);
}

#[test]
fn tilld_serves_its_ui_from_any_directory() {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_tilld"));
    // Started away from the source tree, with no --ui: the UI comes from the binary.
    cmd.current_dir(dir.path())
        .args(["--role", "hub", "--listen", "127.0.0.1:0", "--data"])
        .arg(dir.path().join("hub"));
    let hub = Node::from_command(cmd, &dir.path().join("hub"));
    // Status, content type, cache-control, body.
    let get = |path: &str| {
        let r = client().get(format!("{}{path}", hub.url)).send().unwrap();
        let header = |k: &str| {
            r.headers()
                .get(k)
                .map_or(String::new(), |v| v.to_str().unwrap().to_string())
        };
        let (ty, cache) = (header("content-type"), header("cache-control"));
        (r.status().as_u16(), ty, cache, r.bytes().unwrap().to_vec())
    };
    let (status, ty, _, page) = get("/");
    assert_eq!(status, 200);
    assert!(ty.starts_with("text/html"), "{ty}");
    let dist = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("ui/dist");
    match std::fs::read(dist.join("index.html")) {
        // The UI has been built (./scripts/test builds it after the Rust tests, the demo
        // before tilld): the binary serves that very page, its assets, and the page for
        // any route the UI owns.
        Ok(index) => {
            assert_eq!(page, index);
            assert_eq!(get("/till/any/route").3, index);
            let asset = std::fs::read_dir(dist.join("assets"))
                .unwrap()
                .map(|e| e.unwrap().file_name().into_string().unwrap())
                .find(|n| n.ends_with(".js"))
                .expect("a built UI has a script");
            let (status, ty, cache, body) = get(&format!("/assets/{asset}"));
            assert_eq!(status, 200);
            assert_eq!(
                body,
                std::fs::read(dist.join("assets").join(&asset)).unwrap()
            );
            assert!(ty.contains("javascript"), "{ty}");
            assert!(cache.contains("immutable"), "{cache}");
        }
        // Not built: a page that says how to build it, not an error.
        Err(_) => assert!(String::from_utf8_lossy(&page).contains("The UI is not built")),
    }
    // The API is not shadowed by the UI.
    assert_eq!(hub.get("/api/status").1["role"], "hub");
}

#[test]
fn a_whole_burst_is_one_pull_request_compressed_or_not_and_bad_ones_get_a_clear_4xx() {
    let dir = tempfile::tempdir().unwrap();
    let hub = Node::hub(&dir.path().join("hub"));
    let (shift, order) = (new_id(), new_id());
    open_order(&hub, &shift, &order, 1);
    let line = new_id();
    hub.apply(&[(
        "order_line",
        "insert",
        json!({"id": line, "order_id": order, "name_en": "Tea", "qty": 2, "unit_price": 300, "station": "bar", "created_at": T}),
    )]);
    let body = json!({"pulls": [
        {"entity": "order", "ids": [order, "ghost"], "parts": ["status", "lines"]},
        {"entity": "shift", "ids": [shift]},
    ]})
    .to_string();
    let post = |body: Vec<u8>, encoding: Option<&str>| {
        let mut r = client()
            .post(format!("{}/api/pull", hub.url))
            .header("content-type", "application/json");
        if let Some(e) = encoding {
            r = r.header("content-encoding", e);
        }
        let r = r.body(body).send().unwrap();
        let status = r.status().as_u16();
        (status, r.json::<Value>().unwrap_or(Value::Null))
    };
    // One answer per entity, in the order asked, saying what the per-entity pulls say.
    let (status, plain) = post(body.clone().into_bytes(), None);
    assert_eq!(status, 200, "{plain}");
    let (_, order_pull) = hub.get(&format!(
        "/api/entities?entity=order&ids={order},ghost&parts=status,lines"
    ));
    let (_, shift_pull) = hub.get(&format!("/api/entities?entity=shift&ids={shift}"));
    assert_eq!(plain["pulls"], json!([order_pull, shift_pull]));
    assert_eq!(plain["pulls"][0]["missing"], json!(["ghost"]));
    let lines = plain["pulls"][0]["items"][0]["payload"]["lines"]
        .as_array()
        .unwrap();
    assert!(
        lines
            .iter()
            .any(|l| l["id"] == line.as_str() && l["name_en"] == "Tea")
    );
    // The same request zstd-compressed (as a till sends it) gets the same answer.
    let packed = zstd::bulk::compress(body.as_bytes(), 1).unwrap();
    assert_eq!(post(packed, Some("zstd")), (200, plain.clone()));
    // With the version held, a child part comes as a delta: the one line added since, and
    // the ids of every line the order has now.
    let held = plain["pulls"][0]["items"][0]["pv"]["lines"]
        .as_i64()
        .unwrap();
    let cake = new_id();
    hub.apply(&[(
        "order_line",
        "insert",
        json!({"id": cake, "order_id": order, "name_en": "Cake", "qty": 1, "unit_price": 450, "station": "bar", "created_at": T}),
    )]);
    let delta =
        json!({"pulls": [{"entity": "order", "ids": [order], "parts": ["lines"], "have": [held]}]});
    let (status, delta) = post(delta.to_string().into_bytes(), None);
    assert_eq!(status, 200, "{delta}");
    let item = &delta["pulls"][0]["items"][0];
    let sent: Vec<&str> = item["payload"]["lines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["id"].as_str().unwrap())
        .collect();
    assert_eq!(sent, [cake.as_str()], "{delta}");
    let live = item["live"]["lines"].as_array().unwrap();
    assert_eq!(live.len(), lines.len() + 1, "{delta}");
    assert!(live.iter().any(|id| id == line.as_str()));

    let before = dump(&hub.db());
    let bomb = zstd::bulk::compress(&vec![b' '; 4 * 1024 * 1024], 3).unwrap();
    let too_many: Vec<Value> = (0..33)
        .map(|_| json!({"entity": "order", "ids": [order]}))
        .collect();
    // (what, body, Content-Encoding, status, what the error says)
    type Case<'a> = (&'a str, Vec<u8>, Option<&'a str>, u16, &'a str);
    let cases: Vec<Case> = vec![
        (
            "brotli",
            body.clone().into_bytes(),
            Some("br"),
            415,
            "not accepted",
        ),
        (
            "not zstd",
            b"{\"pulls\": []}".to_vec(),
            Some("zstd"),
            400,
            "not zstd",
        ),
        ("zstd bomb", bomb, Some("zstd"), 400, "decompressed"),
        (
            "not json",
            b"pulls please".to_vec(),
            None,
            400,
            "not a pull request",
        ),
        (
            "no wants",
            br#"{"pulls": []}"#.to_vec(),
            None,
            400,
            "1 to 32",
        ),
        (
            "an id twice",
            json!({"pulls": [{"entity": "order", "ids": [order, order]}]})
                .to_string()
                .into_bytes(),
            None,
            400,
            "named twice",
        ),
        (
            "too many wants",
            json!({"pulls": too_many}).to_string().into_bytes(),
            None,
            400,
            "1 to 32",
        ),
        (
            "no ids",
            json!({"pulls": [{"entity": "order", "ids": []}]})
                .to_string()
                .into_bytes(),
            None,
            400,
            "'ids'",
        ),
        (
            "have per id",
            json!({"pulls": [{"entity": "order", "ids": [order, "x"], "have": [1]}]})
                .to_string()
                .into_bytes(),
            None,
            400,
            "one per id",
        ),
        (
            "negative have",
            json!({"pulls": [{"entity": "order", "ids": [order], "have": [-1]}]})
                .to_string()
                .into_bytes(),
            None,
            400,
            "0 or more",
        ),
        (
            "unknown entity",
            json!({"pulls": [{"entity": "menu", "ids": ["x"]}]})
                .to_string()
                .into_bytes(),
            None,
            404,
            "unknown entity",
        ),
        (
            "unknown part",
            json!({"pulls": [{"entity": "order", "ids": [order], "parts": ["colour"]}]})
                .to_string()
                .into_bytes(),
            None,
            400,
            "no part 'colour'",
        ),
    ];
    for (what, body, encoding, want, needle) in cases {
        let (got, answer) = post(body, encoding);
        assert_eq!(got, want, "{what}: {answer}");
        let error = answer["error"].as_str().unwrap_or_default();
        assert!(
            error.contains(needle),
            "{what}: '{error}' should mention '{needle}'"
        );
    }
    assert_eq!(
        dump(&hub.db()),
        before,
        "a refused pull changed stored data"
    );
}
