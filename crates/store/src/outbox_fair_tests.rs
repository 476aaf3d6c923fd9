//! A till's outbox under a flood and a big backlog: clients take turns, an entity's writes keep
//! their order, a client with a full line is refused, and a request's cost does not grow with
//! what else is queued.

use std::sync::atomic::Ordering;

use capsule_protocol::{Action, MutationBatch};
use serde_json::json;

use crate::outbox_tests::{Shop, batch, m, setup, shop};
use crate::{ApplyMode, StoreError};

const T: &str = "2026-11-24T12:00:00Z";

/// One order and a line, as a till rings them in one request.
fn order(id: &str) -> MutationBatch {
    batch(vec![
        m(
            "order_header",
            Action::Insert,
            json!({"id": id, "shift_id": "s1", "opened_at": T}),
        ),
        m(
            "order_line",
            Action::Insert,
            json!({"id": format!("{id}-l"), "order_id": id, "name_en": "Tea", "qty": 1, "unit_price": 500, "created_at": T}),
        ),
    ])
}

impl Shop {
    /// What the till's drain and follow loop do for one request: send it (clients in turn),
    /// record the answer, then pull the entity back from the hub, merge it and move the
    /// stream position. Returns the client whose request went, None when nothing waits.
    fn drain_fair(&self, after: &str) -> Option<String> {
        let req = self
            .till
            .outbox_next_fair("till-a", after, 0)
            .unwrap()
            .into_iter()
            .next()?;
        let applied = self
            .hub
            .apply(
                &req.batch,
                &ApplyMode::Authoritative {
                    source: "till-a".into(),
                },
            )
            .unwrap();
        self.till
            .outbox_confirmed(&req.request, &applied.results)
            .unwrap();
        for c in &applied.capsules {
            self.till_pulls(&c.capsule.entity, &[c.capsule.id.as_str()]);
        }
        let v = self.hub_version();
        self.till.advance_position(v, v).unwrap();
        Some(req.client)
    }
}

#[test]
fn a_flooding_client_delays_another_clients_sale_by_one_request_not_by_its_backlog() {
    let s = shop();
    setup(&s);
    for i in 0..200 {
        s.till
            .apply_local_for(&order(&format!("flood-{i}")), "A", "10.0.0.66")
            .unwrap();
    }
    s.till
        .apply_local_for(&order("sale"), "A", "127.0.0.1")
        .unwrap();
    let mut turn = String::new();
    let mut sent = Vec::new();
    while sent.len() < 3 {
        turn = s.drain_fair(&turn).unwrap();
        sent.push(turn.clone());
    }
    assert_eq!(
        sent,
        ["10.0.0.66", "127.0.0.1", "10.0.0.66"],
        "the cashier's sale goes second, not after 200 flood requests"
    );
    assert!(s.hub.pull("order", "sale", None).is_ok());
}

#[test]
fn one_send_carries_a_round_of_every_clients_oldest_requests() {
    let s = shop();
    setup(&s);
    for i in 0..10 {
        for client in ["10.0.0.5", "10.0.0.6", "127.0.0.1"] {
            s.till
                .apply_local_for(&order(&format!("{client}-{i}")), "A", client)
                .unwrap();
        }
    }
    // Two mutations a request: 64 mutations are 32 requests, clients in turn from the one
    // after the last served.
    let send = s.till.outbox_next_fair("till-a", "10.0.0.5", 64).unwrap();
    let clients: Vec<&str> = send.iter().map(|r| r.client.as_str()).collect();
    assert_eq!(send.len(), 30, "every waiting request fits: {clients:?}");
    assert_eq!(
        &clients[..4],
        ["10.0.0.6", "127.0.0.1", "10.0.0.5", "10.0.0.6"]
    );
    let firsts: Vec<&str> = send[..3]
        .iter()
        .map(|r| r.batch.mutations[0].row["id"].as_str().unwrap())
        .collect();
    assert_eq!(firsts, ["10.0.0.6-0", "127.0.0.1-0", "10.0.0.5-0"]);
    let small = s.till.outbox_next_fair("till-a", "", 7).unwrap();
    assert_eq!(small.len(), 3, "a send stops at its size");
}

