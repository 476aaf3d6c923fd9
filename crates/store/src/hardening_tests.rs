//! Store behaviour under hostile or extreme input: ranges, checked derivation, numbering,
//! bounds per parent, one derivation per request, storage faults, backups, and property tests.

use std::sync::Arc;

use capsule_protocol::{Action, Mutation, MutationBatch, Schema};
use proptest::prelude::*;
use serde_json::{Value, json};

use crate::testutil::open_temp;
use crate::{ApplyMode, Store, StoreError};

const T: &str = "2026-11-24T12:00:00Z";

fn m(table: &str, action: Action, row: Value) -> Mutation {
    Mutation::new(table, action, row)
}

fn run(store: &Store, muts: Vec<Mutation>) -> Result<crate::Applied, StoreError> {
    store.apply(
        &MutationBatch {
            mutations: muts,
            source: Some("till-a".into()),
        },
        &ApplyMode::Authoritative {
            source: "till-a".into(),
        },
    )
}

fn shift(id: &str) -> Mutation {
    m(
        "pos_shift",
        Action::Insert,
        json!({"id": id, "node_id": "till-a", "cashier": "Mona", "opened_at": T, "opening_float": 20000}),
    )
}

fn order(id: &str, extra: Value) -> Mutation {
    let mut row = json!({"id": id, "shift_id": "s1", "opened_at": T});
    row.as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    m("order_header", Action::Insert, row)
}

fn line(id: &str, order: &str, qty: i64, price: i64, discount: i64) -> Mutation {
    m(
        "order_line",
        Action::Insert,
        json!({"id": id, "order_id": order, "name_en": "Mixed grill", "qty": qty,
               "unit_price": price, "discount": discount, "created_at": T}),
    )
}

fn order_no(store: &Store, id: &str) -> i64 {
    store.pull("order", id, Some("header")).unwrap().payload["order_no"]
        .as_i64()
        .unwrap()
}

#[test]
fn a_discount_larger_than_its_line_is_refused_and_writes_nothing() {
    let (_d, store) = open_temp();
    run(&store, vec![shift("s1"), order("o1", json!({}))]).unwrap();
    let before = store.digest().unwrap();
    let e = run(&store, vec![line("l1", "o1", 1, 1000, 1001)]).unwrap_err();
    assert!(
        matches!(&e, StoreError::Invalid(s) if s.contains("larger than qty x unit_price")),
        "{e}"
    );
    assert_eq!(store.digest().unwrap(), before);
}

#[test]
fn one_order_with_the_largest_number_does_not_stop_numbering() {
    let (_d, store) = open_temp();
    run(
        &store,
        vec![
            shift("s1"),
            order("o1", json!({})),
            order("big", json!({"order_no": 1_000_000_000})),
        ],
    )
    .unwrap();
    assert_eq!(order_no(&store, "o1"), 1);
    run(&store, vec![order("o2", json!({}))]).unwrap();
    run(&store, vec![order("o3", json!({}))]).unwrap();
    // Past the top of the range: the lowest numbers no open order holds.
    assert_eq!(order_no(&store, "o2"), 2);
    assert_eq!(order_no(&store, "o3"), 3);
    // A closed order's number is free again for the next wrap.
    run(
        &store,
        vec![m(
            "order_header",
            Action::Merge,
            json!({"id": "o1", "status": "closed"}),
        )],
    )
    .unwrap();
    run(&store, vec![order("o4", json!({}))]).unwrap();
    assert_eq!(order_no(&store, "o4"), 1);
}

#[test]
fn an_order_holds_at_most_its_declared_lines_and_the_rest_is_refused() {
    let (_d, store) = open_temp();
    run(&store, vec![shift("s1"), order("o1", json!({}))]).unwrap();
    let cap = Schema::builtin()
        .table("order_line")
        .unwrap()
        .max_per_parent
        .unwrap();
    let mut n = 0;
    while n < cap {
        let batch: Vec<_> = (n..(n + 200).min(cap))
            .map(|i| line(&format!("l{i}"), "o1", 1, 100, 0))
            .collect();
        n += batch.len();
        let a = run(&store, batch).unwrap();
        // Many writes to one order in one request: one capsule for it, not one per write.
        assert_eq!(
            a.capsules
                .iter()
                .filter(|c| c.capsule.entity == "order")
                .count(),
            1
        );
    }
    let before = store.digest().unwrap();
    let e = run(&store, vec![line("one-more", "o1", 1, 100, 0)]).unwrap_err();
    assert!(
        matches!(&e, StoreError::Invalid(s) if s.contains("the most allowed")),
        "{e}"
    );
    assert_eq!(store.digest().unwrap(), before);
    let totals = store.pull("order", "o1", Some("totals")).unwrap().payload;
    assert_eq!(totals["subtotal"], json!(cap as i64 * 100));
    assert_eq!(totals["item_count"], json!(cap as i64));
}

