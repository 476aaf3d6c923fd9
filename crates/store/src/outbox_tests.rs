//! A till's outbox against a real hub store: local-first writes, provisional numbers, the
//! drain's order, confirmation and pruning, pending writes surviving merges, rejections.

use std::sync::Arc;

use capsule_protocol::{Action, Mutation, MutationBatch, MutationStatus, Schema};
use serde_json::{Value, json};

use crate::{ApplyMode, Durability, Store};

const T: &str = "2026-11-24T12:00:00Z";

pub(crate) struct Shop {
    pub _dir: tempfile::TempDir,
    pub hub: Store,
    pub till: Store,
}

pub(crate) fn shop() -> Shop {
    let dir = tempfile::tempdir().unwrap();
    let schema = Arc::new(Schema::builtin());
    let hub = Store::open(dir.path().join("hub.sqlite3"), schema.clone()).unwrap();
    let till =
        Store::open_with(dir.path().join("till.sqlite3"), schema, Durability::Replica).unwrap();
    Shop {
        _dir: dir,
        hub,
        till,
    }
}

pub(crate) fn batch(muts: Vec<Mutation>) -> MutationBatch {
    MutationBatch {
        mutations: muts,
        source: None,
    }
}

pub(crate) fn m(table: &str, action: Action, row: Value) -> Mutation {
    Mutation::new(table, action, row)
}

pub(crate) fn line(id: &str, qty: i64) -> Mutation {
    m(
        "order_line",
        Action::Insert,
        json!({"id": id, "order_id": "o1", "name_en": "Hummus", "qty": qty, "unit_price": 1500, "created_at": T}),
    )
}

impl Shop {
    /// The hub writes directly (another till's sale reaching it).
    pub(crate) fn hub_writes(&self, muts: Vec<Mutation>) {
        self.hub
            .apply(
                &batch(muts),
                &ApplyMode::Authoritative {
                    source: "till-b".into(),
                },
            )
            .unwrap();
    }

    /// The till pulls every part of `ids` from the hub and merges, as its follow loop does.
    pub(crate) fn till_pulls(&self, entity: &str, ids: &[&str]) {
        let ids: Vec<String> = ids.iter().map(|s| s.to_string()).collect();
        let pull = self.hub.pull_many(entity, &ids, None).unwrap();
        self.till.merge_pulled(&pull).unwrap();
    }

    /// One drain step: send the oldest queued request to the hub and record the answer.
    pub(crate) fn drain_one(&self) -> bool {
        let Some(req) = self.till.outbox_next("till-a").unwrap() else {
            return false;
        };
        match self.hub.apply(
            &req.batch,
            &ApplyMode::Authoritative {
                source: "till-a".into(),
            },
        ) {
            Ok(a) => {
                self.till
                    .outbox_confirmed(&req.request, &a.results)
                    .unwrap();
            }
            Err(e) => {
                self.till
                    .outbox_rejected(&req.request, &e.to_string())
                    .unwrap();
            }
        }
        true
    }

    pub(crate) fn hub_version(&self) -> i64 {
        self.hub.meta_i64(crate::meta::VERSION).unwrap()
    }
}

pub(crate) fn setup(s: &Shop) {
    // Shift and order exist at the hub and on the till.
    s.hub_writes(vec![
        m(
            "pos_shift",
            Action::Insert,
            json!({"id": "s1", "node_id": "till-a", "cashier": "Mona", "opened_at": T}),
        ),
        m(
            "order_header",
            Action::Insert,
            json!({"id": "o1", "shift_id": "s1", "opened_at": T, "tax_rate_bp": 1500}),
        ),
    ]);
    s.till.load_snapshot(&s.hub.snapshot().unwrap()).unwrap();
}

