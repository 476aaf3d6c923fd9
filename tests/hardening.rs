//! Hardening against wrong money and hostile writers, with real `tilld` processes: values out
//! of their declared range, overflow, poisoned numbering, timestamps, duplicate keys, unbounded
//! sources, one client starving the writer, unusable database files, backups and restore.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use serde_json::{Value, json};

fn order_no(node: &Node, id: &str) -> i64 {
    let (status, e) = node.get(&format!("/api/entities/order/{id}?parts=header"));
    assert_eq!(status, 200, "{e}");
    e["payload"]["order_no"].as_i64().unwrap()
}

/// Each case is refused with a 400 naming what is wrong, and the store does not move.
fn refuses(node: &Node, hub: &Node, body: &str, want: &str) {
    let before = dump(&hub.db());
    let (status, answer) = node.post_raw("/api/mutations", body);
    assert_eq!(status, 400, "{body:.200} -> {answer}");
    let msg = answer["error"].as_str().unwrap_or_default();
    assert!(
        msg.contains(want),
        "{body:.200}: wanted '{want}' in '{msg}'"
    );
    assert_eq!(
        dump(&hub.db()),
        before,
        "{body:.200} changed the hub's data"
    );
}

fn one(table: &str, action: &str, row: Value) -> String {
    json!({"mutations": [mutation(table, action, row)]}).to_string()
}

