//! Hub changes against real stores: a claim is all or nothing and judges queued writes against
//! what the hub said; a snapshot of another lineage loses nothing; the data rules hold on the
//! till's own path and for replays; a hub whose lease ran out refuses writes.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use capsule_protocol::{Action, Schema};
use serde_json::json;

use crate::outbox_tests::{Shop, batch, m, setup, shop};
use crate::{ApplyMode, Durability, Store, StoreError};

const T: &str = "2026-11-24T12:00:00Z";

fn status(store: &Store, order: &str) -> String {
    store.pull("order", order, Some("status")).unwrap().payload["status"]
        .as_str()
        .unwrap()
        .to_string()
}

/// Drains the till's outbox into `hub`, request by request, as the till's drain does; returns
/// the table of each request's first write, in order.
fn drain_into(s: &Shop, hub: &Store) -> Vec<String> {
    let mut tables = Vec::new();
    while let Some(next) = s.till.outbox_next("till-a").unwrap() {
        tables.push(next.batch.mutations[0].table.clone());
        let applied = hub
            .apply(
                &next.batch,
                &ApplyMode::Authoritative {
                    source: "till-a".into(),
                },
            )
            .unwrap_or_else(|e| panic!("{} refused: {e}", tables.last().unwrap()));
        s.till
            .outbox_confirmed(&next.request, &applied.results)
            .unwrap();
    }
    tables
}

/// Another till's sale of one tea at table T2 (order o2), as it first sent it.
fn tea_sale() -> capsule_protocol::MutationBatch {
    batch(vec![
        m(
            "order_header",
            Action::Insert,
            json!({"id": "o2", "shift_id": "s1", "opened_at": T, "table_label": "T2", "updated_at": T}),
        ),
        m(
            "order_line",
            Action::Insert,
            json!({"id": "l2", "order_id": "o2", "name_en": "Tea", "qty": 1, "unit_price": 500, "created_at": T}),
        ),
    ])
}

/// Till B's tea sale reached the hub, which then changed the order (table T5); the till (a
/// follower keeping the journal) merged the order but not the sale's journal entries, and
/// took over as hub. Returns the shop, the sale as B first sent it, and B as its source.
fn till_took_over_after_b_sold() -> (Shop, capsule_protocol::MutationBatch, ApplyMode) {
    let s = shop();
    setup(&s);
    s.till.set_keeps_journal(true);
    till_copies_journal(&s);
    let sale = tea_sale();
    let from_b = ApplyMode::Authoritative {
        source: "till-b".into(),
    };
    s.hub.apply(&sale, &from_b).unwrap();
    // Changed at the hub a moment later: the order no longer looks as its insert wrote it.
    s.hub_writes(vec![m(
        "order_header",
        Action::Merge,
        json!({"id": "o2", "table_label": "T5", "updated_at": "2026-11-24T12:05:00Z"}),
    )]);
    // The till merges the order; the hub dies before the till copies the journal.
    s.till_pulls("order", &["o2"]);
    s.till.claim_hub(1).unwrap();
    (s, sale, from_b)
}

/// The till copies the hub's journal, as a node that may lead does.
pub(crate) fn till_copies_journal(s: &Shop) {
    let journal = s.hub.journal_since(0, s.hub_version(), 100).unwrap();
    s.till
        .record_journal(&journal.entries, Some(s.hub_version()))
        .unwrap();
}

/// The hub of another lineage, of an empty shop.
fn empty_hub() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let hub = Store::open(
        dir.path().join("other.sqlite3"),
        Arc::new(Schema::builtin()),
    )
    .unwrap();
    (dir, hub)
}

/// Another till pays `o1` at the hub.
fn paid_elsewhere(s: &Shop) {
    s.hub_writes(vec![
        m(
            "order_payment",
            Action::Insert,
            json!({"id": "p1", "order_id": "o1", "method": "cash", "amount": 1725, "paid_at": T}),
        ),
        m(
            "order_header",
            Action::Merge,
            json!({"id": "o1", "status": "paid", "updated_at": T}),
        ),
    ]);
}

/// The till sends `o1` to the kitchen as its screen shows it (open).
fn till_sends(s: &Shop) {
    s.till
        .apply_local(
            &batch(vec![m(
                "order_header",
                Action::Merge,
                json!({"id": "o1", "status": "sent", "updated_at": T}),
            )]),
            "A",
        )
        .unwrap();
}