#[test]
fn a_local_write_is_on_the_till_at_once_and_a_repeat_is_a_duplicate() {
    let s = shop();
    setup(&s);
    let b = batch(vec![line("l1", 2)]);
    let a = s.till.apply_local(&b, "A").unwrap();
    assert_eq!(a.results[0].status, MutationStatus::Applied);
    let totals = s.till.pull("order", "o1", Some("totals")).unwrap().payload;
    assert_eq!(
        totals["subtotal"], 3000,
        "the till derives its own order's totals"
    );
    let again = s.till.apply_local(&b, "A").unwrap();
    assert_eq!(again.results[0].status, MutationStatus::Duplicate);
    assert_eq!(s.till.outbox_counts().unwrap(), (1, 0));
}

#[test]
fn orders_opened_on_a_till_get_provisional_numbers_until_the_hub_numbers_them() {
    let s = shop();
    setup(&s);
    for id in ["o2", "o3"] {
        s.till
            .apply_local(
                &batch(vec![m(
                    "order_header",
                    Action::Insert,
                    json!({"id": id, "shift_id": "s1", "opened_at": T}),
                )]),
                "B",
            )
            .unwrap();
    }
    let h = |store: &Store, id| store.pull("order", id, Some("header")).unwrap().payload;
    assert_eq!(h(&s.till, "o2")["provisional_no"], "B-1");
    assert_eq!(h(&s.till, "o3")["provisional_no"], "B-2");
    assert!(h(&s.till, "o2")["order_no"].is_null());
    while s.drain_one() {}
    assert_eq!(h(&s.hub, "o2")["order_no"], 2);
    assert_eq!(h(&s.hub, "o3")["order_no"], 3);
    assert_eq!(h(&s.hub, "o3")["provisional_no"], "B-2");
    s.till_pulls("order", &["o2", "o3"]);
    assert_eq!(h(&s.till, "o3")["order_no"], 3);
}

#[test]
fn confirmed_entries_stay_until_the_stream_brings_them_back() {
    let s = shop();
    setup(&s);
    s.till
        .apply_local(&batch(vec![line("l1", 2)]), "A")
        .unwrap();
    s.till
        .apply_local(&batch(vec![line("l2", 1)]), "A")
        .unwrap();
    // In order: the first request first.
    let first = s.till.outbox_next("till-a").unwrap().unwrap();
    assert_eq!(first.batch.mutations[0].row["id"], "l1");
    assert!(s.drain_one());
    let listed = s.till.outbox_list().unwrap();
    assert_eq!(listed[0].state, "sent");
    assert!(listed[0].hub_seq.is_some());
    assert_eq!(listed[1].state, "pending");
    // A hub answer alone does not end it; the stream reaching that version does.
    s.till
        .advance_position(1, listed[0].hub_seq.unwrap() - 1)
        .unwrap();
    assert_eq!(s.till.outbox_list().unwrap().len(), 2);
    s.till_pulls("order", &["o1"]);
    s.till.advance_position(2, s.hub_version()).unwrap();
    let left = s.till.outbox_list().unwrap();
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].state, "pending");
    // The forgotten entry's mid is still known: a late repeat is a duplicate.
    let repeat = MutationBatch {
        mutations: vec![first.batch.mutations[0].clone()],
        source: None,
    };
    assert_eq!(
        s.till.apply_local(&repeat, "A").unwrap().results[0].status,
        MutationStatus::Duplicate
    );
}