#[test]
fn wrong_money_and_numbers_are_refused_at_the_hub_and_at_a_till() {
    let dir = tempfile::tempdir().unwrap();
    let hub = Node::hub(&dir.path().join("hub"));
    let till = Node::till(&dir.path().join("till"), &hub);
    let (shift, order) = (new_id(), new_id());
    open_order(&hub, &shift, &order, 7);
    let line = |qty: Value, price: Value, discount: Value| {
        one(
            "order_line",
            "insert",
            json!({"id": new_id(), "order_id": order, "name_en": "Falafel",
            "qty": qty, "unit_price": price, "discount": discount, "created_at": T}),
        )
    };
    let pay = |amount: Value| {
        one(
            "order_payment",
            "insert",
            json!({"id": new_id(), "order_id": order, "method": "cash",
            "amount": amount, "tendered": amount, "paid_at": T}),
        )
    };
    let header = |row: Value| {
        let mut r = json!({"id": order});
        r.as_object_mut()
            .unwrap()
            .extend(row.as_object().unwrap().clone());
        one("order_header", "merge", r)
    };
    let cases: Vec<(String, &str)> = vec![
        (line(json!(-5), json!(1200), json!(0)), "'qty' must be between 1 and 10000"),
        (line(json!(0), json!(1200), json!(0)), "'qty' must be between 1 and 10000"),
        (line(json!(1), json!(-1200), json!(0)), "'unit_price' must be between 0"),
        (line(json!(1), json!(1200), json!(-300)), "'discount' must be between 0"),
        (line(json!(1), json!(1200), json!(1201)), "larger than qty x unit_price"),
        (line(json!(10_000), json!(i64::MAX), json!(0)), "'unit_price' must be between 0"),
        (line(json!(1.5), json!(1200), json!(0)), "'qty' must be an integer"),
        (line(json!(1), json!(1e20), json!(0)), "minor units"),
        (pay(json!(-33_934)), "'amount' must be between 1"),
        (pay(json!(i64::MAX)), "'amount' must be between 1"),
        (header(json!({"tax_rate_bp": 1_000_000_000_000_000i64})), "'tax_rate_bp' must be between 0 and 10000"),
        (header(json!({"service_rate_bp": -1})), "'service_rate_bp' must be between 0 and 10000"),
        (header(json!({"order_discount": -10})), "'order_discount' must be between 0"),
        (header(json!({"order_no": i64::MAX})), "'order_no' must be between 1 and 1000000000"),
        (header(json!({"guests": -2})), "'guests' must be between 0 and 999"),
        (header(json!({"note": "x".repeat(501)})), "at most 500"),
        (header(json!({"updated_at": "2026-11-24T12:00:00+00:00"})), "'updated_at' must be an RFC 3339 UTC timestamp"),
        (header(json!({"updated_at": "2026-11-24t12:00:00z"})), "'updated_at' must be an RFC 3339 UTC timestamp"),
        (header(json!({"updated_at": "2026-11-24 12:00:00Z"})), "'updated_at' must be an RFC 3339 UTC timestamp"),
        (header(json!({"updated_at": "2026-11-24T23:59:60Z"})), "'updated_at' must be an RFC 3339 UTC timestamp"),
        (header(json!({"updated_at": "0000-01-01T00:00:00Z"})), "year 0 is outside"),
        (
            format!(r#"{{"mutations": [{{"mid": "{}", "table": "order_line", "action": "merge", "row": {{"id": "x", "qty": 1, "qty": -5}}}}]}}"#, uuid::Uuid::new_v4()),
            "column 'qty' appears twice",
        ),
        (
            json!({"source": "s".repeat(1_800_000), "mutations": [mutation("order_header", "merge", json!({"id": order, "note": "hi"}))]}).to_string(),
            "source must be a node id",
        ),
        (
            json!({"mutations": (0..201).map(|_| mutation("order_header", "merge", json!({"id": order, "note": "hi"}))).collect::<Vec<_>>()}).to_string(),
            "at most 200 mutations per request",
        ),
    ];
    for (body, want) in &cases {
        refuses(&hub, &hub, body, want);
        refuses(&till, &hub, body, want);
    }
    // The order is exactly as rung up: 2 x 1500 + 4200, 15% tax.
    let (_, o) = hub.get(&format!("/api/entities/order/{order}?parts=totals"));
    assert_eq!(o["payload"]["total"], 8280, "{o}");
    assert_eq!(o["payload"]["item_count"], 3, "{o}");
}

#[test]
fn an_order_numbered_at_the_top_of_the_range_does_not_stop_numbering() {
    let dir = tempfile::tempdir().unwrap();
    let hub_dir = dir.path().join("hub");
    let hub = Node::hub(&hub_dir);
    let shift = new_id();
    let (big, a) = (new_id(), new_id());
    open_order(&hub, &shift, &big, 1_000_000_000);
    hub.apply(&[(
        "order_header",
        "insert",
        json!({"id": a, "shift_id": shift, "opened_at": T}),
    )]);
    assert_eq!(order_no(&hub, &a), 1);
    // Through a till, and after a restart of the hub, numbering goes on.
    hub.kill9();
    let hub = Node::hub(&hub_dir);
    let till = Node::till(&dir.path().join("till"), &hub);
    assert_converges(&hub, &[&till]);
    let b = new_id();
    till.apply(&[(
        "order_header",
        "insert",
        json!({"id": b, "shift_id": shift, "opened_at": T}),
    )]);
    assert_eq!(order_no(&hub, &b), 2);
}

#[test]
fn one_client_looping_big_writes_does_not_starve_a_single_sale() {
    let dir = tempfile::tempdir().unwrap();
    let hub = Node::hub(&dir.path().join("hub"));
    let shift = new_id();
    hub.apply(&[(
        "pos_shift",
        "save",
        json!({"id": shift, "node_id": "till-a", "cashier": "Mona", "opened_at": T}),
    )]);
    let stop = Arc::new(AtomicBool::new(false));
    // Hub versions of the first mutation of every flood request.
    let flood_seqs = Arc::new(Mutex::new(Vec::new()));
    let flooders: Vec<_> = (0..8)
        .map(|_| {
            let (stop, seqs, url, shift) = (
                stop.clone(),
                flood_seqs.clone(),
                hub.url.clone(),
                shift.clone(),
            );
            std::thread::spawn(move || {
                let http = client();
                while !stop.load(Ordering::Relaxed) {
                    let order = new_id();
                    let mut muts = vec![mutation(
                        "order_header",
                        "insert",
                        json!({"id": order, "shift_id": shift, "opened_at": T}),
                    )];
                    muts.extend((0..199).map(|_| {
                        mutation(
                            "order_line",
                            "insert",
                            json!({"id": new_id(), "order_id": order,
                        "name_en": "Spam", "qty": 1, "unit_price": 1, "created_at": T}),
                        )
                    }));
                    let body = json!({"source": "flooder", "mutations": muts});
                    let Ok(r) = http.post(format!("{url}/api/mutations")).json(&body).send() else {
                        continue;
                    };
                    if let Ok(v) = r.json::<Value>()
                        && let Some(seq) = v["results"][0]["seq"].as_i64()
                    {
                        seqs.lock().unwrap().push(seq);
                    }
                }
            })
        })
        .collect();
    wait_until(Duration::from_secs(30), "the flood under way", || {
        flood_seqs.lock().unwrap().len() >= 8
    });
    let mut sale_seqs = Vec::new();
    for _ in 0..15 {
        let body = json!({"source": "till-1", "mutations": [mutation("order_header", "insert",
            json!({"id": new_id(), "shift_id": shift, "opened_at": T}))]});
        let (status, answer) = hub.post_raw("/api/mutations", &body.to_string());
        assert_eq!(status, 200, "{answer}");
        sale_seqs.push(answer["results"][0]["seq"].as_i64().unwrap());
    }
    stop.store(true, Ordering::Relaxed);
    for f in flooders {
        f.join().unwrap();
    }
    // Commits are ordered by version. Between two of the cashier's sales, a fair writer lets
    // through about one flood request (the one in progress, then the sale's turn); a FIFO
    // writer would let through every flood request queued ahead (up to 8).
    let flood = flood_seqs.lock().unwrap().clone();
    let mut worst = 0;
    for w in sale_seqs.windows(2) {
        let between = flood.iter().filter(|s| **s > w[0] && **s < w[1]).count();
        worst = worst.max(between);
    }
    println!("flood requests committed between two sales: at most {worst} (8 flooders)");
    assert!(
        worst <= 3,
        "the flood got {worst} requests in between two sales"
    );
}

/// Runs `tilld` to completion, returning its exit code and stderr.
fn tilld(args: &[&str], as_nobody: bool) -> (Option<i32>, String) {
    let mut cmd = if as_nobody {
        let mut c = Command::new("setpriv");
        c.args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            env!("CARGO_BIN_EXE_tilld"),
        ]);
        c
    } else {
        Command::new(env!("CARGO_BIN_EXE_tilld"))
    };
    let out = cmd
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("tilld runs");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn is_root() -> bool {
    // The owner of /proc/self is the effective user.
    std::fs::metadata("/proc/self")
        .map(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0)
        .unwrap_or(false)
}

