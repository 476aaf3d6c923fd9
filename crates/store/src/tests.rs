//! Store behaviour: the pipeline's versions, derived state and capsules; part picking; merges.

use std::collections::BTreeMap;

use capsule_protocol::{Action, BatchPull, Capsule, Mutation, MutationBatch, MutationStatus, Row};
use serde_json::{Value, json};

use crate::testutil::open_temp;
use crate::{Applied, ApplyMode, Store, StoreError};

fn hub_mode() -> ApplyMode {
    ApplyMode::Authoritative {
        source: "till-a".into(),
    }
}

fn m(table: &str, action: Action, row: Value) -> Mutation {
    Mutation {
        mid: uuid::Uuid::new_v4().to_string(),
        table: table.into(),
        action,
        row: row.as_object().expect("object").clone(),
        base: None,
        by: None,
    }
}

fn run(store: &Store, muts: Vec<Mutation>) -> Result<Applied, StoreError> {
    store.apply(
        &MutationBatch {
            mutations: muts,
            source: None,
        },
        &hub_mode(),
    )
}

const T: &str = "2026-11-24T12:00:00Z";

fn shift_and_order(store: &Store) {
    run(
        store,
        vec![
            m("pos_shift", Action::Insert, json!({"id": "s1", "node_id": "till-a", "cashier": "Mona", "opened_at": T, "opening_float": 20000})),
            m("order_header", Action::Insert, json!({"id": "o1", "order_no": 1, "shift_id": "s1", "opened_at": T, "tax_rate_bp": 1500, "table_label": "T4"})),
        ],
    )
    .unwrap();
}

fn line(id: &str, qty: i64, price: i64) -> Mutation {
    m(
        "order_line",
        Action::Insert,
        json!({"id": id, "order_id": "o1", "name_en": "Chicken shawarma", "name_ar": "شاورما دجاج",
               "qty": qty, "unit_price": price, "station": "grill", "created_at": T}),
    )
}

fn capsules(a: &Applied) -> Vec<&Capsule> {
    a.capsules.iter().map(|c| &c.capsule).collect()
}

#[test]
fn adding_a_line_updates_totals_in_the_same_commit_and_signals_lines_and_totals() {
    let (_d, store) = open_temp();
    shift_and_order(&store);
    let a = run(&store, vec![line("l1", 2, 1850)]).unwrap();
    let order = store.pull("order", "o1", Some("totals")).unwrap();
    assert_eq!(order.payload["subtotal"], 3700);
    assert_eq!(order.payload["tax_total"], 555);
    assert_eq!(order.payload["total"], 4255);
    assert_eq!(order.payload["item_count"], 2);
    let caps = capsules(&a);
    assert_eq!(caps.len(), 1, "{caps:?}");
    assert_eq!(caps[0].entity, "order");
    assert_eq!(caps[0].parts, ["lines", "totals"]);
    assert_eq!(caps[0].v, a.results[0].seq);
    assert_eq!(caps[0].source, "till-a");
}

#[test]
fn modifiers_add_their_price_and_zero_rated_lines_carry_no_tax() {
    let (_d, store) = open_temp();
    shift_and_order(&store);
    // 2 x (38.00 + 2.00 garlic sauce) standard, 3 x 3.00 water zero-rated, 15% VAT.
    let mut wrap = line("l1", 2, 3800);
    wrap.row.insert("modifier_price".into(), json!(200));
    let mut water = line("l2", 3, 300);
    water.row.insert("tax_class".into(), json!("zero"));
    run(&store, vec![wrap, water]).unwrap();
    let lines = store.pull("order", "o1", Some("lines")).unwrap();
    assert_eq!(lines.payload["lines"][0]["line_total"], 8000);
    let order = store.pull("order", "o1", Some("totals")).unwrap();
    assert_eq!(order.payload["subtotal"], 8900);
    assert_eq!(
        order.payload["tax_total"], 1200,
        "15% of the 80.00 standard share only"
    );
    assert_eq!(order.payload["total"], 10100);

    // An order discount is shared pro rata: 8.90 off leaves 72.00 standard, tax 10.80.
    run(
        &store,
        vec![m(
            "order_header",
            Action::Merge,
            json!({"id": "o1", "order_discount": 890}),
        )],
    )
    .unwrap();
    let order = store.pull("order", "o1", Some("totals")).unwrap();
    assert_eq!(order.payload["tax_total"], 1080);
    assert_eq!(order.payload["total"], 8010 + 1080);

    // All zero-rated: no tax at all.
    run(
        &store,
        vec![m("order_line", Action::Delete, json!({"id": "l1"}))],
    )
    .unwrap();
    let order = store.pull("order", "o1", Some("totals")).unwrap();
    assert_eq!(order.payload["tax_total"], 0);
}

#[test]
fn versions_are_monotonic_and_stream_sequence_is_contiguous() {
    let (_d, store) = open_temp();
    shift_and_order(&store);
    run(&store, vec![line("l1", 1, 500), line("l2", 1, 700)]).unwrap();
    let log = store.capsules_since(0, 100).unwrap();
    let seqs: Vec<i64> = log.iter().map(|c| c.seq).collect();
    assert_eq!(seqs, (1..=seqs.len() as i64).collect::<Vec<_>>());
    let vs: Vec<i64> = log.iter().map(|c| c.capsule.v).collect();
    assert!(vs.windows(2).all(|w| w[0] <= w[1]), "{vs:?}");
}

#[test]
fn a_repeated_mid_is_a_duplicate_and_changes_nothing() {
    let (_d, store) = open_temp();
    shift_and_order(&store);
    let mutation = line("l1", 1, 1000);
    let first = run(&store, vec![mutation.clone()]).unwrap();
    let before = store.digest().unwrap();
    let again = run(&store, vec![mutation]).unwrap();
    assert_eq!(again.results[0].status, MutationStatus::Duplicate);
    assert_eq!(again.results[0].seq, first.results[0].seq);
    assert!(again.capsules.is_empty());
    assert_eq!(store.digest().unwrap(), before);
}

#[test]
fn a_failing_mutation_rolls_back_the_whole_request() {
    let (_d, store) = open_temp();
    shift_and_order(&store);
    let before = store.digest().unwrap();
    let err = run(
        &store,
        vec![
            line("l1", 1, 1000),
            m(
                "order_header",
                Action::Insert,
                json!({"id": "o1", "order_no": 2, "shift_id": "s1", "opened_at": T}),
            ),
        ],
    )
    .unwrap_err();
    assert!(
        matches!(err, StoreError::Conflict(ref s) if s.contains("mutation 1") && s.contains("already exists")),
        "{err}"
    );
    assert_eq!(store.digest().unwrap(), before);
    assert!(
        store.pull("order", "o1", Some("lines")).unwrap().payload["lines"]
            .as_array()
            .unwrap()
            .is_empty()
    );
}

#[test]
fn merge_of_missing_row_and_orphan_child_are_refused() {
    let (_d, store) = open_temp();
    let err = run(
        &store,
        vec![m(
            "order_header",
            Action::Merge,
            json!({"id": "nope", "note": "x"}),
        )],
    )
    .unwrap_err();
    assert!(matches!(err, StoreError::NotFound(_)), "{err}");
    let err = run(&store, vec![line("l1", 1, 100)]).unwrap_err();
    assert!(
        matches!(err, StoreError::MissingParent(ref s) if s.contains("does not exist")),
        "{err}"
    );
}