#[test]
fn a_send_ends_with_the_round_that_carries_a_cashiers_only_sale() {
    let flooded = |cashier: bool| {
        let s = shop();
        setup(&s);
        for i in 0..40 {
            for client in ["10.0.0.5", "10.0.0.6"] {
                s.till
                    .apply_local_for(&order(&format!("{client}-{i}")), "A", client)
                    .unwrap();
            }
        }
        if cashier {
            s.till
                .apply_local_for(&order("sale"), "A", "10.0.0.9")
                .unwrap();
        }
        let send = s.till.outbox_next_fair("till-a", "", 64).unwrap();
        send.iter().map(|r| r.client.clone()).collect::<Vec<_>>()
    };
    // Two devices flood the till: a send carries their backlog in rounds, 32 requests.
    assert_eq!(flooded(false).len(), 32);
    // A cashier's one sale waits for one round of theirs, not for 32 requests.
    assert_eq!(flooded(true), ["10.0.0.5", "10.0.0.6", "10.0.0.9"]);
}

#[test]
fn a_write_never_overtakes_an_older_write_of_another_client_to_the_same_order() {
    let s = shop();
    setup(&s);
    // A screen adds a line to o1, then the cashier (another client) pays it: the payment must
    // not reach the hub before the line it pays for.
    s.till
        .apply_local_for(
            &batch(vec![m(
                "order_line",
                Action::Insert,
                json!({"id": "l-first", "order_id": "o1", "name_en": "Tea", "qty": 1, "unit_price": 500, "created_at": T}),
            )]),
            "A",
            "10.0.0.7",
        )
        .unwrap();
    s.till
        .apply_local_for(
            &batch(vec![m(
                "order_line",
                Action::Insert,
                json!({"id": "l-second", "order_id": "o1", "name_en": "Tea", "qty": 1, "unit_price": 500, "created_at": T}),
            )]),
            "A",
            "10.0.0.7",
        )
        .unwrap();
    s.till
        .apply_local_for(
            &batch(vec![m(
                "order_payment",
                Action::Insert,
                json!({"id": "p1", "order_id": "o1", "method": "cash", "amount": 1000, "paid_at": T}),
            )]),
            "A",
            "127.0.0.1",
        )
        .unwrap();
    // The cashier's turn comes after 10.0.0.7's first request; its payment would overtake the
    // second line, so the oldest request goes instead.
    let first = s.drain_fair("").unwrap();
    assert_eq!(first, "10.0.0.7");
    let next = s.till.outbox_next_fair("till-a", &first, 64).unwrap();
    assert_eq!(next.len(), 1, "nothing goes along with the older line");
    let next = &next[0];
    assert_eq!(
        next.client, "10.0.0.7",
        "the older line goes before the payment"
    );
    assert!(next.oldest);
    while s.drain_fair("").is_some() {}
    let payments = s.hub.pull("order", "o1", Some("payments")).unwrap();
    assert_eq!(
        payments.payload["payments"].as_array().map(Vec::len),
        Some(1)
    );
}

#[test]
fn a_client_with_a_full_line_is_refused_and_the_cashier_still_sells() {
    let s = shop();
    setup(&s);
    *s.till.test_waiting_cap.lock().unwrap() = Some(6);
    for i in 0..3 {
        s.till
            .apply_local_for(&order(&format!("f{i}")), "A", "10.0.0.66")
            .unwrap();
    }
    let refused = s
        .till
        .apply_local_for(&order("f3"), "A", "10.0.0.66")
        .unwrap_err();
    assert!(matches!(refused, StoreError::Busy(_)), "{refused}");
    assert!(
        s.till.pull("order", "f3", None).is_err(),
        "a refused write leaves nothing behind"
    );
    s.till
        .apply_local_for(&order("sale"), "A", "127.0.0.1")
        .unwrap();
    // Once some of its writes have gone through, the client may queue again.
    let mut turn = String::new();
    while let Some(c) = s.drain_fair(&turn) {
        turn = c;
    }
    s.till
        .apply_local_for(&order("f3"), "A", "10.0.0.66")
        .unwrap();
}

/// SQLite steps the till runs to drain and merge back `n` requests.
fn steps_to_drain(s: &Shop, n: usize) -> u64 {
    let before = s.till.vm_steps.load(Ordering::Relaxed);
    let mut turn = String::new();
    for _ in 0..n {
        turn = s.drain_fair(&turn).unwrap();
    }
    s.till.vm_steps.load(Ordering::Relaxed) - before
}

#[test]
fn draining_a_request_costs_the_same_behind_a_backlog_of_thousands() {
    let cost = |backlog: usize| {
        let s = shop();
        setup(&s);
        for i in 0..backlog {
            s.till
                .apply_local_for(&order(&format!("o-{i}")), "A", "127.0.0.1")
                .unwrap();
        }
        steps_to_drain(&s, 40)
    };
    let small = cost(100);
    let big = cost(4000);
    assert!(
        (big as f64) < small as f64 * 1.3,
        "40 requests cost {small} SQLite steps behind 100 queued, {big} behind 4000"
    );
}
