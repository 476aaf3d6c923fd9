//! Staff permissions against real stores: every action tried by every role, at the hub and in
//! a till's local commit (offline), with approvals and the shop before it has staff.

use capsule_protocol::{Action, Actor, Mutation, MutationBatch, MutationStatus};
use serde_json::{Value, json};

use crate::outbox_tests::{Shop, batch, m, shop};
use crate::permits::BUILTIN_ROLES;
use crate::{ApplyMode, StoreError};

const T: &str = "2026-12-07T12:00:00Z";
const HASH: &str =
    "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHRzYWx0$0123456789abcdef0123456789abcdef0123456789a";

/// Stamps `muts` as the node serving the screen would: the staff, the approver, and a line's
/// menu prices (the line's own prices, as rung up from the menu, unless the write already
/// says what the menu showed: a price override's case).
fn by(staff: Option<&str>, approver: Option<&str>, mut muts: Vec<Mutation>) -> Vec<Mutation> {
    for m in &mut muts {
        let shown = m.by.take().unwrap_or_default();
        let price = |c: &str| m.row.get(c).and_then(Value::as_i64);
        let (menu_price, menu_modifier_price) = match shown.menu_price {
            Some(_) => (shown.menu_price, shown.menu_modifier_price),
            None if m.table == "order_line" => (
                price("unit_price"),
                Some(price("modifier_price").unwrap_or(0)),
            ),
            None => (None, None),
        };
        let menu_modifiers = m
            .row
            .get("modifiers")
            .and_then(Value::as_str)
            .map(String::from);
        m.by = Some(Actor {
            menu_price,
            menu_modifier_price,
            menu_modifiers,
            staff: staff.map(String::from),
            approver: approver.map(String::from),
            // The approvals these tests give are for voids (as a manager's PIN gives one).
            approved: approver.map(|_| "order.void".to_string()),
            device: Some("till-a".into()),
            at: Some(T.into()),
        });
        if staff.is_none() && approver.is_none() {
            m.by = None;
        }
    }
    muts
}

fn hub_apply(s: &Shop, muts: Vec<Mutation>) -> Result<crate::Applied, StoreError> {
    s.hub.apply(
        &MutationBatch {
            mutations: muts,
            source: Some("till-a".into()),
        },
        &ApplyMode::Authoritative {
            source: "till-a".into(),
        },
    )
}

/// A shop with an open order (one line still new, one sent to the kitchen), a paid order, a
/// menu item, settings, and one member of staff per built-in role (`st-<role>`); the till holds
/// all of it.
fn staffed_shop() -> Shop {
    let s = shop();
    let setup = vec![
        m(
            "shop_settings",
            Action::Save,
            json!({"id": "shop", "name": "Capsule", "currency": "SAR"}),
        ),
        m(
            "pos_shift",
            Action::Insert,
            json!({"id": "s1", "node_id": "till-a", "cashier": "Mona", "opened_at": T}),
        ),
        m(
            "order_header",
            Action::Insert,
            json!({"id": "o1", "shift_id": "s1", "opened_at": T}),
        ),
        m(
            "order_line",
            Action::Insert,
            json!({"id": "l-new", "order_id": "o1", "name_en": "Tea", "qty": 1, "unit_price": 500, "created_at": T}),
        ),
        m(
            "order_line",
            Action::Insert,
            json!({"id": "l-sent", "order_id": "o1", "name_en": "Grill", "qty": 1, "unit_price": 4000, "status": "sent", "created_at": T}),
        ),
        m(
            "order_header",
            Action::Insert,
            json!({"id": "o-paid", "shift_id": "s1", "opened_at": T}),
        ),
        m(
            "order_line",
            Action::Insert,
            json!({"id": "l-paid", "order_id": "o-paid", "name_en": "Tea", "qty": 1, "unit_price": 500, "created_at": T}),
        ),
        m(
            "order_payment",
            Action::Insert,
            json!({"id": "p1", "order_id": "o-paid", "method": "cash", "amount": 500, "paid_at": T}),
        ),
        m(
            "order_header",
            Action::Merge,
            json!({"id": "o-paid", "status": "paid"}),
        ),
        m(
            "menu_category",
            Action::Insert,
            json!({"id": "c1", "name_en": "Drinks"}),
        ),
        m(
            "menu_item",
            Action::Insert,
            json!({"id": "i1", "code": "D1", "name_en": "Tea", "category_id": "c1", "price": 500, "station": "bar"}),
        ),
    ];
    s.hub_writes(setup);
    // The owner and their PIN first (nobody can log in yet), then the others by the owner.
    hub_apply(&s, vec![staff_row("owner"), pin_row("owner")]).unwrap();
    let others: Vec<Mutation> = BUILTIN_ROLES
        .iter()
        .filter(|(id, ..)| *id != "owner")
        .map(|(id, ..)| staff_row(id))
        .collect();
    hub_apply(&s, by(Some("st-owner"), None, others)).unwrap();
    s.till.load_snapshot(&s.hub.snapshot().unwrap()).unwrap();
    s
}

/// The owner lets anyone give discounts up to `bp` of a line's or an order's value.
fn free_discounts_up_to(s: &Shop, bp: i64) {
    hub_apply(
        s,
        by(
            Some("st-owner"),
            None,
            merge(
                "shop_settings",
                json!({"id": "shop", "discount_limit_bp": bp}),
            ),
        ),
    )
    .unwrap();
}