#[test]
fn a_claim_judges_the_tills_queued_writes_against_what_the_hub_said_not_its_own_screen() {
    let s = shop();
    setup(&s);
    till_sends(&s);
    paid_elsewhere(&s);
    // The till merges the payment; its own "sent" is shown again on top.
    s.till_pulls("order", &["o1"]);
    assert_eq!(status(&s.till, "o1"), "sent");
    // The hub dies before the till's write reached it; the till becomes hub.
    s.till.claim_hub(1).unwrap();
    assert_eq!(
        status(&s.till, "o1"),
        "paid",
        "the till's stale send reopened an order paid at the hub"
    );
    assert_eq!(s.till.outbox_counts().unwrap(), (0, 0));
}

#[test]
fn a_till_shows_what_the_hub_made_of_a_write_it_took_only_in_part() {
    let s = shop();
    setup(&s);
    paid_elsewhere(&s);
    till_sends(&s);
    // The hub drops the stale status change (nothing changes there: no capsule comes) and
    // says so; the till re-reads the order, as it does after a refusal.
    let next = s.till.outbox_next("till-a").unwrap().unwrap();
    let applied = s
        .hub
        .apply(
            &next.batch,
            &ApplyMode::Authoritative {
                source: "till-a".into(),
            },
        )
        .unwrap();
    assert!(applied.results[0].partial, "the hub said it took only part");
    let reread = s
        .till
        .outbox_confirmed(&next.request, &applied.results)
        .unwrap();
    assert_eq!(reread, [("order".to_string(), "o1".to_string())]);
    let pull = s.hub.pull_many("order", &["o1".to_string()], None).unwrap();
    s.till.merge_pulled_over_local(&pull).unwrap();
    assert_eq!(
        status(&s.till, "o1"),
        "paid",
        "the till kept showing a send the hub refused"
    );
    // A later merge does not put the till's version back.
    s.till_pulls("order", &["o1"]);
    assert_eq!(status(&s.till, "o1"), "paid");
    s.till.advance_position(1, s.hub_version()).unwrap();
    assert_eq!(s.till.outbox_counts().unwrap(), (0, 0));
}

#[test]
fn a_snapshot_of_another_lineage_loses_nothing_the_till_held() {
    let s = shop();
    setup(&s);
    // The till holds the hub's journal (it may lead one day).
    till_copies_journal(&s);
    // Another lineage's hub, without any of it, sends its snapshot.
    let (_dir, other) = empty_hub();
    s.till.load_snapshot(&other.snapshot().unwrap()).unwrap();
    assert!(
        !s.till.claim_ready().unwrap(),
        "a node must not lead before its journal is compared"
    );
    s.till.record_journal(&[], Some(0)).unwrap();
    assert_eq!(s.till.reconcile_aside().unwrap(), 2);
    assert!(s.till.claim_ready().unwrap());
    // Replayed into the other hub, in order: the shift, then the order.
    assert_eq!(drain_into(&s, &other), ["pos_shift", "order_header"]);
    assert_eq!(status(&other, "o1"), "open");
}

#[test]
fn writes_a_snapshot_replays_go_before_the_tills_own_queued_ones() {
    let s = shop();
    setup(&s);
    till_copies_journal(&s);
    // Queued on the till: a line on o1.
    s.till
        .apply_local(&batch(vec![crate::outbox_tests::line("l1", 1)]), "A")
        .unwrap();
    let (_dir, other) = empty_hub();
    s.till.load_snapshot(&other.snapshot().unwrap()).unwrap();
    s.till.record_journal(&[], Some(0)).unwrap();
    s.till.reconcile_aside().unwrap();
    // The order is there before its line.
    assert_eq!(
        drain_into(&s, &other),
        ["pos_shift", "order_header", "order_line"]
    );
}

#[test]
fn a_claim_that_fails_leaves_nothing_of_itself() {
    let s = shop();
    setup(&s);
    till_sends(&s);
    s.till.set_authority(false);
    let term = s.till.term().unwrap();
    let fresh = s.till.freshness().unwrap();
    s.till.fail_next_claim();
    assert!(s.till.claim_hub(term).is_err());
    assert_eq!(s.till.term().unwrap(), term, "a failed claim used a term");
    assert_eq!(s.till.freshness().unwrap(), fresh);
    assert!(!s.till.is_authority());
    assert_eq!(
        s.till.outbox_counts().unwrap(),
        (1, 0),
        "the queued write is still queued"
    );
    assert_eq!(
        status(&s.till, "o1"),
        "sent",
        "the till's screen is as it was"
    );
    let claim = s.till.claim_hub(term).unwrap();
    assert_eq!(claim.term, term + 1);
}