#[test]
fn a_merge_signals_only_the_parts_whose_columns_changed() {
    let (_d, store) = open_temp();
    shift_and_order(&store);
    let a = run(
        &store,
        vec![m(
            "order_header",
            Action::Merge,
            json!({"id": "o1", "status": "sent", "updated_at": T}),
        )],
    )
    .unwrap();
    assert_eq!(capsules(&a)[0].parts, ["status"]);
    // Writing the same values again changes nothing: its capsule names no part to pull (it
    // only carries the version its mid is journaled at).
    let a = run(
        &store,
        vec![m(
            "order_header",
            Action::Merge,
            json!({"id": "o1", "status": "sent"}),
        )],
    )
    .unwrap();
    assert_eq!(capsules(&a).len(), 1);
    assert!(capsules(&a)[0].parts.is_empty());
}

#[test]
fn capsules_carry_no_row_data() {
    let (_d, store) = open_temp();
    shift_and_order(&store);
    let a = run(&store, vec![line("l1", 1, 1000)]).unwrap();
    let text = serde_json::to_string(&a.capsules[0].capsule).unwrap();
    assert!(
        !text.contains("shawarma") && !text.contains("1000"),
        "{text}"
    );
    let keys: Vec<String> = serde_json::from_str::<Row>(&text)
        .unwrap()
        .keys()
        .cloned()
        .collect();
    assert_eq!(keys, ["entity", "id", "parts", "source", "ts", "v"]);
}

#[test]
fn deleting_an_order_removes_its_lines_and_says_it_is_gone() {
    let (_d, store) = open_temp();
    shift_and_order(&store);
    run(&store, vec![line("l1", 1, 1000)]).unwrap();
    let a = run(
        &store,
        vec![m("order_header", Action::Delete, json!({"id": "o1"}))],
    )
    .unwrap();
    let gone = capsules(&a)
        .into_iter()
        .find(|c| c.entity == "order")
        .unwrap()
        .clone();
    assert!(gone.gone && gone.parts.is_empty());
    assert!(store.table_rows("order_line").unwrap().is_empty());
    assert!(matches!(
        store.pull("order", "o1", None),
        Err(StoreError::NotFound(_))
    ));
    // The shift no longer counts the order.
    assert_eq!(
        store.pull("shift", "s1", Some("totals")).unwrap().payload["orders_count"],
        0
    );
}

#[test]
fn payments_flow_into_order_and_shift_totals() {
    let (_d, store) = open_temp();
    shift_and_order(&store);
    run(&store, vec![line("l1", 2, 2000)]).unwrap(); // 4000 + 15% = 4600
    let a = run(
        &store,
        vec![m("order_payment", Action::Insert, json!({"id": "p1", "order_id": "o1", "method": "cash", "amount": 4600, "tendered": 5000, "paid_at": T}))],
    )
    .unwrap();
    let order = store.pull("order", "o1", Some("totals,payments")).unwrap();
    assert_eq!(order.payload["paid_total"], 4600);
    assert_eq!(order.payload["balance_due"], 0);
    assert_eq!(order.payload["payments"][0]["change_due"], 400);
    let shift = store.pull("shift", "s1", Some("totals")).unwrap();
    assert_eq!(shift.payload["cash_sales"], 4600);
    assert_eq!(shift.payload["expected_cash"], 24600);
    let entities: Vec<&str> = capsules(&a).iter().map(|c| c.entity.as_str()).collect();
    assert_eq!(entities, ["order", "shift"]);
}

fn kitchen(store: &Store) {
    shift_and_order(store);
    run(
        store,
        vec![
            m("job_order_batch", Action::Insert, json!({"id": "b1", "order_id": "o1", "batch_no": 1, "created_at": T})),
            m("job_order_header", Action::Insert, json!({"id": "j1", "order_id": "o1", "batch_id": "b1", "station": "grill", "created_at": T})),
            m("job_order_header", Action::Insert, json!({"id": "j2", "order_id": "o1", "batch_id": "b1", "station": "cold", "created_at": T})),
            m("job_order_detail", Action::Insert, json!({"id": "d1", "job_id": "j1", "name_en": "Mixed grill", "name_ar": "مشاوي مشكلة", "qty": 1})),
        ],
    )
    .unwrap();
}

#[test]
fn bumping_the_last_job_makes_the_batch_ready() {
    let (_d, store) = open_temp();
    kitchen(&store);
    let batch = store.pull("batch", "b1", Some("status")).unwrap();
    assert_eq!(
        (
            batch.payload["status"].clone(),
            batch.payload["jobs_total"].clone()
        ),
        (json!("queued"), json!(2))
    );
    assert_eq!(batch.payload["stations"], "cold,grill");

    run(
        &store,
        vec![m(
            "job_order_header",
            Action::Merge,
            json!({"id": "j1", "status": "ready"}),
        )],
    )
    .unwrap();
    assert_eq!(
        store.pull("batch", "b1", Some("status")).unwrap().payload["status"],
        "cooking"
    );

    let a = run(
        &store,
        vec![m(
            "job_order_header",
            Action::Merge,
            json!({"id": "j2", "status": "ready"}),
        )],
    )
    .unwrap();
    let batch = store.pull("batch", "b1", None).unwrap();
    assert_eq!(batch.payload["status"], "ready");
    assert_eq!(batch.payload["jobs_ready"], 2);
    assert!(batch.payload["ready_at"].is_string());
    let sig: Vec<(&str, Vec<String>)> = capsules(&a)
        .iter()
        .map(|c| (c.entity.as_str(), c.parts.clone()))
        .collect();
    assert_eq!(
        sig,
        [
            ("job", vec!["status".to_string()]),
            ("batch", vec!["handoff".to_string(), "status".to_string()])
        ]
    );

    // Expo serves it; later kitchen activity on the batch cannot pull it back.
    run(
        &store,
        vec![m(
            "job_order_batch",
            Action::Merge,
            json!({"id": "b1", "status": "served"}),
        )],
    )
    .unwrap();
    run(
        &store,
        vec![m(
            "job_order_header",
            Action::Merge,
            json!({"id": "j2", "status": "cooking"}),
        )],
    )
    .unwrap();
    assert_eq!(
        store.pull("batch", "b1", Some("status")).unwrap().payload["status"],
        "served"
    );
}

#[test]
fn batch_status_that_follows_jobs_cannot_be_written() {
    let (_d, store) = open_temp();
    kitchen(&store);
    let err = run(
        &store,
        vec![m(
            "job_order_batch",
            Action::Merge,
            json!({"id": "b1", "status": "ready"}),
        )],
    )
    .unwrap_err();
    assert!(
        matches!(err, StoreError::Invalid(ref s) if s.contains("follows from its jobs")),
        "{err}"
    );
}

#[test]
fn job_progress_counts_done_items() {
    let (_d, store) = open_temp();
    kitchen(&store);
    let a = run(
        &store,
        vec![m(
            "job_order_detail",
            Action::Merge,
            json!({"id": "d1", "status": "done"}),
        )],
    )
    .unwrap();
    let job = store.pull("job", "j1", Some("progress")).unwrap();
    assert_eq!(
        (
            job.payload["items_done"].clone(),
            job.payload["items_total"].clone()
        ),
        (json!(1), json!(1))
    );
    assert_eq!(capsules(&a)[0].parts, ["items", "progress"]);
}