fn pin_row(role: &str) -> Mutation {
    m(
        "staff_pin",
        Action::Save,
        json!({"id": format!("st-{role}"), "pin_hash": HASH}),
    )
}

fn staff_row(role: &str) -> Mutation {
    m(
        "staff",
        Action::Insert,
        json!({"id": format!("st-{role}"), "name": role, "role": role}),
    )
}

/// One thing staff do, the permissions it needs, and its writes.
struct Case {
    name: &'static str,
    needs: &'static [&'static str],
    writes: fn() -> Vec<Mutation>,
}

/// The member of staff whose own PIN the PIN case resets: they may, without the permission.
const PIN_OF: &str = "waiter";

fn merge(table: &str, row: Value) -> Vec<Mutation> {
    vec![m(table, Action::Merge, row)]
}

const CASES: &[Case] = &[
    Case {
        name: "open an order",
        needs: &["order.sell"],
        writes: || {
            vec![m(
                "order_header",
                Action::Insert,
                json!({"id": "o2", "shift_id": "s1", "opened_at": T}),
            )]
        },
    },
    Case {
        name: "add a line",
        needs: &["order.sell"],
        writes: || {
            vec![m(
                "order_line",
                Action::Insert,
                json!({"id": "l2", "order_id": "o1", "name_en": "Tea", "qty": 2, "unit_price": 500, "created_at": T}),
            )]
        },
    },
    Case {
        name: "remove a line not yet sent",
        needs: &["order.sell"],
        writes: || merge("order_line", json!({"id": "l-new", "status": "void"})),
    },
    Case {
        name: "void a line the kitchen has",
        needs: &["order.void"],
        writes: || merge("order_line", json!({"id": "l-sent", "status": "void"})),
    },
    Case {
        name: "void an order the kitchen has",
        needs: &["order.void"],
        writes: || merge("order_header", json!({"id": "o1", "status": "void"})),
    },
    Case {
        name: "discount a line",
        needs: &["order.sell", "order.discount"],
        writes: || merge("order_line", json!({"id": "l-new", "discount": 100})),
    },
    Case {
        name: "sell at a price other than the menu's",
        needs: &["order.sell", "order.price"],
        writes: || {
            let mut w = vec![m(
                "order_line",
                Action::Insert,
                json!({"id": "l3", "order_id": "o1", "item_code": "D1", "name_en": "Tea", "qty": 1, "unit_price": 100, "created_at": T}),
            )];
            w[0].by = Some(Actor {
                menu_price: Some(500),
                menu_modifier_price: Some(0),
                ..Default::default()
            });
            w
        },
    },
    Case {
        name: "take a payment",
        needs: &["order.pay"],
        writes: || {
            vec![m(
                "order_payment",
                Action::Insert,
                json!({"id": "p2", "order_id": "o1", "method": "card", "amount": 1000, "paid_at": T}),
            )]
        },
    },
    Case {
        name: "reopen a paid order",
        needs: &["order.reopen"],
        writes: || merge("order_header", json!({"id": "o-paid", "status": "open"})),
    },
    Case {
        name: "remove a payment",
        needs: &["order.refund"],
        writes: || vec![m("order_payment", Action::Delete, json!({"id": "p1"}))],
    },
    Case {
        name: "open a shift",
        needs: &["shift.run"],
        writes: || {
            vec![m(
                "pos_shift",
                Action::Insert,
                json!({"id": "s2", "node_id": "till-a", "cashier": "Ali", "opened_at": T}),
            )]
        },
    },
    Case {
        name: "mark an item sold out",
        needs: &["menu.sold_out"],
        writes: || merge("menu_item", json!({"id": "i1", "available": false})),
    },
    Case {
        name: "change a price",
        needs: &["menu.edit"],
        writes: || merge("menu_item", json!({"id": "i1", "price": 600})),
    },
    Case {
        name: "change the tax rate",
        needs: &["settings.edit"],
        writes: || merge("shop_settings", json!({"id": "shop", "tax_rate_bp": 1000})),
    },
    Case {
        name: "take a Z",
        needs: &["report.z"],
        writes: || {
            vec![m(
                "z_report",
                Action::Insert,
                json!({"id": "z1", "number": 1, "taken_at": T, "from_v": 0, "to_v": 1, "orders": 0, "total": 0, "body": "{}"}),
            )]
        },
    },
    Case {
        name: "add a member of staff",
        needs: &["staff.edit"],
        writes: || {
            vec![m(
                "staff",
                Action::Insert,
                json!({"id": "st-new", "name": "New", "role": "waiter"}),
            )]
        },
    },
    Case {
        name: "reset a waiter's PIN",
        needs: &["staff.edit"],
        writes: || {
            vec![m(
                "staff_pin",
                Action::Save,
                json!({"id": "st-waiter", "pin_hash": HASH}),
            )]
        },
    },
    Case {
        name: "make a cashier an owner",
        needs: &["staff.edit", "staff.roles"],
        writes: || merge("staff", json!({"id": "st-cashier", "role": "owner"})),
    },
    Case {
        name: "change what waiters may do",
        needs: &["staff.roles"],
        writes: || {
            vec![m(
                "staff_role",
                Action::Save,
                json!({"id": "waiter", "name_en": "Waiter", "permissions": "order.sell,order.pay"}),
            )]
        },
    },
    Case {
        name: "clock a waiter in",
        needs: &["clock.others"],
        writes: || {
            vec![m(
                "time_clock",
                Action::Insert,
                json!({"id": "tc1", "staff_id": "st-waiter", "started_at": T}),
            )]
        },
    },
    Case {
        name: "bump kitchen work",
        needs: &["kitchen.bump"],
        writes: || {
            vec![m(
                "job_order_header",
                Action::Insert,
                json!({"id": "j1", "order_id": "o1", "batch_id": "b1", "station": "grill", "created_at": T}),
            )]
        },
    },
];