#[test]
fn a_database_the_node_cannot_write_stops_it_at_start_with_exit_2() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("hub");
    let hub = Node::hub(&data);
    open_order(&hub, &new_id(), &new_id(), 1);
    drop(hub);
    let before = dump(&data.join("node.sqlite3"));
    // Root writes any file whatever its mode, so as root the node runs as `nobody` against
    // root's files (the "wrong owner" case); otherwise the files are made read-only.
    let root = is_root();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(
        &data,
        std::fs::Permissions::from_mode(if root { 0o755 } else { 0o555 }),
    )
    .unwrap();
    for f in std::fs::read_dir(&data).unwrap() {
        std::fs::set_permissions(f.unwrap().path(), std::fs::Permissions::from_mode(0o444))
            .unwrap();
    }
    let data_s = data.to_str().unwrap();
    let (code, stderr) = tilld(
        &["--role", "hub", "--data", data_s, "--listen", "127.0.0.1:0"],
        root,
    );
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755)).unwrap();
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("node.sqlite3"), "{stderr}");
    assert!(
        stderr.contains("cannot be written") || stderr.contains("cannot be opened for writing"),
        "{stderr}"
    );
    assert_eq!(dump(&data.join("node.sqlite3")), before);
}

#[test]
fn a_column_of_the_wrong_type_stops_the_node_at_start_with_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("hub");
    std::fs::create_dir_all(&data).unwrap();
    let c = rusqlite::Connection::open(data.join("node.sqlite3")).unwrap();
    c.execute_batch("CREATE TABLE order_header (id TEXT PRIMARY KEY NOT NULL, total TEXT)")
        .unwrap();
    drop(c);
    let (code, stderr) = tilld(
        &[
            "--role",
            "hub",
            "--data",
            data.to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
        ],
        false,
    );
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("order_header.total is TEXT in the database file but INTEGER"),
        "{stderr}"
    );
}

