//! Offline selling with real `tilld` processes: a till sells for a long stretch with the hub
//! gone and everything reaches the hub once; a hub killed mid-drain loses and doubles nothing;
//! a write the hub refuses is set aside without blocking the rest.

mod common;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use common::*;
use serde_json::{Value, json};

/// One sale as a cashier rings it: an order without a number, two lines and a cash payment.
fn sale(till: &Node, shift: &str) -> u16 {
    let order = new_id();
    let (status, answer) = till.mutate(&[
        ("order_header", "insert", json!({"id": order, "shift_id": shift, "opened_at": T})),
        ("order_line", "insert", json!({"id": new_id(), "order_id": order, "name_en": "Shawarma", "qty": 2, "unit_price": 1800, "created_at": T})),
        ("order_line", "insert", json!({"id": new_id(), "order_id": order, "name_en": "Ayran", "qty": 1, "unit_price": 600, "created_at": T})),
        ("order_payment", "insert", json!({"id": new_id(), "order_id": order, "method": "cash", "amount": 4200, "tendered": 5000, "paid_at": T})),
    ]);
    assert!(status == 200 || status == 202, "{answer}");
    status
}

/// A till of `hub`'s shop, paired with it before its first start (the shop runs paired: TLS to
/// the hub, the route guard on both).
fn till_with_letter(data: &std::path::Path, hub: &Node, letter: &str) -> Node {
    if !data.join("paired-with.json").exists() {
        pair_with(hub, data, &format!("Till {letter}"), "till");
    }
    Node::spawn(
        data,
        &["--role", "till", "--hub", &hub.url, "--till-letter", letter],
    )
}

fn pending(till: &Node) -> i64 {
    till.get("/api/status").1["pending"].as_i64().unwrap_or(-1)
}

fn hub_orders(hub: &Node) -> Vec<Value> {
    let (_, t) = hub.get("/api/tables/order_header");
    t["rows"].as_array().cloned().unwrap_or_default()
}

#[test]
fn a_till_offline_for_hundreds_of_sales_syncs_every_one_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let hub_dir = dir.path().join("hub");
    let hub = Node::hub(&hub_dir);
    let port = hub.port();
    let till = till_with_letter(&dir.path().join("till"), &hub, "C");
    let shift = new_id();
    hub.apply(&[(
        "pos_shift",
        "save",
        json!({"id": shift, "node_id": "till-c", "cashier": "Omar", "opened_at": T}),
    )]);
    assert_converges(&hub, &[&till]);
    hub.kill9();

    const SALES: usize = 300;
    let started = Instant::now();
    for _ in 0..SALES {
        assert_eq!(sale(&till, &shift), 202, "offline sales are queued");
    }
    let per_sale = started.elapsed() / SALES as u32;
    assert_eq!(pending(&till), (SALES * 4) as i64);
    // The dashboard's view of the backlog is a page and a count, whatever its size.
    let (status, outbox) = till.get("/api/outbox");
    assert_eq!(status, 200, "{outbox}");
    assert_eq!(outbox["pending"].as_array().unwrap().len(), 500);
    assert_eq!(outbox["pending_total"], json!(SALES * 4));
    assert_eq!(till.get("/api/outbox?limit=0").0, 400);
    // Every open order shows a distinct number staff can call out.
    let (_, rows) = till.get("/api/tables/order_header");
    let labels: HashSet<String> = rows["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["provisional_no"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(labels.len(), SALES);
    assert!(labels.contains("C-1") && labels.contains(&format!("C-{SALES}")));

    let hub = Node::spawn(
        &hub_dir,
        &["--role", "hub", "--listen", &format!("127.0.0.1:{port}")],
    );
    let back = Instant::now();
    wait_until(Duration::from_secs(120), "the outbox to drain", || {
        pending(&till) == 0
    });
    let drained = back.elapsed();
    println!(
        "offline: {SALES} sales ({} mutations) queued at {per_sale:?} each; drained in {drained:?} after the hub returned ({:.0} sales/s)",
        SALES * 4,
        SALES as f64 / drained.as_secs_f64()
    );
    let orders = hub_orders(&hub);
    assert_eq!(orders.len(), SALES);
    assert_eq!(count(&hub.db(), "order_line"), (SALES * 2) as i64);
    assert_eq!(count(&hub.db(), "order_payment"), SALES as i64);
    let numbers: HashSet<i64> = orders
        .iter()
        .map(|o| o["order_no"].as_i64().unwrap())
        .collect();
    assert_eq!(numbers.len(), SALES, "every order got its own hub number");
    let (_, s) = hub.get(&format!("/api/entities/shift/{shift}?parts=totals"));
    assert_eq!(
        s["payload"]["cash_sales"],
        json!(4200 * SALES as i64),
        "{s}"
    );
    assert_converges(&hub, &[&till]);
}