/// Who tries: each built-in role's member, and nobody logged in.
fn actors() -> Vec<Option<&'static str>> {
    let mut out: Vec<Option<&'static str>> =
        BUILTIN_ROLES.iter().map(|(id, ..)| Some(*id)).collect();
    out.push(None);
    out
}

fn role_has(role: Option<&str>, need: &str) -> bool {
    match role {
        Some("owner") => true,
        Some(r) => BUILTIN_ROLES
            .iter()
            .find(|(id, ..)| *id == r)
            .is_some_and(|(_, _, _, p)| p.contains(&need)),
        // Nobody logged in: a kitchen screen's device bumps.
        None => need == "kitchen.bump",
    }
}

#[test]
fn every_role_may_do_what_its_role_allows_and_nothing_else_at_the_hub_and_offline_on_a_till() {
    let mut tried = 0;
    for case in CASES {
        for role in actors() {
            // What a waiter does to their own PIN or time needs no permission over others.
            let own_pin = matches!(case.name, "reset a waiter's PIN" | "clock a waiter in")
                && role == Some(PIN_OF);
            let expect = own_pin || case.needs.iter().all(|n| role_has(role, n));
            let staff = role.map(|r| format!("st-{r}"));
            let writes = by(staff.as_deref(), None, (case.writes)());
            let s = staffed_shop();
            // At the hub (a till calling the hub's API directly) ...
            let hub_before = s.hub.digest().unwrap();
            let at_hub = hub_apply(&s, writes.clone());
            // ... and in the till's own commit, with no hub in reach.
            let till_before = s.till.digest().unwrap();
            let at_till = s.till.apply_local(&batch(writes), "A");
            for (place, outcome, before, store) in [
                ("hub", at_hub.map(|_| ()), hub_before, &s.hub),
                ("till", at_till.map(|_| ()), till_before, &s.till),
            ] {
                match (expect, outcome) {
                    (true, Ok(())) => {}
                    (false, Err(StoreError::Forbidden(why))) => {
                        let named = case.needs.iter().any(|n| why.contains(n));
                        assert!(named, "{} by {role:?} at the {place}: {why}", case.name);
                        assert_eq!(
                            store.digest().unwrap(),
                            before,
                            "{} by {role:?} wrote at the {place}",
                            case.name
                        );
                    }
                    (expect, got) => panic!(
                        "{} by {role:?} at the {place}: expected allowed={expect}, got {got:?}",
                        case.name
                    ),
                }
            }
            tried += 1;
        }
    }
    assert_eq!(tried, CASES.len() * (BUILTIN_ROLES.len() + 1));
}

#[test]
fn a_managers_approval_lets_a_cashier_void_and_is_kept_with_the_write() {
    let s = staffed_shop();
    let void = || merge("order_line", json!({"id": "l-sent", "status": "void"}));
    // A waiter's approval is no approval.
    let e = hub_apply(&s, by(Some("st-cashier"), Some("st-waiter"), void())).unwrap_err();
    assert!(
        matches!(&e, StoreError::Forbidden(w) if w.contains("order.void")),
        "{e}"
    );
    // Offline on the till with the manager's approval: committed locally, and the write
    // reaches the hub with the cashier and the approver, where it is checked again.
    let local = s
        .till
        .apply_local(
            &batch(by(Some("st-cashier"), Some("st-manager"), void())),
            "A",
        )
        .unwrap();
    assert_eq!(local.results[0].status, MutationStatus::Applied);
    let queued = s.till.outbox_next("till-a").unwrap().unwrap();
    let actor = queued.batch.mutations[0].by.clone().unwrap();
    assert_eq!(actor.staff.as_deref(), Some("st-cashier"));
    assert_eq!(actor.approver.as_deref(), Some("st-manager"));
    assert!(s.drain_one());
    let line = s.hub.pull("order", "o1", Some("lines")).unwrap().payload;
    let voided = line["lines"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["id"] == "l-sent")
        .unwrap();
    assert_eq!(voided["status"], "void");
    let page = s.hub.journal_since(0, i64::MAX, 1000).unwrap();
    let entry = serde_json::to_string(&page).unwrap();
    assert!(
        entry.contains("\"approver\":\"st-manager\""),
        "the hub's journal keeps the approver"
    );
}

#[test]
fn a_write_the_till_allowed_offline_is_refused_at_the_hub_when_the_role_lost_the_permission() {
    let s = staffed_shop();
    let sold_out = || merge("menu_item", json!({"id": "i1", "available": false}));
    s.till
        .apply_local(&batch(by(Some("st-cashier"), None, sold_out())), "A")
        .unwrap();
    // Meanwhile the owner took sold-out away from cashiers at the hub.
    hub_apply(
        &s,
        by(Some("st-owner"), None, vec![m("staff_role", Action::Save, json!({"id": "cashier", "name_en": "Cashier", "permissions": "order.sell,order.pay"}))]),
    )
    .unwrap();
    let before = s.hub.digest().unwrap();
    assert!(s.drain_one());
    assert_eq!(
        s.hub.digest().unwrap(),
        before,
        "nothing written at the hub"
    );
    let refused: Vec<_> = s
        .till
        .outbox_list()
        .unwrap()
        .into_iter()
        .filter(|e| e.state == "rejected")
        .collect();
    assert_eq!(refused.len(), 1);
    let why = refused[0].error.clone().unwrap_or_default();
    assert!(why.contains("menu.sold_out"), "{why}");
}