fn order_ids(node: &Node) -> Vec<String> {
    let (status, rows) = node.get("/api/tables/order_header");
    assert_eq!(status, 200, "{rows}");
    let mut ids: Vec<String> = rows["rows"]
        .as_array()
        .or(rows.as_array())
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_string())
        .collect();
    ids.sort();
    ids
}

#[test]
fn a_backup_taken_while_the_hub_sells_restores_the_same_orders() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("hub");
    let hub = Node::hub(&data);
    run_rush(20, 3, &[&hub], |_| {});
    let acknowledged = order_ids(&hub);
    // Writes go on while the copy is taken.
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (stop, url) = (stop.clone(), hub.url.clone());
        std::thread::spawn(move || {
            let http = client();
            let shift = new_id();
            let body = json!({"mutations": [mutation("pos_shift", "save", json!({"id": shift, "node_id": "t", "cashier": "Ali", "opened_at": T}))]});
            http.post(format!("{url}/api/mutations"))
                .json(&body)
                .send()
                .unwrap();
            while !stop.load(Ordering::Relaxed) {
                let body = json!({"mutations": [mutation("order_header", "insert", json!({"id": new_id(), "shift_id": shift, "opened_at": T}))]});
                http.post(format!("{url}/api/mutations"))
                    .json(&body)
                    .send()
                    .unwrap();
            }
        })
    };
    let file = dir.path().join("copy.sqlite3");
    let out = Command::new(env!("CARGO_BIN_EXE_tilld"))
        .args([
            "backup",
            "--data",
            data.to_str().unwrap(),
            "--to",
            file.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    stop.store(true, Ordering::Relaxed);
    writer.join().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("backup written"));
    // One file holds everything: a new node started on it alone serves every order
    // acknowledged before the copy, with the same rows the hub has for them.
    let restored_data = dir.path().join("restored");
    std::fs::create_dir_all(&restored_data).unwrap();
    std::fs::copy(&file, restored_data.join("node.sqlite3")).unwrap();
    let restored = Node::hub(&restored_data);
    let restored_ids = order_ids(&restored);
    for id in &acknowledged {
        assert!(
            restored_ids.contains(id),
            "order {id} missing from the backup"
        );
    }
    let hub_rows: Vec<String> = dump(&hub.db());
    for row in dump(&restored.db()) {
        if row.starts_with("order_header")
            && acknowledged.iter().any(|id| row.contains(id.as_str()))
        {
            assert!(hub_rows.contains(&row), "restored row differs: {row}");
        }
    }
    // A backup of a folder with no database says so.
    let (code, stderr) = tilld(
        &[
            "backup",
            "--data",
            dir.path().join("nothing").to_str().unwrap(),
            "--to",
            "/tmp/x",
        ],
        false,
    );
    assert_eq!(code, Some(2));
    assert!(stderr.contains("no database at"), "{stderr}");
}

#[test]
fn the_hub_backs_itself_up_on_a_schedule_and_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let backups = dir.path().join("backups");
    let hub = Node::spawn(
        &dir.path().join("hub"),
        &[
            "--role",
            "hub",
            "--demo",
            "--backup-dir",
            backups.to_str().unwrap(),
            "--backup-every",
            "1h",
            "--backup-keep",
            "3",
        ],
    );
    let mut status = Value::Null;
    wait_until(Duration::from_secs(20), "the first backup", || {
        status = hub.get("/api/status").1;
        status["backup"]["last_file"].is_string()
    });
    let file = Path::new(status["backup"]["last_file"].as_str().unwrap());
    assert!(file.starts_with(&backups) && file.is_file(), "{status}");
    assert_eq!(status["backup"]["every_s"], 3600);
    assert_eq!(status["backup"]["keep"], 3);
    assert!(
        status["backup"]["last_bytes"].as_u64().unwrap() > 4096,
        "{status}"
    );
    let c = rusqlite::Connection::open_with_flags(file, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
        .unwrap();
    let orders: i64 = c
        .query_row("SELECT COUNT(*) FROM order_header", [], |r| r.get(0))
        .unwrap();
    assert!(
        orders >= 5,
        "the demo's orders are in the backup ({orders})"
    );
    let (code, stderr) = tilld(
        &[
            "--role",
            "hub",
            "--data",
            "/tmp/unused",
            "--backup-dir",
            "/tmp/b",
            "--backup-every",
            "5s",
        ],
        false,
    );
    assert_eq!(code, Some(2));
    assert!(stderr.contains("shorter than a minute"), "{stderr}");
}

