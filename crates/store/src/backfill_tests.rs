//! A node that opened with the day copies the shop's history in pages: it ends holding what
//! the hub holds, may not lead before, and a page read before a later change or delete never
//! undoes it.

use capsule_protocol::{Action, Capsule, Mutation, MutationBatch};
use serde_json::json;

use crate::prune_tests::{closed_days, m};
use crate::testutil::open_temp;
use crate::{ApplyMode, BackfillAt, Scope, Store};

fn hub_mode() -> ApplyMode {
    ApplyMode::Authoritative {
        source: "till-a".into(),
    }
}

fn apply(store: &Store, muts: Vec<Mutation>) -> crate::Applied {
    store
        .apply(
            &MutationBatch {
                mutations: muts,
                source: None,
            },
            &hub_mode(),
        )
        .unwrap()
}

const AT: &str = "2026-12-07T12:00:00.000Z";

/// A hub with `days` closed days and an open shift today with one open order.
fn hub_with_history(days: usize) -> (tempfile::TempDir, Store) {
    let (d, hub) = open_temp();
    closed_days(&hub, days, 5);
    apply(
        &hub,
        vec![
            m(
                "pos_shift",
                Action::Insert,
                json!({"id": "today", "node_id": "till-a", "cashier": "Mona", "opened_at": AT}),
            ),
            m(
                "order_header",
                Action::Insert,
                json!({"id": "open1", "shift_id": "today", "opened_at": AT}),
            ),
        ],
    );
    (d, hub)
}

/// A new node that loaded the hub's day snapshot, as a joining node does.
fn joined_with_the_day(hub: &Store) -> (tempfile::TempDir, Store) {
    let (d, node) = open_temp();
    let mut doc = Vec::new();
    hub.write_snapshot(Scope::Day, &mut doc).unwrap();
    node.load_snapshot_from(&doc[..]).unwrap();
    (d, node)
}

/// Copies pages of `limit` until the history is whole; returns how many pages it took.
fn copy_history(hub: &Store, node: &Store, limit: usize) -> usize {
    let mut pages = 0;
    while let Some(at) = node.backfill_at().unwrap() {
        let page = hub
            .backfill_page(&at.entity, at.after.as_deref(), limit)
            .unwrap();
        assert!(node.merge_backfill(&at, &page).unwrap());
        pages += 1;
        assert!(pages < 10_000, "the copy does not move on");
    }
    pages
}

/// Copies whole pages until the copy reaches `entity`; returns its position there.
fn copy_until(hub: &Store, node: &Store, entity: &str) -> BackfillAt {
    loop {
        let at = node.backfill_at().unwrap().expect("the copy is not done");
        if at.entity == entity {
            return at;
        }
        let page = hub
            .backfill_page(&at.entity, at.after.as_deref(), 500)
            .unwrap();
        assert!(node.merge_backfill(&at, &page).unwrap());
    }
}

#[test]
fn a_node_that_opened_with_the_day_copies_the_history_in_pages_and_only_then_may_lead() {
    let (_h, hub) = hub_with_history(4);
    let (_n, node) = joined_with_the_day(&hub);
    // Open for business with today's order, without last week's.
    assert!(node.pull("order", "open1", None).is_ok());
    assert!(node.pull("order", "o1", None).is_err());
    assert!(!node.history_complete().unwrap());
    let refused = node.claim_hub(0).unwrap_err().to_string();
    assert!(refused.contains("history"), "{refused}");

    let pages = copy_history(&hub, &node, 3);
    assert!(pages > 10, "{pages} pages of 3");
    assert!(node.history_complete().unwrap());
    assert_eq!(node.digest().unwrap(), hub.digest().unwrap());
    assert_eq!(
        node.z_reports(None, 100).unwrap(),
        hub.z_reports(None, 100).unwrap(),
        "every Z is there to reprint"
    );
}