#[test]
fn a_shop_where_nobody_can_log_in_sells_as_before_and_its_first_pin_is_an_owners() {
    let s = shop();
    s.hub_writes(vec![m(
        "pos_shift",
        Action::Insert,
        json!({"id": "s1", "node_id": "till-a", "cashier": "Mona", "opened_at": T}),
    )]);
    let sale = |id: &str| {
        vec![m(
            "order_header",
            Action::Insert,
            json!({"id": id, "shift_id": "s1", "opened_at": T}),
        )]
    };
    // Staff without PINs change nothing: nobody can log in yet.
    hub_apply(&s, vec![staff_row("cashier"), staff_row("owner")]).unwrap();
    hub_apply(&s, sale("o8")).unwrap();
    let e = hub_apply(&s, vec![pin_row("cashier")]).unwrap_err();
    assert!(
        matches!(&e, StoreError::Forbidden(w) if w.contains("owner")),
        "{e}"
    );
    hub_apply(&s, vec![pin_row("owner")]).unwrap();
    // Now nobody logged in may sell.
    let e = hub_apply(&s, sale("o9")).unwrap_err();
    assert!(
        matches!(&e, StoreError::Forbidden(w) if w.contains("order.sell")),
        "{e}"
    );
}

#[test]
fn a_pin_is_stored_only_as_an_argon2id_hash_and_a_manager_cannot_reset_the_owners() {
    let s = staffed_shop();
    let e = hub_apply(
        &s,
        by(
            Some("st-manager"),
            None,
            vec![m(
                "staff_pin",
                Action::Save,
                json!({"id": "st-cashier", "pin_hash": "1234"}),
            )],
        ),
    )
    .unwrap_err();
    assert!(
        matches!(&e, StoreError::Invalid(w) if w.contains("argon2id")),
        "{e}"
    );
    let e = hub_apply(
        &s,
        by(
            Some("st-manager"),
            None,
            vec![m(
                "staff_pin",
                Action::Save,
                json!({"id": "st-owner", "pin_hash": HASH}),
            )],
        ),
    )
    .unwrap_err();
    assert!(
        matches!(&e, StoreError::Forbidden(w) if w.contains("staff.roles")),
        "{e}"
    );
    // A cashier sets their own PIN.
    hub_apply(
        &s,
        by(
            Some("st-cashier"),
            None,
            vec![m(
                "staff_pin",
                Action::Save,
                json!({"id": "st-cashier", "pin_hash": HASH}),
            )],
        ),
    )
    .unwrap();
    // The owner's role is not a row anyone writes.
    let e = hub_apply(
        &s,
        by(
            Some("st-owner"),
            None,
            vec![m(
                "staff_role",
                Action::Save,
                json!({"id": "owner", "name_en": "Owner", "permissions": "order.sell"}),
            )],
        ),
    )
    .unwrap_err();
    assert!(matches!(&e, StoreError::Forbidden(_)), "{e}");
}

#[test]
fn a_small_discount_within_the_shops_limit_needs_no_manager() {
    let s = staffed_shop();
    free_discounts_up_to(&s, 1000);
    // 10% of a 5.00 line is 0.50: allowed; 0.51 is not.
    hub_apply(
        &s,
        by(
            Some("st-cashier"),
            None,
            merge("order_line", json!({"id": "l-new", "discount": 50})),
        ),
    )
    .unwrap();
    let e = hub_apply(
        &s,
        by(
            Some("st-cashier"),
            None,
            merge("order_line", json!({"id": "l-new", "discount": 51})),
        ),
    )
    .unwrap_err();
    assert!(
        matches!(&e, StoreError::Forbidden(w) if w.contains("order.discount")),
        "{e}"
    );
}

#[test]
fn a_member_of_staff_who_left_can_do_nothing() {
    let s = staffed_shop();
    hub_apply(
        &s,
        by(
            Some("st-owner"),
            None,
            merge("staff", json!({"id": "st-manager", "active": false})),
        ),
    )
    .unwrap();
    let e = hub_apply(
        &s,
        by(
            Some("st-manager"),
            None,
            merge("menu_item", json!({"id": "i1", "price": 700})),
        ),
    )
    .unwrap_err();
    assert!(
        matches!(&e, StoreError::Forbidden(w) if w.contains("not an active")),
        "{e}"
    );
}

