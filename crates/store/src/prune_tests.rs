//! Pruning the journal, tombstones and mutation ids: closed days stay reconciled and
//! searchable, and nothing retried after pruning is applied twice.

use capsule_protocol::{Action, Mutation, MutationBatch, MutationStatus};
use serde_json::json;

use crate::testutil::open_temp;
use crate::{ApplyMode, OrderQuery, Store};

fn hub() -> ApplyMode {
    ApplyMode::Authoritative {
        source: "till-a".into(),
    }
}

pub(crate) fn m(table: &str, action: Action, row: serde_json::Value) -> Mutation {
    Mutation {
        mid: uuid::Uuid::new_v4().to_string(),
        table: table.into(),
        action,
        row: row.as_object().unwrap().clone(),
        base: None,
        by: None,
    }
}

fn apply(store: &Store, muts: Vec<Mutation>) -> Vec<MutationStatus> {
    store
        .apply(
            &MutationBatch {
                mutations: muts,
                source: None,
            },
            &hub(),
        )
        .map(|a| a.results.into_iter().map(|r| r.status).collect())
        .unwrap_or_else(|e| panic!("{e}"))
}

/// `days` closed days of `per_day` paid orders each (and one order opened and deleted),
/// each closed by a Z report. Returns every mutation written, as sent.
pub(crate) fn closed_days(store: &Store, days: usize, per_day: usize) -> Vec<Mutation> {
    let at = "2026-11-24T12:00:00.000Z";
    let mut all = Vec::new();
    let mut no = 0;
    for d in 0..days {
        let shift = format!("s{d}");
        let mut day = vec![m(
            "pos_shift",
            Action::Insert,
            json!({"id": shift, "node_id": "till-a", "cashier": "Mona", "opened_at": at}),
        )];
        for _ in 0..per_day {
            no += 1;
            let o = format!("o{no}");
            day.push(m("order_header", Action::Insert, json!({"id": o, "order_no": no, "shift_id": shift, "opened_at": at, "tax_rate_bp": 1500})));
            day.push(m("order_line", Action::Insert, json!({"id": format!("l{no}"), "order_id": o, "name_en": "Tea", "qty": 1 + no % 3, "unit_price": 700 + no, "created_at": at})));
            day.push(m("order_payment", Action::Insert, json!({"id": format!("p{no}"), "order_id": o, "method": "card", "amount": 100, "reference": format!("R{no}"), "paid_at": at})));
            day.push(m(
                "order_header",
                Action::Merge,
                json!({"id": o, "status": "paid"}),
            ));
        }
        day.push(m(
            "order_header",
            Action::Insert,
            json!({"id": format!("gone{d}"), "shift_id": shift, "opened_at": at}),
        ));
        day.push(m(
            "order_header",
            Action::Delete,
            json!({"id": format!("gone{d}")}),
        ));
        day.push(m(
            "pos_shift",
            Action::Merge,
            json!({"id": shift, "status": "closed", "counted_cash": 0}),
        ));
        for s in apply(store, day.clone()) {
            assert_eq!(s, MutationStatus::Applied);
        }
        all.extend(day);
        let (_, z) = store.plan_z_report(Some("Manager")).unwrap();
        apply(store, vec![z]);
    }
    all
}

fn count(store: &Store, table: &str) -> i64 {
    store
        .with_reader(|c| {
            Ok(c.query_row(&format!("SELECT COUNT(*) FROM {table}"), [], |r| r.get(0))?)
        })
        .unwrap()
}

/// Every Z report's orders and total, and the same recounted from the orders now.
fn z_reconciled(store: &Store) -> Vec<(i64, i64, i64)> {
    every_z_reconciled(store)
}