#[test]
fn a_merge_does_not_wipe_a_pending_local_change() {
    let s = shop();
    setup(&s);
    // Offline, the cashier adds a line and changes the table.
    s.till
        .apply_local(&batch(vec![line("mine", 2)]), "A")
        .unwrap();
    s.till
        .apply_local(
            &batch(vec![m(
                "order_header",
                Action::Merge,
                json!({"id": "o1", "table_label": "T9"}),
            )]),
            "A",
        )
        .unwrap();
    // Meanwhile another till adds a line at the hub; its capsule reaches this till.
    s.hub_writes(vec![m("order_line", Action::Insert, json!({"id": "theirs", "order_id": "o1", "name_en": "Tea", "qty": 1, "unit_price": 500, "created_at": T}))]);
    s.till_pulls("order", &["o1"]);
    let o = s.till.pull("order", "o1", None).unwrap().payload;
    let ids: Vec<&str> = o["lines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["id"].as_str().unwrap())
        .collect();
    assert!(ids.contains(&"mine") && ids.contains(&"theirs"), "{ids:?}");
    assert_eq!(o["table_label"], "T9");
    assert_eq!(o["subtotal"], 3500);
    // Once drained and back, the hub's rows say the same.
    while s.drain_one() {}
    s.till_pulls("order", &["o1"]);
    s.till.advance_position(9, s.hub_version()).unwrap();
    assert_eq!(s.till.outbox_counts().unwrap(), (0, 0));
    let hub = s.hub.pull("order", "o1", None).unwrap().payload;
    let till = s.till.pull("order", "o1", None).unwrap().payload;
    assert_eq!(hub, till);
}

#[test]
fn a_refused_request_is_set_aside_without_blocking_the_rest_and_leaves_the_screen() {
    let s = shop();
    setup(&s);
    // The hub deletes the order while the till, offline, adds a line to it.
    s.hub_writes(vec![m("order_header", Action::Delete, json!({"id": "o1"}))]);
    s.till
        .apply_local(&batch(vec![line("orphan", 1)]), "A")
        .unwrap();
    s.till
        .apply_local(
            &batch(vec![m(
                "pos_shift",
                Action::Merge,
                json!({"id": "s1", "cashier": "Mona A."}),
            )]),
            "A",
        )
        .unwrap();
    let req = s.till.outbox_next("till-a").unwrap().unwrap();
    let err = s
        .hub
        .apply(
            &req.batch,
            &ApplyMode::Authoritative {
                source: "till-a".into(),
            },
        )
        .unwrap_err();
    let touched = s
        .till
        .outbox_rejected(&req.request, &err.to_string())
        .unwrap();
    assert_eq!(touched, vec![("order".to_string(), "o1".to_string())]);
    let ids: Vec<String> = touched.iter().map(|t| t.1.clone()).collect();
    let pull = s.hub.pull_many("order", &ids, None).unwrap();
    s.till.merge_pulled_over_local(&pull).unwrap();
    assert!(
        s.till.table_rows("order_line").unwrap().is_empty(),
        "the refused line left the till"
    );
    // The next request goes through.
    assert!(s.drain_one());
    assert_eq!(
        s.hub.pull("shift", "s1", Some("header")).unwrap().payload["cashier"],
        "Mona A."
    );
    let listed = s.till.outbox_list().unwrap();
    let rejected: Vec<_> = listed.iter().filter(|e| e.state == "rejected").collect();
    assert_eq!(rejected.len(), 1);
    assert!(
        rejected[0]
            .error
            .as_deref()
            .unwrap()
            .contains("does not exist"),
        "{:?}",
        rejected[0]
    );
    // The manager retries it (still refused) or discards it.
    let mid = rejected[0].mid.clone();
    s.till.outbox_retry(&mid).unwrap();
    assert_eq!(
        s.till
            .outbox_next("till-a")
            .unwrap()
            .unwrap()
            .batch
            .mutations[0]
            .mid,
        mid
    );
    s.till
        .outbox_rejected(
            &s.till.outbox_next("till-a").unwrap().unwrap().request,
            "still refused",
        )
        .unwrap();
    s.till.outbox_discard(&mid).unwrap();
    assert!(
        s.till
            .outbox_list()
            .unwrap()
            .iter()
            .all(|e| e.state != "rejected")
    );
    assert!(s.till.outbox_discard(&mid).is_err());
}

#[test]
fn a_snapshot_keeps_pending_local_writes() {
    let s = shop();
    setup(&s);
    s.till
        .apply_local(&batch(vec![line("mine", 3)]), "A")
        .unwrap();
    s.till.load_snapshot(&s.hub.snapshot().unwrap()).unwrap();
    let lines = s.till.table_rows("order_line").unwrap();
    assert_eq!(lines.len(), 1);
    assert_eq!(lines[0]["qty"], 3);
}

#[test]
fn a_confirmed_write_overtaken_at_the_hub_is_not_put_back_over_the_newer_value() {
    let s = shop();
    setup(&s);
    s.till
        .apply_local(
            &batch(vec![m(
                "order_header",
                Action::Merge,
                json!({"id": "o1", "note": "mine"}),
            )]),
            "A",
        )
        .unwrap();
    assert!(s.drain_one());
    // Another till changes the same column after ours reached the hub.
    s.hub_writes(vec![m(
        "order_header",
        Action::Merge,
        json!({"id": "o1", "note": "theirs"}),
    )]);
    s.till_pulls("order", &["o1"]);
    assert_eq!(
        s.till.pull("order", "o1", Some("header")).unwrap().payload["note"],
        "theirs"
    );
}

#[test]
fn a_save_keeps_derived_values_until_the_rules_recompute_them() {
    let s = shop();
    setup(&s);
    s.hub_writes(vec![m(
        "order_payment",
        Action::Insert,
        json!({"id": "p1", "order_id": "o1", "method": "cash", "amount": 700, "paid_at": T}),
    )]);
    s.till_pulls("shift", &["s1"]);
    s.till
        .apply_local(
            &batch(vec![m(
                "pos_shift",
                Action::Save,
                json!({"id": "s1", "node_id": "till-a", "cashier": "Mona", "opened_at": T}),
            )]),
            "A",
        )
        .unwrap();
    // A till does not recompute shift totals from its partial copy; it keeps the hub's.
    assert_eq!(
        s.till.pull("shift", "s1", Some("totals")).unwrap().payload["cash_sales"],
        700
    );
}

/// A write from `source` to the hub, made when the writer had seen entity version `base`.
fn hub_write_from(s: &Shop, source: &str, base: Option<i64>, table: &str, row: Value) {
    let mut mutation = m(table, Action::Merge, row);
    mutation.base = base;
    s.hub
        .apply(
            &MutationBatch {
                mutations: vec![mutation],
                source: Some(source.into()),
            },
            &ApplyMode::Authoritative {
                source: source.into(),
            },
        )
        .unwrap();
}

fn kitchen_job(s: &Shop) -> i64 {
    s.hub_writes(vec![
        m("job_order_batch", Action::Insert, json!({"id": "b1", "order_id": "o1", "batch_no": 1, "created_at": T})),
        m("job_order_header", Action::Insert, json!({"id": "j1", "order_id": "o1", "batch_id": "b1", "station": "grill", "created_at": T})),
    ]);
    s.hub.pull("job", "j1", None).unwrap().v
}

fn job_status(s: &Shop) -> String {
    s.hub.pull("job", "j1", Some("status")).unwrap().payload["status"]
        .as_str()
        .unwrap()
        .to_string()
}

#[test]
fn a_stale_edit_never_moves_a_kitchen_job_backwards() {
    let s = shop();
    setup(&s);
    let seen = kitchen_job(&s);
    // Screen A marks it ready; screen B, offline since before, had marked it cooking.
    hub_write_from(
        &s,
        "kds-a",
        Some(seen),
        "job_order_header",
        json!({"id": "j1", "status": "ready"}),
    );
    hub_write_from(
        &s,
        "kds-b",
        Some(seen),
        "job_order_header",
        json!({"id": "j1", "status": "cooking"}),
    );
    assert_eq!(job_status(&s), "ready");
    assert_eq!(
        s.hub.pull("batch", "b1", Some("status")).unwrap().payload["status"],
        "ready"
    );
}

#[test]
fn a_screen_can_recall_its_own_bump_and_a_fresh_recall_is_deliberate() {
    let s = shop();
    setup(&s);
    let seen = kitchen_job(&s);
    // One screen's queued chain (all with the version it saw offline) applies in order.
    for status in ["cooking", "ready", "cooking"] {
        hub_write_from(
            &s,
            "kds-a",
            Some(seen),
            "job_order_header",
            json!({"id": "j1", "status": status}),
        );
    }
    assert_eq!(job_status(&s), "cooking");
    hub_write_from(
        &s,
        "kds-a",
        None,
        "job_order_header",
        json!({"id": "j1", "status": "ready"}),
    );
    // Another screen that has seen the ready state recalls it on purpose.
    let now = s.hub.pull("job", "j1", None).unwrap().v;
    hub_write_from(
        &s,
        "kds-b",
        Some(now),
        "job_order_header",
        json!({"id": "j1", "status": "cooking"}),
    );
    assert_eq!(job_status(&s), "cooking");
}

#[test]
fn a_paid_order_is_not_reopened_by_a_stale_edit_but_the_rest_of_it_applies() {
    let s = shop();
    setup(&s);
    let seen = s.hub.pull("order", "o1", None).unwrap().v;
    hub_write_from(
        &s,
        "till-a",
        Some(seen),
        "order_header",
        json!({"id": "o1", "status": "paid"}),
    );
    hub_write_from(
        &s,
        "till-b",
        Some(seen),
        "order_header",
        json!({"id": "o1", "status": "open", "note": "extra napkins"}),
    );
    let o = s
        .hub
        .pull("order", "o1", Some("status,header"))
        .unwrap()
        .payload;
    assert_eq!(o["status"], "paid");
    assert_eq!(o["note"], "extra napkins");
}

#[test]
fn quantities_from_two_offline_tills_are_set_not_added() {
    let s = shop();
    setup(&s);
    s.hub_writes(vec![line("l1", 1)]);
    let seen = s.hub.pull("order", "o1", None).unwrap().v;
    hub_write_from(
        &s,
        "till-a",
        Some(seen),
        "order_line",
        json!({"id": "l1", "qty": 3}),
    );
    hub_write_from(
        &s,
        "till-b",
        Some(seen),
        "order_line",
        json!({"id": "l1", "qty": 5}),
    );
    let o = s.hub.pull("order", "o1", None).unwrap().payload;
    assert_eq!(o["lines"][0]["qty"], 5);
    assert_eq!(o["item_count"], 5);
}

#[test]
fn a_till_stamps_its_queued_writes_with_the_version_it_saw() {
    let s = shop();
    setup(&s);
    let seen = s.till.pull("order", "o1", None).unwrap().v;
    s.till
        .apply_local(
            &batch(vec![m(
                "order_header",
                Action::Merge,
                json!({"id": "o1", "note": "x"}),
            )]),
            "A",
        )
        .unwrap();
    let queued = s.till.outbox_next("till-a").unwrap().unwrap();
    assert_eq!(queued.batch.mutations[0].base, Some(seen));
}

#[test]
fn only_the_hub_files_an_order_in_a_business_day() {
    let s = shop();
    setup(&s);
    s.till
        .apply_local(
            &batch(vec![m(
                "order_header",
                Action::Merge,
                json!({"id": "o1", "status": "paid"}),
            )]),
            "A",
        )
        .unwrap();
    // The till's version is where its snapshot stood: filing the order by it could put it in
    // a day that is already closed.
    let local = s.till.pull("order", "o1", Some("status")).unwrap();
    assert_eq!(local.payload["status"], "paid");
    assert_eq!(local.payload["finished_v"], Value::Null);
    while s.drain_one() {}
    let at_hub = s.hub.pull("order", "o1", Some("status")).unwrap();
    assert_eq!(at_hub.payload["finished_v"], json!(s.hub_version()));
}