#[test]
fn every_staff_write_leaves_an_audit_row_on_the_orders_timeline_that_outlives_the_journal() {
    let s = staffed_shop();
    hub_apply(
        &s,
        by(
            Some("st-cashier"),
            None,
            vec![m(
                "order_line",
                Action::Insert,
                json!({"id": "l3", "order_id": "o1", "name_en": "Tea", "qty": 1, "unit_price": 500, "created_at": T}),
            )],
        ),
    )
    .unwrap();
    hub_apply(
        &s,
        by(
            Some("st-cashier"),
            Some("st-manager"),
            merge("order_line", json!({"id": "l-sent", "status": "void"})),
        ),
    )
    .unwrap();
    let timeline = s.hub.order_timeline("o1").unwrap();
    let seen: Vec<(&str, Option<&str>, Option<&str>)> = timeline
        .iter()
        .map(|e| (e.what.as_str(), e.staff.as_deref(), e.approver.as_deref()))
        .collect();
    assert_eq!(
        seen,
        vec![
            ("line.add", Some("st-cashier"), None),
            ("line.void", Some("st-cashier"), Some("st-manager")),
        ]
    );
    assert_eq!(timeline[1].approver_name.as_deref(), Some("manager"));
    assert_eq!(timeline[1].device.as_deref(), Some("till-a"));
    // A week later the journal is pruned; the audit stays.
    let later = capsule_protocol::now_ms() + (crate::KEEP_DAYS + 1) * 24 * 3600 * 1000;
    s.hub.prune_history(later).unwrap();
    assert_eq!(s.hub.order_timeline("o1").unwrap(), timeline);
    let voids = s
        .hub
        .audit_page(&crate::audit::AuditFilter {
            what: Some("line.void".into()),
            limit: 50,
            ..Default::default()
        })
        .unwrap();
    assert_eq!(voids.len(), 1);
    let by_manager = s
        .hub
        .audit_page(&crate::audit::AuditFilter {
            staff: Some("st-owner".into()),
            limit: 50,
            ..Default::default()
        })
        .unwrap();
    assert!(
        by_manager
            .iter()
            .all(|e| e.staff.as_deref() == Some("st-owner"))
    );
    assert_eq!(
        by_manager.len(),
        BUILTIN_ROLES.len() - 1,
        "the owner hired the others"
    );
}

#[test]
fn an_audit_page_reads_through_an_index_whatever_the_filter() {
    let s = staffed_shop();
    let filters = [
        crate::audit::AuditFilter {
            staff: Some("st-owner".into()),
            ..Default::default()
        },
        crate::audit::AuditFilter {
            what: Some("line.void".into()),
            ..Default::default()
        },
        crate::audit::AuditFilter {
            from: Some("2026-12-07T00:00:00.000Z".into()),
            to: Some("2026-12-08T00:00:00.000Z".into()),
            ..Default::default()
        },
        crate::audit::AuditFilter::default(),
    ];
    for f in filters {
        let (sql, args) = crate::audit::audit_query(&f);
        let plan = s
            .hub
            .with_reader(|c| {
                let mut stmt = c.prepare(&format!("EXPLAIN QUERY PLAN {sql}"))?;
                let steps: Vec<String> = stmt
                    .query_map(rusqlite::params_from_iter(args.iter()), |r| {
                        r.get::<_, String>(3)
                    })?
                    .collect::<rusqlite::Result<_>>()?;
                Ok(steps.join("; "))
            })
            .unwrap();
        eprintln!("{f:?}: {plan}");
        let narrowed = f.staff.is_some() || f.what.is_some() || f.from.is_some();
        let top = plan.split("; ").next().unwrap_or_default().to_string();
        if narrowed {
            // Found through the filter's index, not by walking every row's version.
            assert!(top.starts_with("SEARCH a USING INDEX"), "{f:?}: {plan}");
        } else {
            assert!(top.contains("USING INDEX _audit_v"), "{f:?}: {plan}");
        }
    }
}

/// A till took over as hub (the manager's PC went off) with a write queued that its cashier was
/// allowed when they made it, but the owner had taken the permission away meanwhile (the till
/// had merged the role): the claim's adoption judges it again and sets it aside, like the hub.
#[test]
fn a_till_taking_over_judges_its_queued_writes_against_the_roles_it_holds_now() {
    let s = staffed_shop();
    s.till
        .apply_local(
            &batch(by(
                Some("st-cashier"),
                None,
                merge("menu_item", json!({"id": "i1", "available": false})),
            )),
            "A",
        )
        .unwrap();
    hub_apply(
        &s,
        by(
            Some("st-owner"),
            None,
            vec![m(
                "staff_role",
                Action::Save,
                json!({"id": "cashier", "name_en": "Cashier", "permissions": "order.sell,order.pay"}),
            )],
        ),
    )
    .unwrap();
    s.till_pulls("role", &["cashier"]);
    // The hub goes off before the till's write reached it; the till, copying the journal,
    // takes over and adopts its queue.
    s.till.set_keeps_journal(true);
    crate::handover_tests::till_copies_journal(&s);
    s.till.claim_hub(1).unwrap();
    s.till.adopt_outbox().unwrap();
    let refused: Vec<_> = s
        .till
        .outbox_list()
        .unwrap()
        .into_iter()
        .filter(|e| e.state == "rejected")
        .collect();
    assert_eq!(refused.len(), 1, "{refused:?}");
    assert!(
        refused[0]
            .error
            .as_deref()
            .is_some_and(|e| e.contains("menu.sold_out")),
        "{refused:?}"
    );
    let item = s.till.pull("item", "i1", Some("availability")).unwrap();
    assert_eq!(item.payload["available"], true, "the item is on sale again");
}

/// Each hole a review found, as the cashier (or manager) who would use it.
#[test]
fn an_approval_covers_only_what_was_approved() {
    let s = staffed_shop();
    // The manager approved a discount; the cashier uses that approval to reset the manager's
    // PIN (to log in as the manager later).
    let mut w = by(
        Some("st-cashier"),
        Some("st-manager"),
        vec![m(
            "staff_pin",
            Action::Save,
            json!({"id": "st-manager", "pin_hash": HASH}),
        )],
    );
    w[0].by.as_mut().unwrap().approved = Some("order.discount".into());
    let e = hub_apply(&s, w).unwrap_err();
    assert!(
        matches!(&e, StoreError::Forbidden(x) if x.contains("staff.edit")),
        "{e}"
    );
}

