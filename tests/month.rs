//! A restaurant's month with real `tilld --role auto` processes: the manager's PC and two tills
//! through 30 accelerated days (`MONTH_DAYS=N` for another length). Each day: the manager's PC
//! starts and takes the hub back, the tills ring up orders, send them to the kitchen and take
//! payments, the manager changes a price and takes the day's Z; each night the manager's PC is
//! switched off (SIGKILL on odd nights, SIGTERM on even ones), a till takes over within 3 s and
//! sells a late order. On day 10 a till is restarted too.
//!
//! At the end: one hub, every outbox empty, nothing refused, the same data on every node, no
//! order a Z counted changed, no paid order reopened, every sale once, and the terms used.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::*;
use serde_json::json;

fn days() -> usize {
    std::env::var("MONTH_DAYS")
        .ok()
        .and_then(|d| d.parse().ok())
        .unwrap_or(30)
}

/// Rings up an order with one line on `till`, sends it to the kitchen and takes its payment.
fn full_order(till: &Node, shift: &str) -> String {
    let order = new_id();
    let (code, answer) = till.mutate(&[
        ("order_header", "insert", json!({"id": order, "shift_id": shift, "opened_at": T})),
        ("order_line", "insert", json!({"id": new_id(), "order_id": order, "item_code": "G01", "station": "grill", "name_en": "Mixed grill platter", "qty": 1, "unit_price": 6900, "created_at": T})),
    ]);
    assert!(code == 200 || code == 202, "{code} {answer}");
    let (code, answer) = till.post_raw(&format!("/api/orders/{order}/send-to-kitchen"), "{}");
    assert!(
        code == 200 || code == 202,
        "send to kitchen: {code} {answer}"
    );
    let total = till.get(&format!("/api/entities/order/{order}")).1["payload"]["total"]
        .as_i64()
        .unwrap_or(6900)
        .max(1);
    let (code, answer) = till.mutate(&[
        ("order_payment", "insert", json!({"id": new_id(), "order_id": order, "method": "card", "amount": total, "paid_at": T})),
        ("order_header", "merge", json!({"id": order, "status": "paid", "updated_at": T})),
    ]);
    assert!(code == 200 || code == 202, "payment: {code} {answer}");
    order
}

/// Orders a Z counted, as `node` holds them: id -> (status, finished_v).
fn counted(node: &Node) -> BTreeMap<String, (String, i64)> {
    orders(node)
        .iter()
        .filter_map(|o| {
            Some((
                o["id"].as_str()?.to_string(),
                (o["status"].as_str()?.to_string(), o["finished_v"].as_i64()?),
            ))
        })
        .collect()
}

fn hub_of<'a>(nodes: &[&'a Node]) -> Option<&'a Node> {
    nodes.iter().copied().find(|n| status(n)["role"] == "hub")
}