#[test]
fn pick_parts_returns_exactly_the_parts_columns_with_versions() {
    let (_d, store) = open_temp();
    shift_and_order(&store);
    run(&store, vec![line("l1", 1, 1000)]).unwrap();
    let p = store.pull("order", "o1", Some("status,lines")).unwrap();
    let keys: Vec<&str> = p.payload.keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        [
            "closed_at",
            "finished_v",
            "lines",
            "status",
            "updated_at",
            "void_reason"
        ]
    );
    assert_eq!(p.pv.keys().collect::<Vec<_>>(), ["lines", "status"]);
    assert!(p.pv["lines"] > p.pv["status"]);
    assert_eq!(p.v, p.pv["lines"]);
    let l = p.payload["lines"][0].as_object().unwrap();
    assert_eq!(l["name_ar"], "شاورما دجاج");
    // A child row carries its own version: the write that last changed it.
    assert_eq!(l["_v"], p.pv["lines"]);
    assert!(matches!(
        store.pull("order", "o1", Some("colour")),
        Err(StoreError::Invalid(_))
    ));
    assert!(matches!(
        store.pull("menu", "o1", None),
        Err(StoreError::NotFound(_))
    ));
}

#[test]
fn batch_pull_reports_missing_ids() {
    let (_d, store) = open_temp();
    kitchen(&store);
    let ids = vec!["j1".to_string(), "nope".to_string(), "j2".to_string()];
    let b = store.pull_many("job", &ids, Some("status")).unwrap();
    assert_eq!(
        b.items.iter().map(|i| i.id.as_str()).collect::<Vec<_>>(),
        ["j1", "j2"]
    );
    assert_eq!(b.missing, ["nope"]);
}

fn replica_of(hub: &Store) -> (tempfile::TempDir, Store) {
    let (d, r) = open_temp();
    r.load_snapshot(&hub.snapshot().unwrap()).unwrap();
    assert_eq!(r.digest().unwrap(), hub.digest().unwrap());
    (d, r)
}

fn pull_all(hub: &Store, entity: &str, id: &str, parts: Option<&str>) -> BatchPull {
    hub.pull_many(entity, &[id.to_string()], parts).unwrap()
}

#[test]
fn merge_is_idempotent_and_converges() {
    let (_d, hub) = open_temp();
    shift_and_order(&hub);
    let (_r, replica) = replica_of(&hub);
    run(&hub, vec![line("l1", 3, 900)]).unwrap();
    let pull = pull_all(&hub, "order", "o1", Some("lines,totals"));
    let first = replica.merge_pulled(&pull).unwrap();
    assert_eq!(first.changed.len(), 1);
    assert_eq!(replica.digest().unwrap(), hub.digest().unwrap());
    let second = replica.merge_pulled(&pull).unwrap();
    assert!(second.changed.is_empty());
    assert_eq!(second.stale, 1);
    assert_eq!(replica.digest().unwrap(), hub.digest().unwrap());
}

#[test]
fn an_older_payload_never_overwrites_a_newer_part() {
    let (_d, hub) = open_temp();
    shift_and_order(&hub);
    let (_r, replica) = replica_of(&hub);
    run(
        &hub,
        vec![m(
            "order_header",
            Action::Merge,
            json!({"id": "o1", "status": "sent"}),
        )],
    )
    .unwrap();
    let old = pull_all(&hub, "order", "o1", Some("status"));
    run(
        &hub,
        vec![m(
            "order_header",
            Action::Merge,
            json!({"id": "o1", "status": "paid"}),
        )],
    )
    .unwrap();
    let new = pull_all(&hub, "order", "o1", Some("status"));
    replica.merge_pulled(&new).unwrap();
    replica.merge_pulled(&old).unwrap();
    assert_eq!(
        replica.pull("order", "o1", Some("status")).unwrap().payload["status"],
        "paid"
    );
    assert_eq!(replica.digest().unwrap(), hub.digest().unwrap());
}

#[test]
fn a_partial_pull_does_not_hide_a_pending_change_to_another_part() {
    // status changes at v1, totals at v2, status again at v3. The replica merges the status
    // pull first; the capsule for totals (v2) must still be seen as news.
    let (_d, hub) = open_temp();
    shift_and_order(&hub);
    let (_r, replica) = replica_of(&hub);
    run(
        &hub,
        vec![m(
            "order_header",
            Action::Merge,
            json!({"id": "o1", "status": "sent"}),
        )],
    )
    .unwrap();
    let totals_change = run(
        &hub,
        vec![m(
            "order_header",
            Action::Merge,
            json!({"id": "o1", "order_discount": 100}),
        )],
    )
    .unwrap();
    run(
        &hub,
        vec![m(
            "order_header",
            Action::Merge,
            json!({"id": "o1", "status": "paid"}),
        )],
    )
    .unwrap();
    replica
        .merge_pulled(&pull_all(&hub, "order", "o1", Some("status")))
        .unwrap();
    let v2 = totals_change.capsules[0].capsule.v;
    let local = replica.part_versions("order", "o1").unwrap().unwrap();
    assert!(
        local["totals"] < v2,
        "totals must still look stale: {local:?}"
    );
    replica
        .merge_pulled(&pull_all(&hub, "order", "o1", Some("totals")))
        .unwrap();
    assert_eq!(replica.digest().unwrap(), hub.digest().unwrap());
}

#[test]
fn a_new_entity_and_a_delete_arrive_through_merges() {
    let (_d, hub) = open_temp();
    shift_and_order(&hub);
    let (_r, replica) = replica_of(&hub);
    kitchen_only(&hub);
    for (entity, id) in [("batch", "b1"), ("job", "j1"), ("job", "j2")] {
        replica
            .merge_pulled(&pull_all(&hub, entity, id, None))
            .unwrap();
    }
    assert_eq!(replica.digest().unwrap(), hub.digest().unwrap());
    let a = run(
        &hub,
        vec![m("job_order_header", Action::Delete, json!({"id": "j2"}))],
    )
    .unwrap();
    for c in capsules(&a) {
        if c.gone {
            assert!(replica.apply_gone(c).unwrap().is_some());
            assert!(
                replica.apply_gone(c).unwrap().is_none(),
                "second delete is a no-op"
            );
        } else {
            replica
                .merge_pulled(&pull_all(&hub, &c.entity, &c.id, Some(&c.parts.join(","))))
                .unwrap();
        }
    }
    assert_eq!(replica.digest().unwrap(), hub.digest().unwrap());
    // A pull for an id the hub no longer has deletes it here too.
    let missing = BatchPull {
        entity: "job".into(),
        parts: vec!["status".into()],
        items: vec![],
        missing: vec!["j1".into()],
    };
    assert!(replica.merge_pulled(&missing).unwrap().changed[0].gone);
}

fn kitchen_only(store: &Store) {
    run(
        store,
        vec![
            m("job_order_batch", Action::Insert, json!({"id": "b1", "order_id": "o1", "batch_no": 1, "created_at": T})),
            m("job_order_header", Action::Insert, json!({"id": "j1", "order_id": "o1", "batch_id": "b1", "station": "grill", "created_at": T})),
            m("job_order_header", Action::Insert, json!({"id": "j2", "order_id": "o1", "batch_id": "b1", "station": "cold", "created_at": T})),
        ],
    )
    .unwrap();
}