#[test]
fn a_store_of_a_newer_format_stops_the_node_with_exit_2_and_is_left_byte_for_byte() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("hub");
    let hub = Node::hub(&data);
    open_order(&hub, &new_id(), &new_id(), 1);
    drop(hub);
    let db = data.join("node.sqlite3");
    {
        // What a later build leaves: its format, its own journal mode, no WAL beside it.
        let c = rusqlite::Connection::open(&db).unwrap();
        c.pragma_update(None, "user_version", 99).unwrap();
        c.pragma_update(None, "journal_mode", "DELETE").unwrap();
    }
    let before = std::fs::read(&db).unwrap();
    let (code, stderr) = tilld(
        &[
            "--role",
            "hub",
            "--data",
            data.to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
        ],
        false,
    );
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("newer Capsule POS"), "{stderr}");
    assert!(
        std::fs::read(&db).unwrap() == before,
        "the refused file was modified"
    );
    assert!(
        !data.join("node.sqlite3-wal").exists(),
        "the refused file was switched to WAL"
    );
}

#[test]
fn no_order_a_till_rings_up_can_block_the_x_and_z_reports() {
    let dir = tempfile::tempdir().unwrap();
    let hub = Node::hub(&dir.path().join("hub"));
    let till = Node::till(&dir.path().join("till"), &hub);
    // Three orders of 500 lines at the top price with 100% tax and service: each would total
    // about 4·10^18, and the day's sum could not be reported. Refused, with the reason, at the
    // till (its own commit) and at the hub.
    let shift = new_id();
    hub.apply(&[(
        "pos_shift",
        "save",
        json!({"id": shift, "node_id": "till-a", "cashier": "Mona", "opened_at": T}),
    )]);
    for node in [&hub, &till] {
        for _ in 0..3 {
            let order = new_id();
            let mut muts = vec![mutation(
                "order_header",
                "insert",
                json!({"id": order, "shift_id": shift, "opened_at": T,
                "tax_rate_bp": 10_000, "service_rate_bp": 10_000}),
            )];
            for i in 0..199 {
                muts.push(mutation("order_line", "insert", json!({"id": new_id(), "order_id": order, "line_no": i,
                    "name_en": "Gold", "qty": 10_000, "unit_price": 100_000_000_000_i64, "created_at": T})));
            }
            let (status, answer) =
                node.post_raw("/api/mutations", &json!({ "mutations": muts }).to_string());
            assert_eq!(status, 400, "{answer}");
            assert!(
                answer["error"]
                    .as_str()
                    .unwrap_or_default()
                    .contains("most one order may come to"),
                "{answer}"
            );
        }
    }
    // An ordinary sale goes through, and the X and Z reports answer.
    open_order(&hub, &shift, &new_id(), 7);
    let (status, x) = hub.get("/api/reports/x");
    assert_eq!(status, 200, "{x}");
    let (status, z) = hub.post_raw("/api/reports/z", r#"{"taken_by":"Manager"}"#);
    assert_eq!(status, 201, "{z}");
}

/// A client at 127.0.0.`last`: another device on the shop's network.
fn device(last: u8) -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .local_address(std::net::IpAddr::from([127, 0, 0, last]))
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap()
}

fn order_and_line(shift: &str) -> (String, Value) {
    let order = new_id();
    let body = json!({"mutations": [
        mutation("order_header", "insert", json!({"id": order, "shift_id": shift, "opened_at": T})),
        mutation("order_line", "insert", json!({"id": new_id(), "order_id": order, "name_en": "Tea", "qty": 1, "unit_price": 500, "created_at": T})),
    ]});
    (order, body)
}

fn waiting_at(till: &Node) -> i64 {
    till.get("/api/outbox?limit=1").1["pending_total"]
        .as_i64()
        .unwrap_or(-1)
}