#[test]
fn a_replayed_write_that_said_nothing_of_what_it_saw_never_reopens_a_paid_order() {
    let s = shop();
    setup(&s);
    // At hub A an API client (no base) sends o1 to the kitchen; the till copies the journal.
    s.hub_writes(vec![m(
        "order_header",
        Action::Merge,
        json!({"id": "o1", "status": "sent", "updated_at": T}),
    )]);
    till_copies_journal(&s);
    // Hub B, of a later term, got the same order and had it paid by another till.
    let dir = tempfile::tempdir().unwrap();
    let b = Store::open(dir.path().join("b.sqlite3"), Arc::new(Schema::builtin())).unwrap();
    b.claim_hub(5).unwrap();
    let at_b = |source: &str, muts| {
        b.apply(
            &batch(muts),
            &ApplyMode::Authoritative {
                source: source.into(),
            },
        )
        .unwrap()
    };
    at_b(
        "till-b",
        vec![
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
        ],
    );
    at_b(
        "till-b",
        vec![m(
            "order_header",
            Action::Merge,
            json!({"id": "o1", "status": "paid", "updated_at": T}),
        )],
    );
    // The till follows B: what B lacks of A's journal is replayed into it.
    s.till.load_snapshot(&b.snapshot().unwrap()).unwrap();
    let journal = b.journal_since(0, b.freshness().unwrap(), 100).unwrap();
    s.till
        .record_journal(&journal.entries, Some(b.freshness().unwrap()))
        .unwrap();
    assert!(s.till.reconcile_aside().unwrap() >= 1);
    drain_into(&s, &b);
    assert_eq!(status(&b, "o1"), "paid", "a replay reopened a paid order");
}

#[test]
fn a_till_refuses_at_once_to_change_an_order_a_z_counted() {
    let s = shop();
    setup(&s);
    paid_elsewhere(&s);
    let (_, z) = s.hub.plan_z_report(Some("Manager")).unwrap();
    s.hub_writes(vec![z]);
    s.till.load_snapshot(&s.hub.snapshot().unwrap()).unwrap();
    let refused = s.till.apply_local(
        &batch(vec![m(
            "order_line",
            Action::Insert,
            json!({"id": "l9", "order_id": "o1", "name_en": "Tea", "qty": 1, "unit_price": 100, "created_at": T}),
        )]),
        "A",
    );
    assert!(
        matches!(refused, Err(StoreError::Conflict(ref e)) if e.contains("Z report #1")),
        "{refused:?}"
    );
    assert_eq!(s.till.outbox_counts().unwrap(), (0, 0), "nothing queued");
}

#[test]
fn a_hub_that_stood_still_past_its_lease_refuses_writes_until_renewed() {
    let dir = tempfile::tempdir().unwrap();
    let ms = Arc::new(AtomicU64::new(0));
    let (base, wall) = (Instant::now(), SystemTime::now());
    let clock = ms.clone();
    let hub = Store::open_with(
        dir.path().join("hub.sqlite3"),
        Arc::new(Schema::builtin()),
        Durability::Full,
    )
    .unwrap()
    .with_clock(Arc::new(move || {
        let d = Duration::from_millis(clock.load(Ordering::SeqCst));
        (base + d, wall + d)
    }));
    hub.hold_authority_for(Duration::from_millis(900));
    let write = |id: &str| {
        hub.apply(
            &batch(vec![m(
                "pos_shift",
                Action::Insert,
                json!({"id": id, "node_id": "till-a", "cashier": "Mona", "opened_at": T}),
            )]),
            &ApplyMode::Authoritative {
                source: "till-a".into(),
            },
        )
    };
    assert!(write("s1").is_ok());
    // SIGSTOP for 10 s: the first write after waking is refused, before anything else ran.
    ms.fetch_add(10_000, Ordering::SeqCst);
    assert!(matches!(write("s2"), Err(StoreError::NotHub(_))));
    hub.hold_authority_for(Duration::from_millis(900));
    assert!(write("s3").is_ok());
}

#[test]
fn a_tills_queued_write_from_another_history_cannot_reopen_an_order_paid_at_the_new_hub() {
    let s = shop();
    setup(&s);
    // The till's hub of term 7 (another history) had versions far above the new hub's.
    s.till.claim_hub(6).unwrap();
    s.till
        .apply(
            &batch(vec![m(
                "order_header",
                Action::Merge,
                json!({"id": "o1", "guests": 2, "updated_at": T}),
            )]),
            &ApplyMode::Authoritative {
                source: "till-a".into(),
            },
        )
        .unwrap();
    s.till.step_down().unwrap();
    till_sends(&s);
    let queued = s.till.outbox_next("till-a").unwrap().unwrap();
    assert!(queued.batch.mutations[0].base.unwrap() > s.hub_version());
    paid_elsewhere(&s);
    // The till follows the other hub: a snapshot of another history.
    s.till.load_snapshot(&s.hub.snapshot().unwrap()).unwrap();
    assert!(s.drain_one());
    assert_eq!(
        status(&s.hub, "o1"),
        "paid",
        "a base from another history read as newer than the hub's payment"
    );
}