#[test]
fn a_local_write_shows_at_once_and_the_hub_version_converges() {
    let (_d, hub) = open_temp();
    shift_and_order(&hub);
    let (_r, till) = replica_of(&hub);
    let batch = MutationBatch {
        mutations: vec![line("l1", 2, 1500)],
        source: Some("till-a".into()),
    };
    let local = till.apply_local(&batch, "A").unwrap();
    assert_eq!(local.capsules[0].parts, ["lines", "totals"]);
    assert_eq!(
        till.pull("order", "o1", Some("totals")).unwrap().payload["subtotal"],
        3000
    );
    let confirmed = hub.apply(&batch, &hub_mode()).unwrap();
    // Local versions were not advanced, so the hub's capsule still pulls and converges.
    let before: BTreeMap<String, i64> = till.part_versions("order", "o1").unwrap().unwrap();
    assert!(before["lines"] < confirmed.results[0].seq);
    till.merge_pulled(&pull_all(&hub, "order", "o1", Some("lines,totals")))
        .unwrap();
    assert_eq!(till.digest().unwrap(), hub.digest().unwrap());
    // Submitting it again is a harmless duplicate.
    let again = till.apply_local(&batch, "A").unwrap();
    assert_eq!(again.results[0].status, MutationStatus::Duplicate);
    assert_eq!(till.digest().unwrap(), hub.digest().unwrap());
}

#[test]
fn reopening_keeps_node_id_and_data() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("n.sqlite3");
    let schema = std::sync::Arc::new(capsule_protocol::Schema::builtin());
    let (id, digest) = {
        let s = Store::open(&path, schema.clone()).unwrap();
        shift_and_order(&s);
        (s.node_id().to_string(), s.digest().unwrap())
    };
    let s = Store::open(&path, schema).unwrap();
    assert_eq!(s.node_id(), id);
    assert_eq!(s.digest().unwrap(), digest);
}

#[test]
fn send_to_kitchen_makes_one_batch_per_round_and_a_job_per_station() {
    let (_d, store) = open_temp();
    shift_and_order(&store);
    run(
        &store,
        vec![line("l1", 1, 1000), {
            let mut cold = line("l2", 2, 500);
            cold.row.insert("station".into(), json!("cold"));
            cold
        }],
    )
    .unwrap();
    let (b1, plan) = store.plan_send_to_kitchen("o1").unwrap();
    run(&store, plan).unwrap();
    let batch = store.pull("batch", &b1, None).unwrap();
    assert_eq!(batch.payload["kind"], "initial");
    assert_eq!(batch.payload["jobs_total"], 2);
    assert_eq!(batch.payload["stations"], "cold,grill");
    assert_eq!(
        store.pull("order", "o1", Some("status")).unwrap().payload["status"],
        "sent"
    );
    // Nothing new: nothing to send.
    assert!(matches!(
        store.plan_send_to_kitchen("o1"),
        Err(StoreError::Conflict(_))
    ));
    // An addition is its own round.
    run(&store, vec![line("l3", 1, 700)]).unwrap();
    let (b2, plan) = store.plan_send_to_kitchen("o1").unwrap();
    run(&store, plan).unwrap();
    let batch2 = store.pull("batch", &b2, None).unwrap();
    assert_eq!(
        (
            batch2.payload["kind"].clone(),
            batch2.payload["batch_no"].clone()
        ),
        (json!("addition"), json!(2))
    );
    assert_eq!(batch2.payload["jobs_total"], 1);
}

#[test]
fn a_light_snapshot_carries_open_business_only() {
    let (_d, store) = open_temp();
    kitchen(&store);
    run(&store, vec![line("l1", 1, 1000)]).unwrap();
    run(
        &store,
        vec![
            m("order_header", Action::Insert, json!({"id": "o2", "order_no": 2, "shift_id": "s1", "opened_at": T, "status": "paid"})),
            m("order_line", Action::Insert, json!({"id": "l9", "order_id": "o2", "name_en": "Tea", "qty": 1, "unit_price": 900, "created_at": T})),
            m("job_order_header", Action::Merge, json!({"id": "j2", "status": "ready"})),
        ],
    )
    .unwrap();
    let light = store.snapshot_with(crate::Scope::Light).unwrap();
    let ids = |t: &str| {
        light.tables[t]
            .iter()
            .map(|r| r["id"].as_str().unwrap().to_string())
            .collect::<Vec<_>>()
    };
    assert_eq!(ids("order_header"), ["o1"]);
    assert_eq!(ids("order_line"), ["l1"]);
    assert_eq!(ids("job_order_header"), ["j1"]);
    assert_eq!(ids("job_order_detail"), ["d1"]);
    assert_eq!(ids("job_order_batch"), ["b1"]);
    assert_eq!(ids("pos_shift"), ["s1"]);
    assert_eq!(light.seq, store.snapshot().unwrap().seq);
    assert_eq!(store.snapshot().unwrap().tables["order_header"].len(), 2);
    // Open business is found through its partial index, not by reading every finished row
    // of the day (a till opening on a busy evening would wait for the whole day).
    for table in [
        "order_header",
        "job_order_header",
        "job_order_batch",
        "pos_shift",
    ] {
        let plan = query_plan(&store, table, crate::Scope::Light);
        assert!(
            plan.contains(&format!("INDEX light_{table}")),
            "{table}: {plan}"
        );
    }
}

/// SQLite's plan for reading `table`'s rows in `scope`, its steps joined by "; ".
fn query_plan(store: &Store, table: &str, scope: crate::Scope) -> String {
    store
        .with_reader(|c| {
            let t = &store.schema.tables[table];
            let cond = crate::scope::condition(&store.schema, t, scope);
            let mut stmt = c.prepare(&format!("EXPLAIN QUERY PLAN {}", t.select_where(&cond)))?;
            let rows = stmt.query_map([], |r| r.get::<_, String>(3))?;
            Ok(rows.collect::<std::result::Result<Vec<_>, _>>()?.join("; "))
        })
        .unwrap()
}

#[test]
fn a_rounds_jobs_are_found_through_their_orders_index() {
    let (_d, store) = open_temp();
    let plan: Vec<String> = store
        .with_reader(|c| {
            Ok(c.prepare(&format!(
                "EXPLAIN QUERY PLAN {}",
                crate::derive::JOBS_OF_ROUND
            ))?
            .query_map(["o1", "b1"], |r| r.get::<_, String>(3))?
            .collect::<Result<_, _>>()?)
        })
        .unwrap();
    assert_eq!(
        plan,
        ["SEARCH job_order_header USING INDEX idx_job_order_header_order_id (order_id=?)"]
    );
}

#[test]
fn the_working_set_reads_through_indexes() {
    let (_d, store) = open_temp();
    // Every table that grows with the shop's history is reached by index lookups in the
    // light and screen scopes: "SCAN <table>" would read a year of orders per screen.
    for scope in [
        crate::Scope::Light,
        crate::Scope::Screens,
        crate::Scope::Day,
    ] {
        for t in store.schema.tables_parent_first() {
            let plan = query_plan(&store, &t.name, scope);
            let configuration = [
                "shop_settings",
                "menu_category",
                "menu_item",
                "menu_modifier",
                "printer",
                "device",
                "staff",
                "staff_pin",
                "staff_role",
                // One row per node and member of staff: bounded by the shop.
                "staff_lockout",
                // One row per node and printer.
                "printer_status",
            ];
            if configuration.contains(&t.name.as_str()) {
                continue;
            }
            let scans: Vec<&str> = plan
                .split("; ")
                // The one scan allowed: the newest Z report, the first entry of its index.
                .filter(|step| {
                    step.starts_with("SCAN ")
                        && !step.starts_with("SCAN (")
                        && *step != "SCAN z_report USING INDEX idx_z_report_number"
                })
                .collect();
            assert!(scans.is_empty(), "{scope:?} {}: {plan}", t.name);
        }
    }
}