#[test]
fn a_status_is_judged_as_it_will_be_stored_not_as_the_write_spells_it() {
    let s = staffed_shop();
    // A whole-row save of the paid order that leaves its status out would reopen it.
    let e = hub_apply(
        &s,
        by(
            Some("st-cashier"),
            None,
            vec![m(
                "order_header",
                Action::Save,
                json!({"id": "o-paid", "shift_id": "s1", "opened_at": T}),
            )],
        ),
    )
    .unwrap_err();
    assert!(
        matches!(&e, StoreError::Forbidden(x) if x.contains("order.reopen")),
        "{e}"
    );
    // A line the kitchen has, put back to new (then voided as if never sent), or cut to 0 qty.
    for change in [
        json!({"id": "l-sent", "status": "new"}),
        json!({"id": "l-sent", "unit_price": 0}),
    ] {
        let e = hub_apply(
            &s,
            by(Some("st-cashier"), None, merge("order_line", change)),
        )
        .unwrap_err();
        assert!(
            matches!(&e, StoreError::Forbidden(x) if x.contains("order.void")),
            "{e}"
        );
    }
    // A line of a paid order.
    let e = hub_apply(
        &s,
        by(
            Some("st-cashier"),
            None,
            merge("order_line", json!({"id": "l-paid", "qty": 5})),
        ),
    )
    .unwrap_err();
    assert!(
        matches!(&e, StoreError::Forbidden(x) if x.contains("order.reopen")),
        "{e}"
    );
}

#[test]
fn a_discount_within_the_limit_is_judged_again_when_the_quantity_shrinks() {
    let s = staffed_shop();
    free_discounts_up_to(&s, 1000);
    // 10 teas at 5.00 with 5.00 off (10%), then 1 tea still 5.00 off.
    hub_apply(
        &s,
        by(
            Some("st-cashier"),
            None,
            merge(
                "order_line",
                json!({"id": "l-new", "qty": 10, "discount": 500}),
            ),
        ),
    )
    .unwrap();
    let e = hub_apply(
        &s,
        by(
            Some("st-cashier"),
            None,
            merge("order_line", json!({"id": "l-new", "qty": 1})),
        ),
    )
    .unwrap_err();
    assert!(
        matches!(&e, StoreError::Forbidden(x) if x.contains("order.discount")),
        "{e}"
    );
}

#[test]
fn a_pin_hash_must_carry_the_nodes_own_parameters() {
    let s = staffed_shop();
    let heavy = "$argon2id$v=19$m=4194304,t=4294967295,p=1$c2FsdHNhbHRzYWx0$0123456789abcdef0123456789abcdef0123456789a";
    let e = hub_apply(
        &s,
        by(
            Some("st-waiter"),
            None,
            vec![m(
                "staff_pin",
                Action::Save,
                json!({"id": "st-waiter", "pin_hash": heavy}),
            )],
        ),
    )
    .unwrap_err();
    assert!(matches!(&e, StoreError::Invalid(_)), "{e}");
}

#[test]
fn own_time_is_punched_now_and_never_made_up() {
    let s = staffed_shop();
    let punch = |row: Value| {
        hub_apply(
            &s,
            by(
                Some("st-waiter"),
                None,
                vec![m("time_clock", Action::Insert, row)],
            ),
        )
    };
    // Already closed, or started hours before the punch: made up.
    for row in [
        json!({"id": "tc1", "staff_id": "st-waiter", "started_at": T, "ended_at": T, "status": "closed"}),
        json!({"id": "tc2", "staff_id": "st-waiter", "started_at": "2026-12-07T04:00:00Z"}),
    ] {
        let e = punch(row).unwrap_err();
        assert!(
            matches!(&e, StoreError::Forbidden(x) if x.contains("clock.others")),
            "{e}"
        );
    }
    punch(json!({"id": "tc3", "staff_id": "st-waiter", "started_at": T})).unwrap();
    // Taking over someone else's open entry.
    hub_apply(
        &s,
        by(
            Some("st-cashier"),
            None,
            vec![m(
                "time_clock",
                Action::Insert,
                json!({"id": "tc4", "staff_id": "st-cashier", "started_at": T}),
            )],
        ),
    )
    .unwrap();
    let e = hub_apply(
        &s,
        by(
            Some("st-waiter"),
            None,
            merge("time_clock", json!({"id": "tc4", "staff_id": "st-waiter"})),
        ),
    )
    .unwrap_err();
    assert!(
        matches!(&e, StoreError::Forbidden(x) if x.contains("clock.others")),
        "{e}"
    );
}

#[test]
fn nobody_is_made_more_than_their_maker_and_the_last_owner_stays() {
    let s = staffed_shop();
    // The owner defines a role with staff.roles; a manager may not give it to anyone.
    hub_apply(&s, by(Some("st-owner"), None, vec![m("staff_role", Action::Save, json!({"id": "deputy", "name_en": "Deputy", "permissions": "staff.roles,staff.edit"}))])).unwrap();
    let e = hub_apply(
        &s,
        by(
            Some("st-manager"),
            None,
            merge("staff", json!({"id": "st-manager", "role": "deputy"})),
        ),
    )
    .unwrap_err();
    assert!(
        matches!(&e, StoreError::Forbidden(x) if x.contains("staff.roles")),
        "{e}"
    );
    let e = hub_apply(
        &s,
        by(
            Some("st-owner"),
            None,
            merge("staff", json!({"id": "st-owner", "active": false})),
        ),
    )
    .unwrap_err();
    assert!(
        matches!(&e, StoreError::Conflict(x) if x.contains("last owner")),
        "{e}"
    );
}