#[test]
fn a_till_flooded_by_four_devices_sends_its_cashiers_sale_to_the_hub_next() {
    let dir = tempfile::tempdir().unwrap();
    let hub = Node::hub(&dir.path().join("hub"));
    let till = Node::till(&dir.path().join("till"), &hub);
    let shift = new_id();
    hub.apply(&[(
        "pos_shift",
        "save",
        json!({"id": shift, "node_id": "till-a", "cashier": "Mona", "opened_at": T}),
    )]);
    assert_converges(&hub, &[&till]);
    // While the hub stands still, four devices queue 300 orders each at the till.
    hub.pause(true);
    const EACH: usize = 300;
    let flooders: Vec<_> = (2..6)
        .map(|last| {
            let (url, shift) = (till.url.clone(), shift.clone());
            std::thread::spawn(move || {
                let http = device(last);
                for _ in 0..EACH {
                    let (_, body) = order_and_line(&shift);
                    let r = http
                        .post(format!("{url}/api/mutations"))
                        .json(&body)
                        .send()
                        .unwrap();
                    assert_eq!(r.status().as_u16(), 202, "{:?}", r.text());
                }
            })
        })
        .collect();
    for f in flooders {
        f.join().unwrap();
    }
    let flood = waiting_at(&till);
    assert!(flood >= (4 * EACH * 2) as i64, "{flood} entries queued");
    // Then the cashier rings a sale on the till itself.
    let (sale, body) = order_and_line(&shift);
    let (status, answer) = till.post_raw("/api/mutations", &body.to_string());
    assert_eq!(status, 202, "{answer}");
    hub.pause(false);
    let mut left = 0;
    wait_until(Duration::from_secs(120), "the sale at the hub", || {
        left = waiting_at(&till);
        hub.get(&format!("/api/entities/order/{sale}")).0 == 200
    });
    println!("the sale reached the hub with {left} of {flood} flood entries still waiting");
    // Clients take turns: the sale went within the first few requests, not after 1,200.
    assert!(
        left > flood / 2,
        "the sale waited for the flood: {left} of {flood} entries were left when it arrived"
    );
    wait_until(Duration::from_secs(120), "the flood drained", || {
        waiting_at(&till) == 0
    });
    assert_converges(&hub, &[&till]);
    assert_nothing_refused(&till);
}

#[test]
fn an_order_with_a_taken_number_or_on_a_shift_nobody_opened_is_refused_naming_the_column() {
    let dir = tempfile::tempdir().unwrap();
    let hub = Node::hub(&dir.path().join("hub"));
    let till = Node::till(&dir.path().join("till"), &hub);
    let (shift, first) = (new_id(), new_id());
    open_order(&hub, &shift, &first, 101);
    assert_converges(&hub, &[&till]);
    for node in [&hub, &till] {
        let before = dump(&hub.db());
        let (status, answer) = node.mutate(&[(
            "order_header",
            "insert",
            json!({"id": new_id(), "order_no": 101, "shift_id": shift, "opened_at": T}),
        )]);
        assert_eq!(status, 409, "{answer}");
        let msg = answer["error"].as_str().unwrap();
        assert!(msg.contains("order_header.order_no 101"), "{msg}");
        let (status, answer) = node.mutate(&[(
            "order_header",
            "insert",
            json!({"id": new_id(), "shift_id": "a-shift-nobody-opened", "opened_at": T}),
        )]);
        assert_eq!(status, 424, "{answer}");
        let msg = answer["error"].as_str().unwrap();
        assert!(msg.contains("order_header.shift_id"), "{msg}");
        // Renumbering another order to a taken number is the same refusal.
        let other = new_id();
        node.apply(&[(
            "order_header",
            "insert",
            json!({"id": other, "shift_id": shift, "opened_at": T}),
        )]);
        let (status, answer) = node.mutate(&[(
            "order_header",
            "merge",
            json!({"id": other, "order_no": 101}),
        )]);
        assert_eq!(status, 409, "{answer}");
        // Writing an order's own number again is no conflict.
        node.apply(&[(
            "order_header",
            "merge",
            json!({"id": first, "order_no": 101, "table_label": "T9"}),
        )]);
        assert_converges(&hub, &[&till]);
        assert_ne!(dump(&hub.db()), before, "the good writes landed");
    }
    let (_, found) = hub.get("/api/orders?number=101");
    assert_eq!(found["orders"].as_array().map(Vec::len), Some(1), "{found}");
    assert_nothing_refused(&till);
}