#[test]
fn a_write_made_over_the_tills_own_waiting_write_saw_only_what_that_one_saw() {
    let s = shop();
    setup(&s);
    till_sends(&s);
    paid_elsewhere(&s);
    // The till merges the payment, and its own waiting "sent" still shows on top.
    s.till_pulls("order", &["o1"]);
    assert_eq!(status(&s.till, "o1"), "sent");
    // The cashier sends it again, as the screen shows it: not a reopen of a paid order.
    till_sends(&s);
    while s.drain_one() {}
    assert_eq!(status(&s.hub, "o1"), "paid");
}

#[test]
fn a_hub_change_after_the_closed_days_bookkeeping_was_pruned_loses_and_reopens_nothing() {
    let s = shop();
    setup(&s);
    paid_elsewhere(&s);
    let (_, z) = s.hub.plan_z_report(Some("Manager")).unwrap();
    s.hub_writes(vec![z]);
    let z1 = s.hub.z_report(1).unwrap();
    // A month later the closed day's journal, tombstones and mutation ids are pruned.
    let month = capsule_protocol::now_ms() + 30 * 24 * 3600 * 1000;
    assert!(s.hub.prune_history(month).unwrap().journal > 0);
    // A till joins then (snapshot and the journal as it is now), sells, and the hub dies
    // before the sale reaches it; the till becomes hub.
    s.till.load_snapshot(&s.hub.snapshot().unwrap()).unwrap();
    till_copies_journal(&s);
    s.till
        .apply_local(
            &batch(vec![m(
                "order_header",
                Action::Insert,
                json!({"id": "o2", "shift_id": "s1", "opened_at": T}),
            )]),
            "A",
        )
        .unwrap();
    s.till.claim_hub(1).unwrap();
    assert_eq!(
        status(&s.till, "o1"),
        "paid",
        "a counted order came back open"
    );
    assert!(
        s.till.pull("order", "o2", Some("header")).is_ok(),
        "the till's sale was lost"
    );
    assert_eq!(s.till.outbox_counts().unwrap(), (0, 0));
    // The old hub comes back and follows the new one: it sets its (pruned) journal aside,
    // replays what the new hub lacks, and the day counted by Z #1 still counts the same.
    s.hub.load_snapshot(&s.till.snapshot().unwrap()).unwrap();
    let journal = s
        .till
        .journal_since(0, s.till.meta_i64(crate::meta::VERSION).unwrap(), 100)
        .unwrap();
    s.hub
        .record_journal(
            &journal.entries,
            Some(s.till.meta_i64(crate::meta::VERSION).unwrap()),
        )
        .unwrap();
    s.hub.reconcile_aside().unwrap();
    assert_eq!(s.hub.outbox_counts().unwrap().1, 0, "something was refused");
    let again = s.hub.z_report(1).unwrap();
    assert_eq!((again.orders, again.total), (z1.orders, z1.total));
    assert_eq!(s.hub.digest().unwrap(), s.till.digest().unwrap());
}

/// Found by `tests/month.rs` on a loaded machine: the hub died after the till merged another
/// till's sale but before it copied that sale's journal entries; the till took over, and the
/// other till's resend of the sale (its answer had been lost) was refused as "already exists".
#[test]
fn a_resend_after_the_hub_died_before_its_journal_was_copied_is_a_duplicate() {
    let (s, sale, from_b) = till_took_over_after_b_sold();
    let again = s
        .till
        .apply(&sale, &from_b)
        .unwrap_or_else(|e| panic!("the resend of a sale the old hub took was refused: {e}"));
    assert!(
        again
            .results
            .iter()
            .all(|r| r.status == capsule_protocol::MutationStatus::Duplicate),
        "{:?}",
        again.results
    );
    assert_eq!(
        s.till.pull("order", "o2", None).unwrap().payload["table_label"],
        "T5",
        "the resend changed nothing"
    );
    // A new insert of a row whose writes this node holds with their mids is still refused.
    let reinsert = batch(vec![m(
        "order_header",
        Action::Insert,
        json!({"id": "o1", "shift_id": "s1", "opened_at": T, "table_label": "T9"}),
    )]);
    assert!(matches!(
        s.till.apply(&reinsert, &from_b),
        Err(StoreError::Conflict(_))
    ));
}