#[test]
fn timestamps_are_stored_in_one_form() {
    let (_d, store) = open_temp();
    run(
        &store,
        vec![
            shift("s1"),
            order("o1", json!({"opened_at": "2026-11-24T12:00:00.5Z"})),
        ],
    )
    .unwrap();
    let header = store.pull("order", "o1", Some("header")).unwrap().payload;
    assert_eq!(header["opened_at"], "2026-11-24T12:00:00.500Z");
    let shift = store.pull("shift", "s1", Some("header")).unwrap().payload;
    assert_eq!(shift["opened_at"], "2026-11-24T12:00:00.000Z");
}

#[test]
fn a_column_whose_stored_type_differs_from_the_schema_is_refused_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("node.sqlite3");
    {
        let c = rusqlite::Connection::open(&path).unwrap();
        c.execute_batch("CREATE TABLE order_line (id TEXT PRIMARY KEY NOT NULL, qty TEXT)")
            .unwrap();
    }
    let e = Store::open(&path, Arc::new(Schema::builtin())).unwrap_err();
    assert!(
        e.to_string()
            .contains("order_line.qty is TEXT in the database file but INTEGER"),
        "{e}"
    );
}

#[test]
fn a_backup_taken_while_writing_opens_as_the_same_shop() {
    let (dir, store) = open_temp();
    run(
        &store,
        vec![
            shift("s1"),
            order("o1", json!({})),
            line("l1", "o1", 2, 1850, 0),
        ],
    )
    .unwrap();
    let dest = dir.path().join("backup.sqlite3");
    let size = store.backup_to(&dest).unwrap();
    assert!(size > 4096, "a backup of {size} bytes holds nothing");
    // The node keeps writing after the copy; the copy is the state at the time it was taken.
    let at_backup = store.digest().unwrap();
    run(&store, vec![line("l2", "o1", 1, 900, 0)]).unwrap();
    // A single file: no -wal beside it.
    assert!(!dir.path().join("backup.sqlite3-wal").exists());
    let restored_dir = tempfile::tempdir().unwrap();
    let restored_path = restored_dir.path().join("node.sqlite3");
    std::fs::copy(&dest, &restored_path).unwrap();
    let restored = Store::open(&restored_path, Arc::new(Schema::builtin())).unwrap();
    assert_eq!(restored.digest().unwrap(), at_backup);
    assert_eq!(restored.node_id(), store.node_id());
    let totals = restored
        .pull("order", "o1", Some("totals"))
        .unwrap()
        .payload;
    assert_eq!(totals["subtotal"], 3700);
}

#[test]
fn a_backup_of_a_missing_database_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let e =
        crate::backup_file(&dir.path().join("none.sqlite3"), &dir.path().join("b")).unwrap_err();
    assert!(e.to_string().contains("no database at"), "{e}");
}

/// One write a property test throws at an order: in range or well outside it.
#[derive(Debug, Clone)]
enum Op {
    Line {
        qty: i64,
        price: i64,
        discount: i64,
    },
    SetQty {
        line: usize,
        qty: i64,
    },
    Void {
        line: usize,
    },
    Pay {
        amount: i64,
        cash: bool,
    },
    Rates {
        tax: i64,
        service: i64,
        discount: i64,
    },
}

fn any_amount() -> impl Strategy<Value = i64> {
    prop_oneof![
        0i64..5_000,
        Just(100_000_000_000),
        Just(100_000_000_001),
        Just(-1),
        Just(i64::MAX),
        Just(i64::MIN),
        any::<i64>(),
    ]
}

fn any_op() -> impl Strategy<Value = Op> {
    let qty = prop_oneof![
        1i64..20,
        Just(10_000),
        Just(10_001),
        Just(0),
        Just(-4),
        any::<i64>()
    ];
    let rate = prop_oneof![
        0i64..2_000,
        Just(10_000),
        Just(10_001),
        Just(1_000_000_000_000_000),
        Just(-5)
    ];
    prop_oneof![
        (qty.clone(), any_amount(), any_amount()).prop_map(|(qty, price, discount)| Op::Line {
            qty,
            price,
            discount
        }),
        (0usize..8, qty).prop_map(|(line, qty)| Op::SetQty { line, qty }),
        (0usize..8).prop_map(|line| Op::Void { line }),
        (any_amount(), any::<bool>()).prop_map(|(amount, cash)| Op::Pay { amount, cash }),
        (rate.clone(), rate, any_amount()).prop_map(|(tax, service, discount)| Op::Rates {
            tax,
            service,
            discount
        }),
    ]
}