#[test]
fn the_capsule_log_can_be_pruned_and_reports_its_oldest_entry() {
    let (_d, store) = open_temp();
    kitchen(&store);
    let last = store.capsules_since(0, 1000).unwrap().last().unwrap().seq;
    assert_eq!(store.oldest_logged().unwrap(), 1);
    store.prune_log(last - 2).unwrap();
    assert_eq!(store.log_len().unwrap(), 2);
    assert_eq!(store.oldest_logged().unwrap(), last - 1);
    // Sequence numbers keep counting after a prune.
    let a = run(
        &store,
        vec![m(
            "order_header",
            Action::Merge,
            json!({"id": "o1", "note": "x"}),
        )],
    )
    .unwrap();
    assert_eq!(a.capsules[0].seq, last + 1);
}

#[test]
fn the_hub_numbers_orders_that_come_without_a_number() {
    let (_d, store) = open_temp();
    shift_and_order(&store); // order_no 1, given by the client
    run(
        &store,
        vec![
            m(
                "order_header",
                Action::Insert,
                json!({"id": "o2", "shift_id": "s1", "opened_at": T}),
            ),
            m(
                "order_header",
                Action::Insert,
                json!({"id": "o3", "shift_id": "s1", "opened_at": T}),
            ),
        ],
    )
    .unwrap();
    let no =
        |id: &str| store.pull("order", id, Some("header")).unwrap().payload["order_no"].clone();
    assert_eq!((no("o2"), no("o3")), (json!(2), json!(3)));
}

#[test]
fn a_till_never_recomputes_shop_wide_totals_from_its_partial_copy() {
    // A light till holds the open order only; the paid one is on the hub alone.
    let (_d, hub) = open_temp();
    shift_and_order(&hub);
    run(
        &hub,
        vec![
            m("order_header", Action::Insert, json!({"id": "o2", "order_no": 2, "shift_id": "s1", "opened_at": T})),
            m("order_payment", Action::Insert, json!({"id": "p2", "order_id": "o2", "method": "cash", "amount": 5000, "paid_at": T})),
            m("order_header", Action::Merge, json!({"id": "o2", "status": "paid"})),
        ],
    )
    .unwrap();
    let (_r, till) = open_temp();
    till.load_snapshot(&hub.snapshot_with(crate::Scope::Light).unwrap())
        .unwrap();
    let close = MutationBatch {
        mutations: vec![m(
            "pos_shift",
            Action::Merge,
            json!({"id": "s1", "status": "closed", "counted_cash": 25000}),
        )],
        source: None,
    };
    hub.apply(&close, &hub_mode()).unwrap();
    till.apply_local(&close, "A").unwrap();
    let on_till = till.pull("shift", "s1", Some("totals,status")).unwrap();
    assert_eq!(on_till.payload["status"], "closed");
    assert_eq!(
        on_till.payload["cash_sales"], 5000,
        "the till keeps the hub's total, not one from its partial copy"
    );
    assert_eq!(on_till.payload["expected_cash"], 25000);
}

#[test]
fn sending_the_same_round_twice_cooks_it_once() {
    // The cashier's first "send" reached the hub but the answer was lost; the retry plans
    // from the till's copy, which still shows the lines as new.
    let (_d, hub) = open_temp();
    shift_and_order(&hub);
    run(&hub, vec![line("l1", 1, 1000)]).unwrap();
    let (_r, till) = open_temp();
    till.load_snapshot(&hub.snapshot().unwrap()).unwrap();
    let (b1, first) = till.plan_send_to_kitchen("o1").unwrap();
    run(&hub, first).unwrap();
    let (b2, retry) = till.plan_send_to_kitchen("o1").unwrap();
    assert_eq!(b1, b2);
    let again = run(&hub, retry).unwrap();
    assert!(
        again
            .results
            .iter()
            .all(|r| r.status == MutationStatus::Duplicate)
    );
    assert_eq!(hub.table_rows("job_order_batch").unwrap().len(), 1);
    assert_eq!(hub.table_rows("job_order_header").unwrap().len(), 1);
}