/// Found by `tests/month.rs` on a loaded machine: the till that took over for the night
/// answered the manager PC's replay of the day's last sale as a duplicate and journaled its
/// mids at the version it stood at, which the PC (following it) had already copied past. At
/// the morning's handback the till set its journal aside, found the PC's journal without
/// those mids and replayed them: the sale's 9 writes refused as "already exists". A write that
/// changes no row now takes a version of its own, announced on the stream.
#[test]
fn a_write_that_changed_nothing_reaches_a_follower_that_had_copied_the_journal_past_the_hub() {
    let (s, sale, from_b) = till_took_over_after_b_sold();
    // The manager's PC follows the till and copies its journal up to the till's version.
    let (_dir, pc) = empty_hub();
    let version = |st: &Store| st.meta_i64(crate::meta::VERSION).unwrap();
    let copy = |upto: i64| {
        let after = pc.meta_i64(crate::meta::JOURNAL_VERSION).unwrap();
        let page = s.till.journal_since(after, upto, 1000).unwrap();
        pc.record_journal(&page.entries, Some(upto)).unwrap();
    };
    copy(version(&s.till));
    // The old hub's replay of the sale, then the same label again: neither changes a row.
    let again = s.till.apply(&sale, &from_b).unwrap();
    assert!(
        again
            .results
            .iter()
            .all(|r| r.status == capsule_protocol::MutationStatus::Duplicate),
        "{:?}",
        again.results
    );
    let same = batch(vec![m(
        "order_header",
        Action::Merge,
        json!({"id": "o2", "table_label": "T5", "updated_at": "2026-11-24T12:05:00Z"}),
    )]);
    let unchanged = s.till.apply(&same, &from_b).unwrap();
    // Each announced on the stream at a version the PC's next copy reaches.
    let announced: Vec<i64> = again
        .capsules
        .iter()
        .chain(&unchanged.capsules)
        .map(|c| c.capsule.v)
        .collect();
    assert_eq!(announced.len(), 2, "{announced:?}");
    copy(*announced.iter().max().unwrap());
    let known: std::collections::HashSet<String> = pc
        .journal_since(0, i64::MAX, 1000)
        .unwrap()
        .entries
        .into_iter()
        .map(|e| e.mid)
        .collect();
    for w in sale.mutations.iter().chain(&same.mutations) {
        assert!(
            known.contains(&w.mid),
            "the PC's journal lacks the {} write: a later replay of it is refused",
            w.table
        );
    }
    assert_eq!(
        s.till.pull("order", "o2", None).unwrap().payload["table_label"],
        "T5"
    );
}

/// Found by `tests/month.rs` under load: a till still sending its queue to the node that had
/// just handed the hub back resent a paid sale's insert there; that node, a follower again,
/// judged it itself and refused it for good as "already exists" (the sale set aside for the
/// manager). A follower relays another node's insert of a row it holds to the hub, which
/// tells a resend from a new write by its mid.
#[test]
fn a_follower_relays_another_nodes_resent_insert_instead_of_refusing_it() {
    let s = shop();
    setup(&s);
    let sale = tea_sale();
    let from_b = ApplyMode::Authoritative {
        source: "till-b".into(),
    };
    s.hub.apply(&sale, &from_b).unwrap();
    s.hub_writes(vec![m(
        "order_header",
        Action::Merge,
        json!({"id": "o2", "status": "paid", "updated_at": "2026-11-24T12:05:00Z"}),
    )]);
    // The follower (this store, not the hub) holds the paid order.
    s.till_pulls("order", &["o2"]);
    // Till B's resend reaches it.
    let mut resend = sale.clone();
    resend.source = Some("till-b".into());
    let relayed = s
        .till
        .apply_local_for(&resend, "A", "10.0.0.2")
        .unwrap_or_else(|e| panic!("the follower refused another till's resend: {e}"));
    assert!(relayed.request.is_some(), "nothing was queued for the hub");
    assert_eq!(status(&s.till, "o2"), "paid", "the relay changed the order");
    // The hub answers it as the duplicate it is; nothing is set aside.
    drain_into(&s, &s.hub);
    assert_eq!(s.till.outbox_counts().unwrap().1, 0, "set aside");
    assert_eq!(status(&s.hub, "o2"), "paid");
}