#[test]
fn a_closed_weeks_bookkeeping_is_pruned_and_every_day_still_reconciles_and_is_found() {
    let (_d, store) = open_temp();
    let written = closed_days(&store, 12, 8);
    let before = z_reconciled(&store);
    let journal = count(&store, "_journal");
    assert!(journal as usize >= written.len(), "{journal}");
    let now = capsule_protocol::now_ms();
    let day = 24 * 3600 * 1000;

    // Within the week after the days were closed nothing is dropped.
    assert_eq!(
        store.prune_history(now + 3 * day).unwrap(),
        crate::Pruned::default()
    );
    assert_eq!(count(&store, "_journal"), journal);

    // A month on, the closed days' journal, tombstones and mutation ids are gone.
    let pruned = store.prune_history(now + 30 * day).unwrap();
    // (The newest Z's own entry was written after the version it counts up to: it stays.)
    assert_eq!(pruned.journal as i64, journal - 1);
    assert_eq!(pruned.tombstones, 12);
    assert!(pruned.mutation_ids >= written.len());
    assert_eq!(count(&store, "_journal"), 1);
    assert_eq!(count(&store, "_gone"), 0);
    assert_eq!(count(&store, "_mutation"), 0);

    // Every Z still reconciles to the cent, every order is still found by its number.
    assert_eq!(z_reconciled(&store), before);
    for no in 1..=96 {
        let page = store
            .find_orders(&OrderQuery {
                number: Some(no),
                ..OrderQuery::default()
            })
            .unwrap();
        assert_eq!(page.orders.len(), 1, "order #{no}");
        assert_eq!(page.orders[0].status.as_deref(), Some("paid"));
    }
    let by_ref = store
        .find_orders(&OrderQuery {
            reference: Some("R42".into()),
            ..OrderQuery::default()
        })
        .unwrap();
    assert_eq!(by_ref.orders[0].id, "o42");

    // A till retrying every one of those writes (its mids forgotten) doubles nothing and
    // reopens nothing: inserts of rows that exist and writes into closed days are refused.
    for w in &written {
        let _ = store.apply(
            &MutationBatch {
                mutations: vec![w.clone()],
                source: None,
            },
            &hub(),
        );
    }
    assert_eq!(z_reconciled(&store), before);
    assert_eq!(count(&store, "order_payment"), 96);
    assert_eq!(count(&store, "order_line"), 96);
    let x = store.x_report().unwrap();
    assert_eq!(
        (x.orders, x.total),
        (0, 0),
        "a closed day's order came back into today"
    );
}

/// Every Z report of the store, newest first, page by page, each recounted from its orders.
fn every_z_reconciled(store: &Store) -> Vec<(i64, i64, i64)> {
    let mut out = Vec::new();
    let mut before = None;
    loop {
        let page = store.z_reports(before, 100).unwrap();
        let Some(last) = page.last() else {
            return out;
        };
        before = last["number"].as_i64();
        for z in &page {
            let n = z["number"].as_i64().unwrap();
            let stored = store.z_report(n).unwrap();
            let (from, to): (i64, i64) = store
                .with_reader(|c| {
                    Ok(c.query_row(
                        "SELECT from_v, to_v FROM z_report WHERE number = ?1",
                        [n],
                        |r| Ok((r.get(0)?, r.get(1)?)),
                    )?)
                })
                .unwrap();
            let again = store
                .with_reader(|c| crate::report::compute(c, from, to))
                .unwrap();
            assert_eq!(
                (again.orders, again.total),
                (stored.orders, stored.total),
                "Z #{n} no longer reconciles"
            );
            out.push((n, stored.orders, stored.total));
        }
    }
}

#[test]
fn a_year_of_days_pruned_still_reconciles_every_z_to_the_cent_and_finds_any_past_order() {
    let (_d, store) = open_temp();
    let (days, per_day) = (365, 4);
    closed_days(&store, days, per_day);
    let before = every_z_reconciled(&store);
    assert_eq!(before.len(), days);
    let pruned = store
        .prune_history(capsule_protocol::now_ms() + 30 * 24 * 3600 * 1000)
        .unwrap();
    assert!(pruned.journal > days * per_day * 4, "{pruned:?}");
    assert_eq!(count(&store, "_gone"), 0);

    assert_eq!(every_z_reconciled(&store), before, "a counted day moved");
    // A thousand past orders picked at random: each found by its number and by its card
    // reference, and opened whole (its line and payment) to reprint.
    let orders = (days * per_day) as u64;
    let mut seed: u64 = 0x5eed;
    for _ in 0..1000 {
        seed = seed
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        let no = (seed >> 33) % orders + 1;
        let by_number = store
            .find_orders(&OrderQuery {
                number: Some(no as i64),
                ..OrderQuery::default()
            })
            .unwrap();
        assert_eq!(by_number.orders.len(), 1, "order #{no}");
        let id = &by_number.orders[0].id;
        assert_eq!(id, &format!("o{no}"));
        let by_ref = store
            .find_orders(&OrderQuery {
                reference: Some(format!("R{no}")),
                ..OrderQuery::default()
            })
            .unwrap();
        assert_eq!(by_ref.orders.len(), 1, "reference R{no}");
        let order = store.pull("order", id, None).unwrap();
        assert_eq!(order.payload["status"], "paid");
        assert_eq!(order.payload["lines"].as_array().unwrap().len(), 1);
        assert_eq!(order.payload["payments"].as_array().unwrap().len(), 1);
    }
}