#[test]
fn a_bad_request_in_a_group_commit_rolls_back_alone_and_the_others_commit() {
    let (_d, store) = open_temp();
    shift_and_order(&store);
    let good1 = MutationBatch {
        mutations: vec![line("l1", 1, 1000)],
        source: Some("till-a".into()),
    };
    // Its first mutation is fine; its second inserts an existing id: the whole request fails.
    let bad = MutationBatch {
        mutations: vec![line("l2", 5, 1000), line("l1", 1, 999)],
        source: Some("till-b".into()),
    };
    let good2 = MutationBatch {
        mutations: vec![line("l3", 2, 500)],
        source: Some("till-c".into()),
    };
    // The same write sent twice in one group (a retry that raced its first try).
    let retry = good2.clone();
    let answers = store.apply_group(&[
        (&good1, "till-a"),
        (&bad, "till-b"),
        (&good2, "till-c"),
        (&retry, "till-c"),
    ]);
    assert_eq!(answers.len(), 4);
    let first = answers[0].as_ref().expect("first request commits");
    assert!(
        matches!(answers[1], Err(StoreError::Conflict(_))),
        "{:?}",
        answers[1]
    );
    let third = answers[2].as_ref().expect("third request commits");
    let again = answers[3].as_ref().expect("the retry is answered");
    assert_eq!(again.results[0].status, MutationStatus::Duplicate);
    assert_eq!(again.results[0].seq, third.results[0].seq);
    // The failed request left no version gap, no line and no change in the totals.
    assert_eq!(third.results[0].seq, first.results[0].seq + 1);
    let lines = store.pull("order", "o1", Some("lines")).unwrap();
    let ids: Vec<&str> = lines.payload["lines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["l1", "l3"]);
    let totals = store.pull("order", "o1", Some("totals")).unwrap();
    assert_eq!(totals.payload["subtotal"], 2000);
    // The failed request's mids are free: sent again without the bad row, it applies.
    let fixed = MutationBatch {
        mutations: vec![bad.mutations[0].clone()],
        source: Some("till-b".into()),
    };
    let a = store.apply(&fixed, &hub_mode()).unwrap();
    assert_eq!(a.results[0].status, MutationStatus::Applied);
}

/// The shift's totals counted from scratch over its orders and payments.
fn recount_shift(store: &Store, shift: &str) -> (i64, i64, i64) {
    store
        .with_reader(|c| {
            Ok(c.query_row(
                "SELECT (SELECT COUNT(*) FROM order_header WHERE shift_id = ?1 AND status != 'void'),
                        COALESCE(SUM(CASE WHEN p.method = 'cash' THEN p.amount END), 0),
                        COALESCE(SUM(CASE WHEN p.method = 'card' THEN p.amount END), 0)
                 FROM order_payment p JOIN order_header o ON o.id = p.order_id
                 WHERE o.shift_id = ?1 AND o.status != 'void'",
                [shift],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )?)
        })
        .unwrap()
}

fn shift_totals(store: &Store, shift: &str) -> (i64, i64, i64) {
    let p = store.pull("shift", shift, Some("totals")).unwrap().payload;
    (
        p["orders_count"].as_i64().unwrap(),
        p["cash_sales"].as_i64().unwrap(),
        p["card_sales"].as_i64().unwrap(),
    )
}

#[test]
fn shift_totals_moved_by_each_order_always_equal_a_full_recount() {
    let (_d, store) = open_temp();
    let shift = |id: &str| {
        m(
            "pos_shift",
            Action::Insert,
            json!({"id": id, "node_id": "till-a", "cashier": "Mona", "opened_at": T, "opening_float": 5000}),
        )
    };
    let order = |id: &str, shift: &str| {
        m(
            "order_header",
            Action::Insert,
            json!({"id": id, "shift_id": shift, "opened_at": T}),
        )
    };
    let pay = |id: &str, order: &str, method: &str, amount: i64| {
        m(
            "order_payment",
            Action::Insert,
            json!({"id": id, "order_id": order, "method": method, "amount": amount, "paid_at": T}),
        )
    };
    let set = |table: &str, row: Value| m(table, Action::Merge, row);
    let steps: Vec<Vec<Mutation>> = vec![
        vec![
            shift("s1"),
            order("o1", "s1"),
            pay("p1", "o1", "cash", 1000),
        ],
        vec![
            order("o2", "s1"),
            pay("p2", "o2", "card", 2500),
            pay("p3", "o2", "cash", 500),
        ],
        // A second shift, then an order on it.
        vec![shift("s2")],
        vec![order("o3", "s2"), pay("p4", "o3", "card", 700)],
        vec![set("order_payment", json!({"id": "p2", "amount": 2600}))],
        vec![set("order_header", json!({"id": "o1", "status": "void"}))],
        // Moved to another shift, then deleted with its payments.
        vec![set("order_header", json!({"id": "o2", "shift_id": "s2"}))],
        vec![m("order_payment", Action::Delete, json!({"id": "p3"}))],
        vec![m("order_header", Action::Delete, json!({"id": "o3"}))],
        vec![set("pos_shift", json!({"id": "s1", "opening_float": 9000}))],
    ];
    for (i, step) in steps.into_iter().enumerate() {
        run(&store, step).unwrap_or_else(|e| panic!("step {i}: {e}"));
        for s in ["s1", "s2"] {
            if store.pull("shift", s, Some("totals")).is_ok() {
                assert_eq!(
                    shift_totals(&store, s),
                    recount_shift(&store, s),
                    "step {i}, {s}"
                );
            }
        }
    }
    assert_eq!(shift_totals(&store, "s1"), (0, 0, 0));
    assert_eq!(shift_totals(&store, "s2"), (1, 0, 2600));
    let s1 = store.pull("shift", "s1", Some("totals")).unwrap().payload;
    assert_eq!(s1["expected_cash"], 9000);
    // Rebuilding the shares from the data (as a node does when it becomes hub) changes
    // nothing: no total was off, so no new version.
    let before = store.freshness().unwrap();
    store.restamp().unwrap();
    assert_eq!(store.freshness().unwrap(), before);
}

/// The version of `part` the replica holds for order o1.
fn held(replica: &Store, part: &str) -> i64 {
    replica.part_versions("order", "o1").unwrap().unwrap()[part]
}

#[test]
fn a_changed_line_pulls_that_line_and_the_ids_of_the_rest_and_converges() {
    let (_d, hub) = open_temp();
    shift_and_order(&hub);
    let lines: Vec<Mutation> = (0..30)
        .map(|i| line(&format!("l{i}"), 1, 100 + i))
        .collect();
    run(&hub, lines).unwrap();
    let (_r, replica) = replica_of(&hub);
    let have = held(&replica, "lines");

    // One line changes, one goes away, one is added.
    run(
        &hub,
        vec![m(
            "order_line",
            Action::Merge,
            json!({"id": "l7", "qty": 4}),
        )],
    )
    .unwrap();
    run(
        &hub,
        vec![m("order_line", Action::Delete, json!({"id": "l3"}))],
    )
    .unwrap();
    run(&hub, vec![line("l30", 2, 500)]).unwrap();
    let delta = hub
        .pull_many_since("order", &["o1".to_string()], Some("lines,totals"), &[have])
        .unwrap();
    let item = &delta.items[0];
    let sent: Vec<&str> = item.payload["lines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        sent,
        ["l7", "l30"],
        "only the rows changed since the replica's version"
    );
    assert_eq!(item.live["lines"].len(), 30);
    assert!(!item.live["lines"].contains(&"l3".to_string()));
    let full = pull_all(&hub, "order", "o1", Some("lines,totals"));
    assert!(full.items[0].live.is_empty());
    assert!(
        serde_json::to_vec(&delta).unwrap().len() * 3 < serde_json::to_vec(&full).unwrap().len(),
        "a delta is a fraction of the whole part"
    );
    let out = replica.merge_pulled(&delta).unwrap();
    assert!(out.incomplete.is_empty());
    assert_eq!(replica.digest().unwrap(), hub.digest().unwrap());
    // Merging it again changes nothing.
    assert!(replica.merge_pulled(&delta).unwrap().changed.is_empty());
    assert_eq!(replica.digest().unwrap(), hub.digest().unwrap());
}

#[test]
fn a_delta_that_does_not_fit_the_local_copy_is_not_taken_as_complete() {
    let (_d, hub) = open_temp();
    shift_and_order(&hub);
    run(&hub, vec![line("l1", 1, 100), line("l2", 1, 200)]).unwrap();
    let (_r, replica) = replica_of(&hub);
    let have = held(&replica, "lines");
    // The replica lost a line it should hold (as if its copy were older than it says).
    replica
        .writer()
        .execute("DELETE FROM order_line WHERE id = 'l1'", [])
        .unwrap();
    run(
        &hub,
        vec![m(
            "order_line",
            Action::Merge,
            json!({"id": "l2", "qty": 3}),
        )],
    )
    .unwrap();
    let delta = hub
        .pull_many_since("order", &["o1".to_string()], Some("lines,totals"), &[have])
        .unwrap();
    let out = replica.merge_pulled(&delta).unwrap();
    assert_eq!(out.incomplete, ["o1"]);
    assert_eq!(
        held(&replica, "lines"),
        have,
        "the part's version did not move"
    );
    // The whole part, pulled as the follower then does, repairs it.
    replica
        .merge_pulled(&pull_all(&hub, "order", "o1", Some("lines,totals")))
        .unwrap();
    assert_eq!(replica.digest().unwrap(), hub.digest().unwrap());
}

#[test]
fn a_streamed_snapshot_is_the_same_document_as_the_built_one() {
    let (_d, hub) = open_temp();
    shift_and_order(&hub);
    run(
        &hub,
        (0..5).map(|i| line(&format!("l{i}"), 1, 100)).collect(),
    )
    .unwrap();
    for scope in [
        crate::Scope::Full,
        crate::Scope::Light,
        crate::Scope::Screens,
        crate::Scope::Day,
    ] {
        let mut streamed = Vec::new();
        let bytes = hub.write_snapshot(scope, &mut streamed).unwrap();
        assert_eq!(bytes as usize, streamed.len());
        let parsed: capsule_protocol::Snapshot = serde_json::from_slice(&streamed).unwrap();
        assert_eq!(parsed, hub.snapshot_with(scope).unwrap(), "{scope:?}");
    }
}

#[test]
fn a_schema_without_a_column_the_reports_or_commands_read_does_not_open() {
    let text = capsule_protocol::schema::BUILTIN_SCHEMA_TOML;
    for (line, want) in [
        (
            "  { name = \"category\",",
            "reports need column 'order_line.category'",
        ),
        (
            "  { name = \"order_line_id\",",
            "commands need column 'job_order_detail.order_line_id'",
        ),
    ] {
        let cut: String = text
            .lines()
            .filter(|l| !l.starts_with(line))
            .map(|l| format!("{l}\n"))
            .collect();
        assert_ne!(cut, text, "{line}");
        let schema = capsule_protocol::Schema::from_toml(&cut).expect("still a valid schema");
        let dir = tempfile::tempdir().unwrap();
        let Err(err) = Store::open(dir.path().join("n.sqlite3"), std::sync::Arc::new(schema))
        else {
            panic!("a store opened without {want}");
        };
        assert!(err.to_string().contains(want), "{err}");
    }
}

#[test]
fn snapshot_text_is_escaped_as_json() {
    for s in [
        "",
        "plain",
        "quote \" and backslash \\",
        "tab\tnewline\ncontrol \u{1b}p",
        "ünïcødé كبسولة 🍕",
        "\u{7f} \u{1f} \u{2028} \u{2029}",
    ] {
        let mut out = Vec::new();
        crate::sql::json_string(&mut out, s);
        assert_eq!(out, serde_json::to_vec(s).unwrap(), "{s:?}");
        let back: String = serde_json::from_slice(&out).unwrap();
        assert_eq!(back, s);
    }
}

#[test]
fn a_store_written_by_a_newer_build_is_refused_and_left_as_it_was() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("hub.sqlite3");
    let schema = std::sync::Arc::new(capsule_protocol::Schema::builtin());
    let format = |path: &std::path::Path| -> i64 {
        rusqlite::Connection::open(path)
            .unwrap()
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap()
    };
    {
        let store = Store::open(&path, schema.clone()).unwrap();
        shift_and_order(&store);
    }
    assert_eq!(format(&path), crate::STORE_FORMAT);
    // What a later build that changed the layout leaves behind.
    let newer = crate::STORE_FORMAT + 1;
    {
        let c = rusqlite::Connection::open(&path).unwrap();
        c.pragma_update(None, "user_version", newer).unwrap();
        c.execute_batch("DROP INDEX idx_order_header_shift_id")
            .unwrap();
        // (a later build may keep its file in another journal mode)
        c.pragma_update(None, "journal_mode", "DELETE").unwrap();
    }
    let bytes = std::fs::read(&path).unwrap();
    let e = Store::open(&path, schema.clone()).unwrap_err();
    assert!(
        e.to_string().contains("newer Capsule POS"),
        "not the newer-format refusal: {e}"
    );
    // Untouched, byte for byte: not switched to WAL, no change counter bumped, no DDL ran.
    assert!(
        std::fs::read(&path).unwrap() == bytes,
        "the refused file was modified"
    );
    assert!(!dir.path().join("hub.sqlite3-wal").exists());
    assert_eq!(format(&path), newer);
    let indexes: i64 = rusqlite::Connection::open(&path)
        .unwrap()
        .query_row(
            "SELECT COUNT(*) FROM sqlite_schema WHERE name = 'idx_order_header_shift_id'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(indexes, 0);
    // Back at this build's format (a backup it made), it opens with the data.
    rusqlite::Connection::open(&path)
        .unwrap()
        .pragma_update(None, "user_version", crate::STORE_FORMAT)
        .unwrap();
    let store = Store::open(&path, schema).unwrap();
    assert_eq!(store.table_rows("order_header").unwrap().len(), 1);
}

#[test]
fn the_screens_get_open_business_and_the_day_not_history() {
    let (_d, store) = open_temp();
    // Yesterday: a shift, an order paid and sent to the kitchen, counted by Z #1.
    let order = |id: &str, no: i64, shift: &str, status: &str| {
        m(
            "order_header",
            Action::Insert,
            json!({"id": id, "order_no": no, "shift_id": shift, "opened_at": T, "status": status}),
        )
    };
    let batch = |id: &str, order: &str| {
        m(
            "job_order_batch",
            Action::Insert,
            json!({"id": id, "order_id": order, "batch_no": 1, "created_at": T}),
        )
    };
    run(
        &store,
        vec![
            m(
                "pos_shift",
                Action::Insert,
                json!({"id": "s-old", "node_id": "till-a", "cashier": "Mona", "opened_at": T}),
            ),
            order("o-old", 1, "s-old", "paid"),
            batch("b-old", "o-old"),
            order("o-open-old", 2, "s-old", "open"),
            m(
                "menu_category",
                Action::Insert,
                json!({"id": "c1", "name_en": "Grill"}),
            ),
        ],
    )
    .unwrap();
    run(
        &store,
        vec![m(
            "pos_shift",
            Action::Merge,
            json!({"id": "s-old", "status": "closed"}),
        )],
    )
    .unwrap();
    let (_, z) = store.plan_z_report(Some("Manager")).unwrap();
    run(&store, vec![z]).unwrap();
    // Today: a new shift, an order paid and one open.
    run(
        &store,
        vec![
            m(
                "pos_shift",
                Action::Insert,
                json!({"id": "s-new", "node_id": "till-a", "cashier": "Aisha", "opened_at": T}),
            ),
            order("o-paid", 3, "s-new", "paid"),
            batch("b-paid", "o-paid"),
            order("o-open", 4, "s-new", "open"),
        ],
    )
    .unwrap();
    let (_, z2) = store.plan_z_report(Some("Manager")).unwrap();
    let screens = store.snapshot_with(crate::Scope::Screens).unwrap();
    let ids = |t: &str| {
        let mut v: Vec<String> = screens.tables[t]
            .iter()
            .map(|r| r["id"].as_str().unwrap().to_string())
            .collect();
        v.sort();
        v
    };
    // An order left open across a Z is open business; a counted day's paid order is history.
    assert_eq!(ids("order_header"), ["o-open", "o-open-old", "o-paid"]);
    assert_eq!(ids("job_order_batch"), ["b-paid"]);
    assert_eq!(ids("pos_shift"), ["s-new"]);
    assert_eq!(ids("menu_category"), ["c1"]);
    assert_eq!(screens.tables["z_report"].len(), 1);
    // After tonight's Z, today's paid order leaves the screens too.
    run(&store, vec![z2]).unwrap();
    let screens = store.snapshot_with(crate::Scope::Screens).unwrap();
    let orders: Vec<&str> = screens.tables["order_header"]
        .iter()
        .map(|r| r["id"].as_str().unwrap())
        .collect();
    assert_eq!(orders.len(), 2, "{orders:?}");
    assert!(!orders.contains(&"o-paid"));
    assert_eq!(screens.tables["z_report"][0]["number"], 2);
}

#[test]
fn past_orders_are_found_by_number_time_table_amount_and_reference_a_page_at_a_time() {
    let (_d, store) = open_temp();
    run(
        &store,
        vec![m(
            "pos_shift",
            Action::Insert,
            json!({"id": "s1", "node_id": "till-a", "cashier": "Mona", "opened_at": T}),
        )],
    )
    .unwrap();
    for i in 0..30 {
        let at = format!("2026-11-{:02}T12:00:00.000Z", 1 + i % 28);
        run(
            &store,
            vec![
                m("order_header", Action::Insert, json!({"id": format!("o{i:02}"), "order_no": 100 + i, "shift_id": "s1", "opened_at": at, "table_label": format!("T{}", i % 3)})),
                m("order_line", Action::Insert, json!({"id": format!("l{i}"), "order_id": format!("o{i:02}"), "name_en": "Tea", "qty": 1, "unit_price": 100 * (i + 1), "created_at": T})),
                m("order_payment", Action::Insert, json!({"id": format!("p{i}"), "order_id": format!("o{i:02}"), "method": "card", "amount": 100 * (i + 1), "reference": format!("REF{i}"), "paid_at": T})),
            ],
        )
        .unwrap();
    }
    let q = |f: &dyn Fn(&mut crate::OrderQuery)| {
        let mut q = crate::OrderQuery::default();
        f(&mut q);
        q
    };
    let ids = |p: &crate::OrderPage| p.orders.iter().map(|o| o.id.clone()).collect::<Vec<_>>();
    assert_eq!(
        ids(&store.find_orders(&q(&|q| q.number = Some(107))).unwrap()),
        ["o07"]
    );
    assert_eq!(
        ids(&store.find_orders(&q(&|q| q.amount = Some(1200))).unwrap()),
        ["o11"]
    );
    assert_eq!(
        ids(&store
            .find_orders(&q(&|q| q.reference = Some("REF29".into())))
            .unwrap()),
        ["o29"]
    );
    let day = store
        .find_orders(&q(&|q| {
            q.from = Some("2026-11-02T00:00:00Z".into());
            q.to = Some("2026-11-03T00:00:00Z".into());
        }))
        .unwrap();
    assert_eq!(ids(&day), ["o29", "o01"]);
    // Paging walks every one of table T1's orders exactly once, newest first.
    let mut seen = Vec::new();
    let mut before = None;
    loop {
        let page = store
            .find_orders(&q(&|q| {
                q.table = Some("T1".into());
                q.limit = Some(4);
                q.before = before.clone();
            }))
            .unwrap();
        seen.extend(ids(&page));
        match page.next {
            Some(n) => before = Some(n),
            None => break,
        }
    }
    assert_eq!(seen.len(), 10);
    assert_eq!(
        seen.iter().collect::<std::collections::BTreeSet<_>>().len(),
        10
    );
    // Nonsense is refused with a reason, never answered with everything.
    for bad in [
        q(&|q| q.limit = Some(0)),
        q(&|q| q.limit = Some(101)),
        q(&|q| q.amount = Some(-1)),
        q(&|q| q.from = Some("yesterday".into())),
        q(&|q| q.before = Some("nope".into())),
        q(&|q| q.table = Some("x".repeat(41))),
    ] {
        assert!(
            matches!(store.find_orders(&bad), Err(StoreError::Invalid(_))),
            "{bad:?}"
        );
    }
    // Each kind of search reaches its orders through an index, never reading all of them.
    for query in [
        q(&|_| {}),
        q(&|q| q.number = Some(1)),
        q(&|q| q.amount = Some(1)),
        q(&|q| q.table = Some("T1".into())),
        q(&|q| q.reference = Some("R".into())),
        q(&|q| q.from = Some(T.into())),
        q(&|q| q.before = Some(format!("{T}|o1"))),
    ] {
        let plan = store.find_orders_plan(&query).unwrap();
        assert!(
            !plan
                .split("; ")
                .any(|s| s == "SCAN order_header" || s == "SCAN order_payment"),
            "{query:?}: {plan}"
        );
        // A table's or a day's orders come in index order (a year of T4 is never sorted).
        if query.table.is_some() || query.from.is_some() {
            assert!(
                !plan.contains("USE TEMP B-TREE FOR ORDER BY"),
                "{query:?}: {plan}"
            );
        }
    }
}

#[test]
fn a_snapshot_loaded_as_it_is_read_is_the_same_as_one_parsed_whole_and_a_cut_one_changes_nothing() {
    let (_d, hub) = open_temp();
    kitchen(&hub);
    run(
        &hub,
        (0..5).map(|i| line(&format!("l{i}"), 1, 100)).collect(),
    )
    .unwrap();
    let mut bytes = Vec::new();
    hub.write_snapshot(crate::Scope::Full, &mut bytes).unwrap();
    let (_d1, whole) = replica_of(&hub);
    whole
        .load_snapshot(&serde_json::from_slice(&bytes).unwrap())
        .unwrap();
    let (_d2, streamed) = open_temp();
    let (seq, v) = streamed.load_snapshot_from(&bytes[..]).unwrap();
    let snap = hub.snapshot().unwrap();
    assert_eq!((seq, v), (snap.seq, snap.v));
    assert_eq!(streamed.digest().unwrap(), whole.digest().unwrap());
    assert_eq!(streamed.digest().unwrap(), hub.digest().unwrap());
    // A connection cut halfway (or a row the schema does not know) leaves what was there.
    let before = streamed.digest().unwrap();
    let (_d3, other) = open_temp();
    shift_and_order(&other);
    let mut other_bytes = Vec::new();
    other
        .write_snapshot(crate::Scope::Full, &mut other_bytes)
        .unwrap();
    let cut = &other_bytes[..other_bytes.len() / 2];
    assert!(streamed.load_snapshot_from(cut).is_err());
    assert_eq!(streamed.digest().unwrap(), before);
    let bad = String::from_utf8(other_bytes.clone()).unwrap().replacen(
        "\"cashier\"",
        "\"no_such_column\"",
        1,
    );
    assert!(matches!(
        streamed.load_snapshot_from(bad.as_bytes()),
        Err(StoreError::Invalid(_))
    ));
    assert_eq!(streamed.digest().unwrap(), before);
}

#[test]
fn a_table_is_read_a_page_at_a_time_every_row_once() {
    let (_d, store) = open_temp();
    shift_and_order(&store);
    run(
        &store,
        (0..23).map(|i| line(&format!("l{i:02}"), 1, 100)).collect(),
    )
    .unwrap();
    let mut seen = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let mut out = Vec::new();
        let next = store
            .write_table("order_line", after.as_deref(), 5, &mut out)
            .unwrap();
        let page: Value = serde_json::from_slice(&out).unwrap();
        let rows = page["rows"].as_array().unwrap();
        assert!(rows.len() <= 5);
        seen.extend(rows.iter().map(|r| r["id"].as_str().unwrap().to_string()));
        assert_eq!(page.get("next").and_then(Value::as_str), next.as_deref());
        match next {
            Some(n) => after = Some(n),
            None => break,
        }
    }
    let mut all: Vec<String> = (0..23).map(|i| format!("l{i:02}")).collect();
    all.sort();
    assert_eq!(seen, all);
}