#[test]
fn where_the_shop_keeps_reasons_a_void_and_a_discount_give_one() {
    let s = staffed_shop();
    hub_apply(
        &s,
        by(
            Some("st-owner"),
            None,
            merge(
                "shop_settings",
                json!({"id": "shop", "void_reasons": "Wrong item\nCustomer changed mind", "discount_reasons": "Staff meal"}),
            ),
        ),
    )
    .unwrap();
    let void = |reason: Option<&str>| {
        let mut row = json!({"id": "l-sent", "status": "void"});
        if let Some(r) = reason {
            row["void_reason"] = json!(r);
        }
        hub_apply(&s, by(Some("st-manager"), None, merge("order_line", row)))
    };
    for bad in [None, Some("Because")] {
        let e = void(bad).unwrap_err();
        assert!(
            matches!(&e, StoreError::Invalid(x) if x.contains("Wrong item")),
            "{e}"
        );
    }
    void(Some("Wrong item")).unwrap();
    let lines = s.hub.pull("order", "o1", Some("lines")).unwrap().payload;
    let voided = lines["lines"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["id"] == "l-sent")
        .unwrap()
        .clone();
    assert_eq!(voided["void_reason"], "Wrong item");
    // A line not yet sent is removed without a reason; a discount needs one.
    hub_apply(
        &s,
        by(
            Some("st-manager"),
            None,
            merge("order_line", json!({"id": "l-new", "status": "void"})),
        ),
    )
    .unwrap();
    let e = hub_apply(
        &s,
        by(
            Some("st-manager"),
            None,
            merge("order_header", json!({"id": "o1", "order_discount": 100})),
        ),
    )
    .unwrap_err();
    assert!(
        matches!(&e, StoreError::Invalid(x) if x.contains("Staff meal")),
        "{e}"
    );
    hub_apply(
        &s,
        by(
            Some("st-manager"),
            None,
            merge(
                "order_header",
                json!({"id": "o1", "order_discount": 100, "discount_reason": "Staff meal"}),
            ),
        ),
    )
    .unwrap();
}

/// Stamps `muts` with the menu prices `store` holds, as the node serving the screen does.
fn priced_by(store: &crate::Store, staff: &str, mut muts: Vec<Mutation>) -> Vec<Mutation> {
    for m in &mut muts {
        let menu = store.menu_prices(&m.row).unwrap();
        m.by = Some(Actor {
            staff: Some(staff.into()),
            device: Some("till-a".into()),
            at: Some(T.into()),
            menu_price: menu.unit,
            menu_modifier_price: Some(menu.modifiers),
            menu_modifiers: Some(menu.modifier_names),
            ..Default::default()
        });
    }
    muts
}

#[test]
fn a_price_other_than_the_menus_needs_a_manager_on_every_path() {
    let s = staffed_shop();
    let line = |id: &str, price: i64| {
        vec![m(
            "order_line",
            Action::Insert,
            json!({"id": id, "order_id": "o1", "item_code": "D1", "name_en": "Tea", "qty": 1, "unit_price": price, "created_at": T}),
        )]
    };
    // At the menu's price: a cashier sells, at the hub and offline on the till.
    hub_apply(&s, priced_by(&s.hub, "st-cashier", line("l-menu", 500))).unwrap();
    // Tea at 1.00 instead of 5.00: refused on both paths, nothing written.
    for (place, store) in [("hub", &s.hub), ("till", &s.till)] {
        let before = store.digest().unwrap();
        let cheap = priced_by(store, "st-cashier", line("l-cheap", 100));
        let e = if place == "hub" {
            hub_apply(&s, cheap).unwrap_err()
        } else {
            s.till.apply_local(&batch(cheap), "A").unwrap_err()
        };
        assert!(
            matches!(&e, StoreError::Forbidden(w) if w.contains("order.price")),
            "{place}: {e}"
        );
        assert_eq!(store.digest().unwrap(), before, "{place} wrote");
    }
    // A line with no menu item is an open price: a manager's.
    let mut open = line("l-open", 100);
    open[0].row.remove("item_code");
    let e = hub_apply(&s, priced_by(&s.hub, "st-cashier", open.clone())).unwrap_err();
    assert!(
        matches!(&e, StoreError::Forbidden(w) if w.contains("order.price")),
        "{e}"
    );
    // With the manager's approval for a price, it goes, and the audit says what it was.
    let mut approved = priced_by(&s.hub, "st-cashier", line("l-cheap", 100));
    let actor = approved[0].by.as_mut().unwrap();
    actor.approver = Some("st-manager".into());
    actor.approved = Some("order.price".into());
    hub_apply(&s, approved).unwrap();
    let timeline = s.hub.order_timeline("o1").unwrap();
    assert!(
        timeline
            .iter()
            .any(|e| e.what == "line.price" && e.approver.as_deref() == Some("st-manager")),
        "{timeline:?}"
    );
    // Rung up offline at the price the till showed; the owner raised it at the hub meanwhile:
    // the honest sale is judged by the till's price and goes through.
    let offline = priced_by(&s.till, "st-cashier", line("l-old-price", 500));
    s.till.apply_local(&batch(offline), "A").unwrap();
    hub_apply(
        &s,
        by(
            Some("st-owner"),
            None,
            merge("menu_item", json!({"id": "i1", "price": 600})),
        ),
    )
    .unwrap();
    assert!(s.drain_one());
    let lines = s.hub.pull("order", "o1", Some("lines")).unwrap().payload;
    assert!(
        lines["lines"]
            .as_array()
            .unwrap()
            .iter()
            .any(|l| l["id"] == "l-old-price"),
        "the till's sale at the old price reached the hub"
    );
    // A modifier the menu prices, left unpriced on a line: an override too.
    hub_apply(
        &s,
        by(
            Some("st-owner"),
            None,
            vec![m(
                "menu_modifier",
                Action::Insert,
                json!({"id": "mod1", "item_id": "i1", "name_en": "Extra mint", "price": 200}),
            )],
        ),
    )
    .unwrap();
    let with_mint = |price: i64| {
        merge(
            "order_line",
            json!({"id": "l-menu", "order_id": "o1", "modifiers": "Extra mint", "modifier_price": price}),
        )
    };
    let e = hub_apply(&s, priced_by(&s.hub, "st-cashier", with_mint(0))).unwrap_err();
    assert!(
        matches!(&e, StoreError::Forbidden(w) if w.contains("order.price")),
        "{e}"
    );
    hub_apply(&s, priced_by(&s.hub, "st-cashier", with_mint(200))).unwrap();
}