#[test]
fn a_page_read_before_an_order_was_deleted_does_not_bring_it_back() {
    let (_h, hub) = hub_with_history(2);
    let (_n, node) = joined_with_the_day(&hub);
    // After the node's snapshot the hub opens an order (its capsule not yet followed here).
    apply(
        &hub,
        vec![m(
            "order_header",
            Action::Insert,
            json!({"id": "late", "shift_id": "today", "opened_at": AT}),
        )],
    );
    let at = copy_until(&hub, &node, "order");
    let page = hub
        .backfill_page(&at.entity, at.after.as_deref(), 500)
        .unwrap();
    assert!(page.pull.items.iter().any(|i| i.id == "late"));
    // Then the cashier deletes it, and the node follows the delete before the page lands.
    let deleted = apply(
        &hub,
        vec![m("order_header", Action::Delete, json!({"id": "late"}))],
    );
    let gone: Vec<&Capsule> = deleted
        .capsules
        .iter()
        .map(|c| &c.capsule)
        .filter(|c| c.gone)
        .collect();
    assert_eq!(gone.len(), 1);
    node.apply_gone(gone[0]).unwrap();
    assert!(node.merge_backfill(&at, &page).unwrap());
    assert!(
        node.pull("order", "late", None).is_err(),
        "a deleted order came back from a page read before its delete"
    );
    copy_history(&hub, &node, 500);
    assert_eq!(node.digest().unwrap(), hub.digest().unwrap());
}

#[test]
fn a_page_read_before_a_change_keeps_the_change() {
    let (_h, hub) = hub_with_history(1);
    let (_n, node) = joined_with_the_day(&hub);
    let at = copy_until(&hub, &node, "order");
    let page = hub
        .backfill_page(&at.entity, at.after.as_deref(), 500)
        .unwrap();
    apply(
        &hub,
        vec![m(
            "order_header",
            Action::Merge,
            json!({"id": "open1", "table_label": "T9"}),
        )],
    );
    let change = hub
        .pull_many("order", &["open1".to_string()], None)
        .unwrap();
    node.merge_pulled(&change).unwrap();
    assert!(node.merge_backfill(&at, &page).unwrap());
    let held = node.pull("order", "open1", None).unwrap();
    assert_eq!(held.payload["table_label"], "T9");
}

#[test]
fn a_page_asked_for_before_a_new_snapshot_is_dropped() {
    let (_h, hub) = hub_with_history(2);
    let (_n, node) = joined_with_the_day(&hub);
    let at = copy_until(&hub, &node, "order");
    let page = hub
        .backfill_page(&at.entity, at.after.as_deref(), 500)
        .unwrap();
    // The node had to take a snapshot again (a gap): the copy starts over.
    let mut doc = Vec::new();
    hub.write_snapshot(Scope::Day, &mut doc).unwrap();
    node.load_snapshot_from(&doc[..]).unwrap();
    assert!(!node.merge_backfill(&at, &page).unwrap());
    assert!(node.pull("order", "o1", None).is_err());
    // A whole snapshot ends the copy at once.
    let mut doc = Vec::new();
    hub.write_snapshot(Scope::Full, &mut doc).unwrap();
    node.load_snapshot_from(&doc[..]).unwrap();
    assert!(node.history_complete().unwrap());
    assert_eq!(node.digest().unwrap(), hub.digest().unwrap());
}

#[test]
fn a_page_of_history_is_read_through_the_primary_key() {
    let (_h, hub) = hub_with_history(1);
    for e in hub.schema.entities.values() {
        let plan: Vec<String> = hub
            .with_reader(|c| {
                let mut st = c.prepare(&format!(
                    "EXPLAIN QUERY PLAN SELECT id FROM \"{}\" WHERE id > ?1 ORDER BY id LIMIT ?2",
                    e.table
                ))?;
                Ok(st
                    .query_map(["", "1"], |r| r.get::<_, String>(3))?
                    .collect::<Result<_, _>>()?)
            })
            .unwrap();
        let plan = plan.join("; ");
        assert!(
            plan.starts_with("SEARCH") && !plan.contains("TEMP B-TREE"),
            "{}: {plan}",
            e.table
        );
    }
}