#[test]
fn a_month_of_nights_with_the_managers_pc_off_reopens_loses_and_refuses_nothing() {
    let shop = Shop::new(3);
    let quiet = ["--handback-quiet-ms", "300"];
    let manager_args = ["--priority", "10", "--demo", "--handback-quiet-ms", "300"];
    shop.provision(
        0,
        "Manager PC",
        &["--priority", "10"],
        &[(1, "Till 1"), (2, "Till 2")],
    );
    let till1 = shop.start(1, "Till 1", &quiet);
    let mut till2 = shop.start(2, "Till 2", &quiet);
    let mut sold: Vec<String> = Vec::new();
    let mut z_counted: BTreeMap<String, (String, i64)> = BTreeMap::new();
    let mut failovers: Vec<Duration> = Vec::new();
    let mut shift = String::new();
    // The term after each morning's handback and each night's takeover.
    let mut terms: Vec<i64> = Vec::new();
    for day in 1..=days() {
        // Morning: the manager's PC is switched on and takes the hub back.
        let manager = shop.start(0, "Manager PC", &manager_args);
        wait_for_hub(&manager, &[&till1, &till2], Duration::from_secs(60));
        terms.push(status(&manager)["term"].as_i64().unwrap_or(0));
        if day == 1 {
            shift = new_id();
            manager.apply(&[(
                "pos_shift",
                "save",
                json!({"id": shift, "node_id": "till-1", "cashier": "Mona", "opened_at": T}),
            )]);
            wait_to_hold(&[&till1, &till2], "shift", &shift);
        }
        // Service.
        for k in 0..4 {
            let till = if k % 2 == 0 { &till1 } else { &till2 };
            sold.push(full_order(till, &shift));
        }
        manager.apply(&[(
            "menu_item",
            "merge",
            json!({"id": "item-G01", "price": 6900 + day as i64 * 10}),
        )]);
        wait_until(
            Duration::from_secs(30),
            "the day's sales to reach the hub",
            || drained(&till1) && drained(&till2),
        );
        // Closing: the day's Z, held by the tills before the PC goes off.
        let (code, z) = manager.post_raw(
            "/api/reports/z",
            &json!({"taken_by": "Manager", "number": day}).to_string(),
        );
        assert!(code == 200 || code == 201, "Z #{day}: {code} {z}");
        let to_v = z["to_v"].as_i64().unwrap();
        for (id, row) in counted(&manager) {
            if row.1 <= to_v {
                if let Some(before) = z_counted.get(&id) {
                    assert_eq!(before, &row, "order {id} a Z counted changed by day {day}");
                }
                z_counted.insert(id, row);
            }
        }
        wait_until(Duration::from_secs(20), "the tills to hold the Z", || {
            [&till1, &till2].iter().all(|t| {
                t.get("/api/reports/z").1["reports"]
                    .as_array()
                    .is_some_and(|r| r.len() == day)
            })
        });
        // Night: the manager's PC goes off; a till takes over and sells a late order.
        let off = Instant::now();
        if day % 2 == 1 {
            manager.kill9();
        } else {
            let pid = manager.child.id().to_string();
            assert!(
                std::process::Command::new("kill")
                    .args(["-TERM", &pid])
                    .status()
                    .unwrap()
                    .success()
            );
            let mut m = manager;
            m.child.wait().unwrap();
        }
        wait_until(Duration::from_secs(20), "a till to take the hub", || {
            hub_of(&[&till1, &till2]).is_some()
        });
        failovers.push(off.elapsed());
        terms.push(
            [&till1, &till2]
                .iter()
                .map(|t| status(t)["term"].as_i64().unwrap_or(0))
                .max()
                .unwrap_or(0),
        );
        let late = if status(&till1)["role"] == "hub" {
            &till2
        } else {
            &till1
        };
        sold.push(full_order(late, &shift));
        if day == 10 {
            // A till restarted too, on its own disk.
            till2.kill9();
            till2 = shop.start(2, "Till 2", &quiet);
        }
    }
    // The last morning: everyone back, everything settles.
    let manager = shop.start(0, "Manager PC", &manager_args);
    wait_for_hub(&manager, &[&till1, &till2], Duration::from_secs(60));
    wait_until(Duration::from_secs(30), "every outbox to drain", || {
        [&manager, &till1, &till2]
            .iter()
            .all(|n| status(n)["pending"] == 0)
    });
    for n in [&manager, &till1, &till2] {
        assert_nothing_refused(n);
    }
    assert_converges(&manager, &[&till1, &till2]);
    let now = counted(&manager);
    for (id, row) in &z_counted {
        assert_eq!(now.get(id), Some(row), "order {id} a Z counted changed");
    }
    let rows = orders(&manager);
    for o in &sold {
        let r = rows
            .iter()
            .find(|r| r["id"] == o.as_str())
            .unwrap_or_else(|| panic!("sale {o} lost"));
        assert_eq!(r["status"], "paid", "paid order {o} reopened");
    }
    let ids: std::collections::HashSet<&str> =
        rows.iter().filter_map(|r| r["id"].as_str()).collect();
    assert_eq!(ids.len(), rows.len(), "an order twice");
    let term = status(&manager)["term"].as_i64().unwrap();
    let worst = failovers.iter().max().unwrap();
    eprintln!(
        "month: {} days, {} sales, {} counted by Zs, last term {term} (morning, night: {terms:?}), failover median {:?} max {worst:?}",
        days(),
        sold.len(),
        z_counted.len(),
        {
            let mut f = failovers.clone();
            f.sort();
            f[f.len() / 2]
        }
    );
    assert!(
        *worst < Duration::from_secs(3),
        "a night without a hub for {worst:?}"
    );
    // The first claim, one term each night (a till takes over) and each morning (the
    // handback), and one when the restarted till was the night's hub: no more.
    assert!(
        term <= 2 * days() as i64 + 2,
        "{term} terms for {} days",
        days()
    );
}