#[test]
fn a_line_is_not_made_another_item_or_repriced_beside_its_stamp() {
    let s = staffed_shop();
    let forbidden =
        |e: StoreError| matches!(&e, StoreError::Forbidden(w) if w.contains("order.price"));
    hub_apply(
        &s,
        by(
            Some("st-owner"),
            None,
            vec![m(
                "menu_item",
                Action::Insert,
                json!({"id": "i2", "code": "G9", "name_en": "Steak", "category_id": "c1", "price": 5000, "station": "grill"}),
            )],
        ),
    )
    .unwrap();
    let tea = vec![m(
        "order_line",
        Action::Insert,
        json!({"id": "l-tea", "order_id": "o1", "item_code": "D1", "name_en": "Tea", "qty": 1, "unit_price": 500, "created_at": T}),
    )];
    hub_apply(&s, priced_by(&s.hub, "st-cashier", tea)).unwrap();
    // One request: the line made a steak (priced as one), then its price put back to the tea's
    // (priced against the line as stored, still tea). Each write alone looked like the menu.
    let steak = vec![
        m(
            "order_line",
            Action::Merge,
            json!({"id": "l-tea", "item_code": "G9", "name_en": "Steak", "unit_price": 5000}),
        ),
        m(
            "order_line",
            Action::Merge,
            json!({"id": "l-tea", "unit_price": 500}),
        ),
    ];
    let before = s.hub.digest().unwrap();
    assert!(forbidden(
        hub_apply(&s, priced_by(&s.hub, "st-cashier", steak)).unwrap_err()
    ));
    assert_eq!(s.hub.digest().unwrap(), before);
    // Renamed, or zero-rated to skip the VAT: another item at the tea's price.
    for change in [
        json!({"id": "l-tea", "name_en": "Wagyu"}),
        json!({"id": "l-tea", "tax_class": "zero"}),
    ] {
        let w = priced_by(
            &s.hub,
            "st-cashier",
            vec![m("order_line", Action::Merge, change)],
        );
        assert!(forbidden(hub_apply(&s, w).unwrap_err()));
    }
    // A new line named otherwise than the menu's item of its code is an open price.
    let wagyu = vec![m(
        "order_line",
        Action::Insert,
        json!({"id": "l-wagyu", "order_id": "o1", "item_code": "D1", "name_en": "Wagyu", "qty": 1, "unit_price": 500, "created_at": T}),
    )];
    assert!(forbidden(
        hub_apply(&s, priced_by(&s.hub, "st-cashier", wagyu)).unwrap_err()
    ));
    // Modifiers priced for none, applied where the line has one (a write sent beside it).
    hub_apply(
        &s,
        by(
            Some("st-owner"),
            None,
            vec![m(
                "menu_modifier",
                Action::Insert,
                json!({"id": "mod2", "item_id": "i1", "name_en": "Honey", "price": 300}),
            )],
        ),
    )
    .unwrap();
    let mut stale = priced_by(
        &s.hub,
        "st-cashier",
        vec![m(
            "order_line",
            Action::Merge,
            json!({"id": "l-tea", "modifier_price": 0}),
        )],
    );
    stale[0].row.insert("modifiers".into(), json!("Honey"));
    assert!(forbidden(hub_apply(&s, stale).unwrap_err()));
    // A write stamped by a node that prices no lines (an older release mid-upgrade) is not
    // judged here: its cashiers keep selling.
    let mut older = by(
        Some("st-cashier"),
        None,
        vec![m(
            "order_line",
            Action::Insert,
            json!({"id": "l-old", "order_id": "o1", "item_code": "D1", "name_en": "Tea", "qty": 1, "unit_price": 500, "created_at": T}),
        )],
    );
    let actor = older[0].by.as_mut().unwrap();
    actor.menu_price = None;
    actor.menu_modifier_price = None;
    hub_apply(&s, older).unwrap();
}