#[test]
fn a_hub_killed_mid_drain_loses_and_doubles_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let hub_dir = dir.path().join("hub");
    let hub = Node::hub(&hub_dir);
    let port = hub.port();
    let till = till_with_letter(&dir.path().join("till"), &hub, "D");
    let shift = new_id();
    hub.apply(&[(
        "pos_shift",
        "save",
        json!({"id": shift, "node_id": "till-d", "cashier": "Lina", "opened_at": T}),
    )]);
    assert_converges(&hub, &[&till]);
    hub.kill9();
    const SALES: usize = 200;
    for _ in 0..SALES {
        sale(&till, &shift);
    }
    let listen = format!("127.0.0.1:{port}");
    let hub = Node::spawn(&hub_dir, &["--role", "hub", "--listen", &listen]);
    wait_until(Duration::from_secs(60), "the drain under way", || {
        pending(&till) < (SALES * 4 - 40) as i64
    });
    // Killed while answering: some acknowledgements never reach the till.
    hub.kill9();
    let left = pending(&till);
    let hub = Node::spawn(&hub_dir, &["--role", "hub", "--listen", &listen]);
    wait_until(Duration::from_secs(120), "the outbox to drain", || {
        pending(&till) == 0
    });
    println!(
        "hub killed with {left} of {} mutations still owed by the till",
        SALES * 4
    );
    assert_eq!(hub_orders(&hub).len(), SALES);
    assert_eq!(count(&hub.db(), "order_line"), (SALES * 2) as i64);
    assert_eq!(count(&hub.db(), "order_payment"), SALES as i64);
    assert_converges(&hub, &[&till]);
}

#[test]
fn a_write_the_hub_refuses_is_set_aside_and_the_rest_go_through() {
    let dir = tempfile::tempdir().unwrap();
    let hub_dir = dir.path().join("hub");
    let hub = Node::hub(&hub_dir);
    let port = hub.port();
    let till = till_with_letter(&dir.path().join("till"), &hub, "E");
    let (shift, order) = (new_id(), new_id());
    open_order(&hub, &shift, &order, 1);
    assert_converges(&hub, &[&till]);
    hub.kill9();
    // Offline: a line on the order, then a new sale.
    let (status, _) = till.mutate(&[("order_line", "insert", json!({"id": new_id(), "order_id": order, "name_en": "Tea", "qty": 1, "unit_price": 500, "created_at": T}))]);
    assert_eq!(status, 202);
    sale(&till, &shift);
    // While this till cannot drain, the order is deleted at the hub by someone else.
    till.pause(true);
    let hub = Node::spawn(
        &hub_dir,
        &["--role", "hub", "--listen", &format!("127.0.0.1:{port}")],
    );
    hub.apply(&[("order_header", "delete", json!({"id": order}))]);
    till.pause(false);
    wait_until(Duration::from_secs(30), "the queue to settle", || {
        let st = till.get("/api/status").1;
        st["pending"] == 0 && st["rejected"] == 1
    });
    let (_, outbox) = till.get("/api/outbox");
    let refused = &outbox["rejected"][0];
    assert_eq!(refused["table"], "order_line", "{outbox}");
    assert!(
        refused["error"]
            .as_str()
            .unwrap()
            .contains("does not exist"),
        "{outbox}"
    );
    // The sale queued after it reached the hub; the refused line left the till's screen.
    assert_eq!(hub_orders(&hub).len(), 1);
    assert_converges(&hub, &[&till]);
    // The manager discards it.
    let mid = refused["mid"].as_str().unwrap();
    let (status, answer) = till.post_raw(&format!("/api/outbox/{mid}/discard"), "{}");
    assert_eq!(status, 200, "{answer}");
    assert_eq!(till.get("/api/status").1["rejected"], 0);
    let (status, answer) = till.post_raw(&format!("/api/outbox/{mid}/discard"), "{}");
    assert_eq!(status, 404, "{answer}");
}