#[test]
fn print_jobs_not_printed_within_a_day_are_given_up_with_the_reason() {
    let (_d, store) = open_temp();
    fn job(id: &str) -> crate::NewPrintJob<'_> {
        crate::NewPrintJob {
            id,
            printer_id: "p1",
            printer: "Counter",
            address: "192.168.1.50:9100",
            kind: "receipt",
            about: "o1",
            bytes: b"x",
        }
    }
    assert_eq!(
        store.enqueue_print(&job("j1")).unwrap(),
        crate::Enqueued::Queued
    );
    assert_eq!(
        store.enqueue_print(&job("j1")).unwrap(),
        crate::Enqueued::Already
    );
    store
        .print_failed("j1", "printer 192.168.1.50:9100 did not answer", 1000)
        .unwrap();
    let now = capsule_protocol::now_ms();
    assert_eq!(store.expire_print_jobs(now).unwrap(), 0);
    assert_eq!(
        store
            .expire_print_jobs(now + crate::PRINT_JOB_EXPIRES_MS + 1000)
            .unwrap(),
        1
    );
    let jobs = store.print_jobs(10).unwrap();
    assert_eq!(jobs[0].state, "expired");
    assert!(
        jobs[0].error.as_deref().unwrap().contains("did not answer"),
        "{jobs:?}"
    );
    assert!(matches!(
        store.due_print_job().unwrap(),
        crate::PrintDue::Later(None)
    ));
}