/// A counter from a node's Prometheus `/metrics`.
fn prometheus(node: &Node, name: &str) -> f64 {
    let text = client()
        .get(format!("{}/metrics", node.url))
        .send()
        .unwrap()
        .text()
        .unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {name} in /metrics"))
}

#[test]
fn garbage_sent_to_the_gossip_port_is_counted_not_logged_line_by_line() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let data = dir.path().join("node");
    let log = dir.path().join("node.log");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tilld"));
    // The manager's PC (priority above a till's) starts the shop at once; a fresh till
    // would wait 30 s for one.
    cmd.args(["--role", "auto", "--name", "Manager PC", "--priority", "10"])
        .arg("--no-mdns")
        .args(["--listen", &format!("127.0.0.1:{port}"), "--data"])
        .arg(&data);
    let node = Node::from_command_logging(
        cmd,
        &data,
        Stdio::from(std::fs::File::create(&log).unwrap()),
    );
    wait_until(Duration::from_secs(30), "the node to be hub", || {
        status(&node)["role"] == "hub"
    });
    let quiet_log = std::fs::metadata(&log).unwrap().len();
    // A guest's laptop sends the gossip port what is not gossip, fast.
    let guest = std::net::UdpSocket::bind("127.0.0.9:0").unwrap();
    const SENT: usize = 20_000;
    for i in 0..SENT {
        let _ = guest.send_to(b"\xffnot gossip at all", ("127.0.0.1", port));
        if i % 100 == 0 {
            // In bursts the node's socket buffer holds, so most are read and judged.
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    let mut counted = 0.0;
    wait_until(Duration::from_secs(30), "the datagrams counted", || {
        let now = prometheus(&node, "capsule_gossip_invalid_datagrams_total");
        let settled = now == counted && now >= (SENT / 4) as f64;
        counted = now;
        settled
    });
    let logged = std::fs::metadata(&log).unwrap().len() - quiet_log;
    let text = std::fs::read_to_string(&log).unwrap();
    let lines = text.matches("invalid-chitchat-payload").count();
    println!(
        "{counted} garbage datagrams counted; the log grew {logged} bytes, {lines} lines about them"
    );
    assert!(lines <= 10, "{lines} log lines about garbage datagrams");
    assert!(logged < 16 * 1024, "the log grew {logged} bytes");
    assert!(prometheus(&node, "capsule_gossip_log_dropped_total") >= counted - 10.0);
    // The node still sells.
    let shift = new_id();
    open_order(&node, &shift, &new_id(), 7);
}

/// Each device makes its own key at its first start and keeps it: the same device id after a
/// restart (and after SIGKILL), another one on another device, the key readable by the node's
/// user only and never in its log.
#[test]
fn a_device_keeps_its_own_identity_and_its_key_stays_private() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("hub");
    let hub = Node::hub(&data);
    let id = status(&hub)["device_id"].as_str().unwrap().to_string();
    assert_eq!(id.len(), 52, "{id}");
    hub.kill9();
    // Started again at debug level, its log kept: the id is there, the key is not.
    let log_path = dir.path().join("hub-again.log");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tilld"));
    cmd.args(["--role", "hub", "--listen", "127.0.0.1:0", "--data"])
        .arg(&data)
        .env("RUST_LOG", "debug");
    let again = Node::from_command_logging(
        cmd,
        &data,
        Stdio::from(std::fs::File::create(&log_path).unwrap()),
    );
    assert_eq!(status(&again)["device_id"], id.as_str());
    let till = Node::till(&dir.path().join("till"), &again);
    assert_ne!(status(&till)["device_id"], id.as_str());
    let key = data.join("device.key");
    let mode = std::fs::metadata(&key).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    let pem = std::fs::read_to_string(&key).unwrap();
    let secret: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    let log = std::fs::read_to_string(&log_path).unwrap();
    assert!(log.contains(&id), "the log names the device");
    for line in pem.lines().filter(|l| !l.starts_with("-----")) {
        assert!(!log.contains(line), "a line of the key is in the log");
    }
    assert!(!log.contains(&secret[..32]));
}