/// The order's totals computed the plain way, in 128-bit, from what the store holds.
fn expected_totals(store: &Store) -> Value {
    let lines = store.table_rows("order_line").unwrap();
    let pays = store.table_rows("order_payment").unwrap();
    let o = &store.table_rows("order_header").unwrap()[0];
    let i = |r: &serde_json::Map<String, Value>, k: &str| i128::from(r[k].as_i64().unwrap_or(0));
    let live: Vec<_> = lines.iter().filter(|l| l["status"] != "void").collect();
    let subtotal: i128 = live.iter().map(|l| i(l, "qty") * i(l, "unit_price")).sum();
    let discounts: i128 =
        live.iter().map(|l| i(l, "discount")).sum::<i128>() + i(o, "order_discount");
    let net = (subtotal - discounts).max(0);
    let bp = |a: i128, r: i128| (a * r + 5_000).div_euclid(10_000);
    let service = bp(net, i(o, "service_rate_bp"));
    let tax = bp(net + service, i(o, "tax_rate_bp"));
    let paid: i128 = pays.iter().map(|p| i(p, "amount")).sum();
    let total = net + service + tax;
    let items: i128 = live.iter().map(|l| i(l, "qty")).sum();
    let as64 = |v: i128| json!(i64::try_from(v).expect("a stored total fits in 64 bits"));
    json!({"subtotal": as64(subtotal), "discount_total": as64(discounts), "service_total": as64(service),
           "tax_total": as64(tax), "total": as64(total), "paid_total": as64(paid),
           "balance_due": as64(total - paid), "item_count": as64(items)})
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// For any sequence of writes: a refused one changes nothing; after an accepted one the
    /// derived totals equal a straightforward recomputation; and no accepted write makes an
    /// ordinary later write fail.
    #[test]
    fn derived_totals_match_a_plain_recomputation(ops in proptest::collection::vec(any_op(), 1..24)) {
        let (_d, store) = open_temp();
        run(&store, vec![shift("s1"), order("o1", json!({"tax_rate_bp": 1500}))]).unwrap();
        let mut lines: Vec<String> = Vec::new();
        for (n, op) in ops.iter().enumerate() {
            let mutation = match op {
                Op::Line { qty, price, discount } => line(&format!("l{n}"), "o1", *qty, *price, *discount),
                Op::SetQty { line, qty } if !lines.is_empty() => m("order_line", Action::Merge,
                    json!({"id": lines[line % lines.len()], "qty": qty})),
                Op::Void { line } if !lines.is_empty() => m("order_line", Action::Merge,
                    json!({"id": lines[line % lines.len()], "status": "void"})),
                Op::SetQty { .. } | Op::Void { .. } => continue,
                Op::Pay { amount, cash } => m("order_payment", Action::Insert, json!({"id": format!("p{n}"),
                    "order_id": "o1", "method": if *cash { "cash" } else { "card" }, "amount": amount,
                    "tendered": if *cash { json!(amount.saturating_add(500)) } else { Value::Null }, "paid_at": T})),
                Op::Rates { tax, service, discount } => m("order_header", Action::Merge,
                    json!({"id": "o1", "tax_rate_bp": tax, "service_rate_bp": service, "order_discount": discount})),
            };
            let before = store.digest().unwrap();
            match run(&store, vec![mutation]) {
                Ok(_) => {
                    if let Op::Line { .. } = op { lines.push(format!("l{n}")); }
                }
                Err(StoreError::Invalid(_)) => prop_assert_eq!(store.digest().unwrap(), before),
                Err(e) => prop_assert!(false, "a write failed with something other than a 400: {e}"),
            }
            let totals = store.pull("order", "o1", Some("totals")).unwrap().payload;
            let want = expected_totals(&store);
            for (k, v) in want.as_object().unwrap() {
                prop_assert_eq!(&totals[k], v, "{} after {:?}", k, op);
            }
            let shift = store.pull("shift", "s1", Some("totals")).unwrap().payload;
            prop_assert!(shift["cash_sales"].as_i64().unwrap() >= 0);
        }
        // Ordinary writes still work: a new order with a line and its payment.
        run(&store, vec![order("o2", json!({"tax_rate_bp": 1500})), line("after", "o2", 1, 1000, 0),
            m("order_payment", Action::Insert, json!({"id": "pay-after", "order_id": "o2", "method": "card", "amount": 1150, "paid_at": T}))])
            .unwrap();
        prop_assert_eq!(order_no(&store, "o2"), 2);
    }
}
