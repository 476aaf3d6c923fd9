//! Staff against real `tilld` processes: what each role may do through the hub's own API, a
//! manager's approval on the spot, a screen that forges who it is, 10,000 wrong PINs against a
//! hub and a till, and a till that sells offline for a shift with two cashiers and a manager.

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::{Value, json};

const PINS: &[(&str, &str, &str)] = &[
    ("st-owner", "owner", "1111"),
    ("st-manager", "manager", "2222"),
    ("st-mona", "cashier", "3333"),
    ("st-ali", "cashier", "4444"),
    ("st-waiter", "waiter", "5555"),
];

fn pin_of(staff: &str) -> &'static str {
    PINS.iter().find(|(id, ..)| *id == staff).unwrap().2
}

/// A screen's request to `node` as `staff` (a session token), perhaps with an approval.
fn as_staff(
    node: &Node,
    method: reqwest::Method,
    path: &str,
    token: Option<&str>,
    approval: Option<&str>,
    body: Value,
) -> (u16, Value) {
    let mut r = node
        .request(method, path)
        .header("content-type", "application/json")
        .body(body.to_string());
    if let Some(t) = token {
        r = r.header("x-capsule-staff", t);
    }
    if let Some(a) = approval {
        r = r.header("x-capsule-approval", a);
    }
    let r = r.send().expect("request");
    let status = r.status().as_u16();
    (status, r.json().unwrap_or(Value::Null))
}

fn login(node: &Node, staff: &str) -> String {
    let (code, body) = as_staff(
        node,
        reqwest::Method::POST,
        "/api/staff/login",
        None,
        None,
        json!({"staff": staff, "pin": pin_of(staff)}),
    );
    assert_eq!(code, 200, "{staff} logs in: {body}");
    body["token"].as_str().unwrap().to_string()
}

fn write(
    node: &Node,
    token: Option<&str>,
    approval: Option<&str>,
    muts: &[(&str, &str, Value)],
) -> (u16, Value) {
    let body = json!({"mutations": muts.iter().map(|(t, a, r)| mutation(t, a, r.clone())).collect::<Vec<_>>()});
    as_staff(
        node,
        reqwest::Method::POST,
        "/api/mutations",
        token,
        approval,
        body,
    )
}

/// The shop's owner (the first PIN), then the rest of the staff added by the owner.
fn hire_staff(hub: &Node) -> String {
    let add = |token: Option<&str>, (id, role, pin): (&str, &str, &str)| {
        let (code, body) = as_staff(
            hub,
            reqwest::Method::POST,
            "/api/staff",
            token,
            None,
            json!({"id": id, "name": id.trim_start_matches("st-"), "role": role, "pin": pin}),
        );
        assert_eq!(code, 200, "hiring {id}: {body}");
    };
    add(None, PINS[0]);
    let owner = login(hub, "st-owner");
    for p in &PINS[1..] {
        add(Some(&owner), *p);
    }
    owner
}

/// A shift, an order with one line sent to the kitchen, and a menu item.
fn open_for_business(hub: &Node, owner: &str) {
    let (code, body) = write(
        hub,
        Some(owner),
        None,
        &[
            (
                "shop_settings",
                "save",
                json!({"id": "shop", "name": "Capsule", "currency": "SAR"}),
            ),
            (
                "pos_shift",
                "insert",
                json!({"id": "s1", "node_id": "hub", "cashier": "Mona", "opened_at": T}),
            ),
            (
                "order_header",
                "insert",
                json!({"id": "o1", "shift_id": "s1", "opened_at": T}),
            ),
            (
                "order_line",
                "insert",
                json!({"id": "l1", "order_id": "o1", "name_en": "Grill", "qty": 1, "unit_price": 4000, "status": "sent", "created_at": T}),
            ),
            (
                "menu_category",
                "insert",
                json!({"id": "c1", "name_en": "Drinks"}),
            ),
            (
                "menu_item",
                "insert",
                json!({"id": "i1", "code": "D1", "name_en": "Tea", "category_id": "c1", "price": 500, "station": "bar"}),
            ),
        ],
    );
    assert_eq!(code, 200, "{body}");
}

fn line_status(node: &Node, line: &str) -> String {
    let (_, order) = node.get("/api/entities/order/o1?parts=lines");
    order["payload"]["lines"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["id"] == line)
        .map(|l| l["status"].as_str().unwrap().to_string())
        .unwrap()
}

#[test]
fn each_role_does_at_the_hubs_api_what_it_may_and_a_forged_or_missing_login_does_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let hub = Node::hub(&dir.path().join("hub"));
    let owner = hire_staff(&hub);
    open_for_business(&hub, &owner);
    let mona = login(&hub, "st-mona");
    let manager = login(&hub, "st-manager");
    let waiter = login(&hub, "st-waiter");
    let price = |token: Option<&str>| {
        write(
            &hub,
            token,
            None,
            &[("menu_item", "merge", json!({"id": "i1", "price": 900}))],
        )
    };

    // Nobody logged in: refused, nothing written.
    let (code, body) = price(None);
    assert_eq!(code, 403, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("menu.edit"),
        "{body}"
    );
    // A cashier may not change prices; a manager may.
    assert_eq!(price(Some(&mona)).0, 403);
    assert_eq!(hub.get("/api/entities/item/i1").1["payload"]["price"], 500);
    assert_eq!(price(Some(&manager)).0, 200);
    assert_eq!(hub.get("/api/entities/item/i1").1["payload"]["price"], 900);

    // A screen that writes `by` itself is not believed: the node stamps its own session.
    let forged = json!({"mutations": [{
        "mid": new_id(), "table": "menu_item", "action": "merge",
        "row": {"id": "i1", "price": 100}, "by": {"staff": "st-owner"}
    }]});
    let (code, _) = as_staff(
        &hub,
        reqwest::Method::POST,
        "/api/mutations",
        Some(&mona),
        None,
        forged,
    );
    assert_eq!(code, 403, "a cashier claiming to be the owner");
    assert_eq!(hub.get("/api/entities/item/i1").1["payload"]["price"], 900);

    // Tea at 1.00 when the menu says 9.00, claiming the menu showed 1.00: the node prices the
    // line from its own menu, and a price override is a manager's.
    let sell_tea = |id: &str, price: i64| {
        let forged = json!({"mutations": [{
            "mid": new_id(), "table": "order_line", "action": "insert",
            "row": {"id": id, "order_id": "o1", "item_code": "D1", "name_en": "Tea", "qty": 1, "unit_price": price, "created_at": T},
            "by": {"staff": "st-mona", "menu_price": price}
        }]});
        as_staff(
            &hub,
            reqwest::Method::POST,
            "/api/mutations",
            Some(&mona),
            None,
            forged,
        )
    };
    let (code, body) = sell_tea("l-cheap", 100);
    assert_eq!(code, 403, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("order.price"),
        "{body}"
    );
    let (code, body) = sell_tea("l-tea", 900);
    assert_eq!(code, 200, "at the menu's price: {body}");

    // Voiding a line the kitchen has: the cashier is refused, asks the manager, who approves
    // with their PIN; a waiter's PIN approves nothing.
    let void = [("order_line", "merge", json!({"id": "l1", "status": "void"}))];
    let (code, body) = write(&hub, Some(&mona), None, &void);
    assert_eq!(code, 403);
    assert!(
        body["error"].as_str().unwrap().contains("order.void"),
        "{body}"
    );
    let approve = |staff: &str| {
        as_staff(
            &hub,
            reqwest::Method::POST,
            "/api/staff/approve",
            Some(&mona),
            None,
            json!({"staff": staff, "pin": pin_of(staff), "permission": "order.void"}),
        )
    };
    assert_eq!(
        approve("st-waiter").0,
        403,
        "a waiter may not approve a void"
    );
    let (code, ok) = approve("st-manager");
    assert_eq!(code, 200, "{ok}");
    let approval = ok["approval"].as_str().unwrap().to_string();
    assert_eq!(line_status(&hub, "l1"), "sent");
    let (code, body) = write(&hub, Some(&mona), Some(&approval), &void);
    assert_eq!(code, 200, "{body}");
    assert_eq!(line_status(&hub, "l1"), "void");
    // The approval was for that write only.
    let (code, _) = write(
        &hub,
        Some(&mona),
        Some(&approval),
        &[("menu_item", "merge", json!({"id": "i1", "price": 100}))],
    );
    assert_eq!(code, 403, "an approval is used once");
    // Who did it is kept with the write.
    let (_, journal) = hub.get("/api/journal?after=0");
    let void_by = journal["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| &e["mutation"])
        .find(|m| m["row"]["id"] == "l1" && m["row"]["status"] == "void")
        .map(|m| m["by"].clone())
        .unwrap_or_else(|| panic!("the void in {journal}"));
    assert_eq!(void_by["staff"], "st-mona");
    assert_eq!(void_by["approver"], "st-manager");

    // The Z: a cashier may not take it, the manager may.
    let (code, _) = as_staff(
        &hub,
        reqwest::Method::POST,
        "/api/reports/z",
        Some(&mona),
        None,
        json!({}),
    );
    assert_eq!(code, 403);
    assert_eq!(
        hub.get("/api/reports/z").1["reports"]
            .as_array()
            .map_or(0, Vec::len),
        0
    );
    let (code, z) = as_staff(
        &hub,
        reqwest::Method::POST,
        "/api/reports/z",
        Some(&manager),
        None,
        json!({}),
    );
    assert_eq!(code, 201, "{z}");

    // A waiter may not add staff; nobody may store a PIN as it is.
    let (code, _) = as_staff(
        &hub,
        reqwest::Method::POST,
        "/api/staff",
        Some(&waiter),
        None,
        json!({"name": "Guest", "role": "owner", "pin": "9999"}),
    );
    assert_eq!(code, 403);
    let (code, _) = write(
        &hub,
        Some(&owner),
        None,
        &[(
            "staff_pin",
            "save",
            json!({"id": "st-waiter", "pin_hash": "5555"}),
        )],
    );
    assert_eq!(code, 400);

    // Logged out: the session writes nothing more.
    as_staff(
        &hub,
        reqwest::Method::POST,
        "/api/staff/logout",
        Some(&manager),
        None,
        json!({}),
    );
    assert_eq!(price(Some(&manager)).0, 403);
    let (code, _) = as_staff(
        &hub,
        reqwest::Method::GET,
        "/api/staff/me",
        Some(&manager),
        None,
        Value::Null,
    );
    assert_eq!(code, 401);
}

/// 10,000 wrong PINs as fast as one client sends them; then the right PIN once the lockout
/// is over. Returns (verified wrong, refused while locked out, seconds the attack took).
fn brute_force(node: &Node, staff: &str) -> (usize, usize, f64) {
    let started = Instant::now();
    let (mut wrong, mut locked) = (0, 0);
    let http = client();
    for guess in 0..10_000u32 {
        let pin = format!("{:04}", (guess + 5000) % 10_000);
        if pin == pin_of(staff) {
            continue;
        }
        let r = http
            .post(format!("{}/api/staff/login", node.url))
            .bearer_auth(node.local_key())
            .json(&json!({"staff": staff, "pin": pin}))
            .send()
            .unwrap();
        match r.status().as_u16() {
            401 => wrong += 1,
            429 => locked += 1,
            other => panic!("guess {pin}: {other} {:?}", r.text()),
        }
    }
    (wrong, locked, started.elapsed().as_secs_f64())
}

#[test]
fn ten_thousand_wrong_pins_are_stopped_by_the_lockout_at_a_hub_and_at_a_till() {
    let dir = tempfile::tempdir().unwrap();
    // A short first lockout (the shop's is 30 s) so the test sees several of them.
    // Their logs kept, at the most detailed level a shop would run, to look for PINs in.
    let spawn = |name: &str, args: &[&str]| {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_tilld"));
        cmd.args(args)
            .args(["--listen", "127.0.0.1:0", "--data"])
            .arg(dir.path().join(name))
            .env("CAPSULE_PIN_LOCKOUT_MS", "1000")
            .env("RUST_LOG", "debug");
        let log = std::fs::File::create(dir.path().join(format!("{name}.log"))).unwrap();
        Node::from_command_logging(cmd, &dir.path().join(name), log.into())
    };
    let hub = spawn("hub", &["--role", "hub"]);
    hire_staff(&hub);
    let till = spawn("till", &["--role", "till", "--hub", &hub.url]);
    wait_to_hold(&[&till], "staffpin", "st-manager");
    for (node, name) in [(&hub, "hub"), (&till, "till")] {
        let (wrong, locked, secs) = brute_force(node, "st-manager");
        eprintln!(
            "{name}: 10,000 guesses in {secs:.1} s: {wrong} checked, {locked} refused while locked out"
        );
        // Five guesses per lockout, each lockout twice the last: a handful of windows.
        assert!(wrong <= 5 * 8, "{name}: {wrong} guesses were checked");
        assert!(wrong + locked >= 9_999);
        // Locked out by address too: guessing another member of staff from here is refused.
        let (code, _) = as_staff(
            node,
            reqwest::Method::POST,
            "/api/staff/login",
            None,
            None,
            json!({"staff": "st-mona", "pin": "0000"}),
        );
        assert_eq!(code, 429, "{name}: the guesser's address is locked out");
        // The right PIN works again once the lockout is over.
        wait_until(Duration::from_secs(300), "the lockout to end", || {
            let (code, _) = as_staff(
                node,
                reqwest::Method::POST,
                "/api/staff/login",
                None,
                None,
                json!({"staff": "st-manager", "pin": pin_of("st-manager")}),
            );
            assert!(code == 200 || code == 429, "{code}");
            code == 200
        });
    }
    // Each node told the shop: the hub holds a lockout of the manager by itself and by the
    // till, with the guesser's address and how many lockouts in a row.
    wait_until(
        Duration::from_secs(20),
        "the lockouts reported to the hub",
        || {
            let rows = hub.get("/api/tables/staff_lockout").1["rows"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            let of_manager: Vec<_> = rows
                .iter()
                .filter(|r| r["staff_id"] == "st-manager" && r["address"] == "127.0.0.1")
                .filter(|r| r["lockouts"].as_i64().unwrap_or(0) >= 2)
                .collect();
            of_manager.len() == 2 && of_manager[0]["node_id"] != of_manager[1]["node_id"]
        },
    );
    // A screen cannot write one itself (a false alarm, or a guesser's hidden).
    let (code, _) = write(
        &hub,
        None,
        None,
        &[(
            "staff_lockout",
            "save",
            json!({"id": "x", "node_id": "hub", "locked_at": T, "until": T}),
        )],
    );
    assert_eq!(code, 403);
    // The logs name who was locked out and from where, never a PIN or a hash.
    for name in ["hub", "till"] {
        let log = std::fs::read_to_string(dir.path().join(format!("{name}.log"))).unwrap();
        assert!(log.contains("wrong PIN"), "{name} logs the wrong PINs");
        assert!(!log.contains("$argon2id$"), "{name} logged a PIN hash");
        assert!(
            !log.contains("\"pin\"") && !log.contains("pin="),
            "{name} logged a PIN"
        );
    }
}

#[test]
fn a_till_offline_for_a_shift_with_two_cashiers_and_a_managers_void_drains_with_every_writes_staff()
{
    let dir = tempfile::tempdir().unwrap();
    let hub_dir = dir.path().join("hub");
    let hub = Node::hub(&hub_dir);
    let owner = hire_staff(&hub);
    open_for_business(&hub, &owner);
    let till = Node::till(&dir.path().join("till"), &hub);
    wait_to_hold(&[&till], "staffpin", "st-ali");
    wait_to_hold(&[&till], "order", "o1");
    let port = hub.port();
    hub.kill9();

    // The till logs staff in from its own copy of the PINs, and sells.
    let mona = login(&till, "st-mona");
    let sale = |token: &str, order: &str, line: &str, status: &str| {
        let (code, body) = write(
            &till,
            Some(token),
            None,
            &[
                (
                    "order_header",
                    "insert",
                    json!({"id": order, "shift_id": "s1", "opened_at": T}),
                ),
                (
                    "order_line",
                    "insert",
                    json!({"id": line, "order_id": order, "item_code": "D1", "name_en": "Tea", "qty": 2, "unit_price": 500, "status": status, "created_at": T}),
                ),
            ],
        );
        assert_eq!(code, 202, "queued on the till: {body}");
    };
    sale(&mona, "o-mona", "l-mona", "new");
    // Ali takes over the till (a switch: his own login), rings up a round the kitchen has.
    let ali = login(&till, "st-ali");
    sale(&ali, "o-ali", "l-ali", "sent");
    // He may not void it alone, offline too; the manager approves on the till.
    let void = [(
        "order_line",
        "merge",
        json!({"id": "l-ali", "status": "void"}),
    )];
    assert_eq!(write(&till, Some(&ali), None, &void).0, 403);
    let (code, ok) = as_staff(
        &till,
        reqwest::Method::POST,
        "/api/staff/approve",
        Some(&ali),
        None,
        json!({"staff": "st-manager", "pin": pin_of("st-manager"), "permission": "order.void"}),
    );
    assert_eq!(code, 200, "{ok}");
    let (code, body) = write(&till, Some(&ali), ok["approval"].as_str(), &void);
    assert_eq!(code, 202, "{body}");
    // Mona takes the payment for her order.
    let (code, _) = write(
        &till,
        Some(&mona),
        None,
        &[
            (
                "order_payment",
                "insert",
                json!({"id": "p-mona", "order_id": "o-mona", "method": "cash", "amount": 1000, "paid_at": T}),
            ),
            (
                "order_header",
                "merge",
                json!({"id": "o-mona", "status": "paid"}),
            ),
        ],
    );
    assert_eq!(code, 202);

    // Their hours, entered on the till while it was offline: Mona 08:00-16:00 with a half
    // hour's break, Ali 12:00-20:00.
    let punch = |token: &str, id: &str, staff: &str, kind: &str, from: &str, to: &str| {
        let at = |h: &str| format!("2026-12-07T{h}:00.000Z");
        let (code, body) = write(
            &till,
            Some(token),
            None,
            &[
                (
                    "time_clock",
                    "insert",
                    json!({"id": id, "staff_id": staff, "kind": kind, "started_at": at(from)}),
                ),
                (
                    "time_clock",
                    "merge",
                    json!({"id": id, "ended_at": at(to), "status": "closed"}),
                ),
            ],
        );
        assert_eq!(code, 202, "{body}");
    };
    // Hours punched after the fact are a correction: the manager's (clock.others), not
    // the cashier's (her own punches are stamped now: the store's tests).
    let karim = login(&till, "st-manager");
    punch(&karim, "tc-mona", "st-mona", "work", "08:00", "16:00");
    punch(
        &karim,
        "tc-mona-break",
        "st-mona",
        "break",
        "12:00",
        "12:30",
    );
    punch(&karim, "tc-ali", "st-ali", "work", "12:00", "20:00");
    // Nobody clocks someone else in without the permission.
    let (code, _) = write(
        &till,
        Some(&ali),
        None,
        &[(
            "time_clock",
            "insert",
            json!({"id": "tc-x", "staff_id": "st-mona", "started_at": T}),
        )],
    );
    assert_eq!(code, 403);

    // The hub comes back on the same address: everything drains, nothing refused.
    let hub = Node::spawn(
        &hub_dir,
        &["--role", "hub", "--listen", &format!("127.0.0.1:{port}")],
    );
    wait_until(Duration::from_secs(60), "the till to drain", || {
        drained(&till)
    });
    assert_nothing_refused(&till);
    assert_eq!(line_status_of(&hub, "o-ali", "l-ali"), "void");
    let (_, journal) = hub.get("/api/journal?after=0");
    let by_mid: Vec<Value> = journal["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e.get("mutation").or(Some(e)).cloned())
        .collect();
    let by = |table: &str, id: &str| -> Value {
        by_mid
            .iter()
            .find(|m| m["table"] == table && m["row"]["id"] == id)
            .map(|m| m["by"].clone())
            .unwrap_or(Value::Null)
    };
    assert_eq!(
        by("order_header", "o-mona")["staff"],
        "st-mona",
        "{journal}"
    );
    assert_eq!(by("order_header", "o-ali")["staff"], "st-ali");
    assert_eq!(by("order_payment", "p-mona")["staff"], "st-mona");
    let void_by = by_mid
        .iter()
        .find(|m| m["row"]["id"] == "l-ali" && m["row"]["status"] == "void")
        .map(|m| m["by"].clone())
        .unwrap();
    assert_eq!(void_by["staff"], "st-ali");
    assert_eq!(void_by["approver"], "st-manager");
    assert_eq!(
        void_by["device"],
        status(&till)["node_id"],
        "the till that served the screen"
    );

    // The order's timeline on the hub, in the order it happened, with who approved the void.
    let (code, timeline) = hub.get("/api/orders/o-ali/timeline");
    assert_eq!(code, 200, "{timeline}");
    let seen: Vec<(String, String, String)> = timeline["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            let s = |k: &str| e[k].as_str().unwrap_or_default().to_string();
            (s("what"), s("staff_name"), s("approver_name"))
        })
        .collect();
    let want = |w: &str, s: &str, a: &str| (w.to_string(), s.to_string(), a.to_string());
    assert_eq!(
        seen,
        vec![
            want("order.open", "ali", ""),
            want("line.add", "ali", ""),
            want("line.void", "ali", "manager"),
        ]
    );
    // The till keeps no journal: it asks the hub for the timeline.
    assert_eq!(till.get("/api/orders/o-ali/timeline").1, timeline);
    // The audit trail as a spreadsheet: a byte-order mark, the voids by the approver's name.
    let manager = login(&hub, "st-manager");
    let audit = |token: Option<&str>| {
        let mut r = hub.request(reqwest::Method::GET, "/api/audit?what=line.void&format=csv");
        if let Some(t) = token {
            r = r.header("x-capsule-staff", t);
        }
        r.send().unwrap()
    };
    assert_eq!(
        audit(None).status().as_u16(),
        403,
        "the audit is a manager's"
    );
    let csv = audit(Some(&manager)).text().unwrap();
    assert!(csv.starts_with('\u{feff}'), "{csv}");
    assert_eq!(csv.lines().count(), 2, "{csv}");
    assert!(csv.contains("line.void,ali,manager,"), "{csv}");

    // The Z: sales and hours per member of staff, to the cent and the minute.
    let (code, z) = as_staff(
        &hub,
        reqwest::Method::POST,
        "/api/reports/z",
        Some(&manager),
        None,
        json!({}),
    );
    assert_eq!(code, 201, "{z}");
    let row = |id: &str| {
        z["by_staff"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["staff_id"] == id)
            .cloned()
            .unwrap_or_else(|| panic!("{id} in {z}"))
    };
    assert_eq!(row("st-mona")["amount"], 1000);
    assert_eq!(row("st-mona")["payments"], 1);
    assert_eq!(row("st-mona")["worked_s"], 7 * 3600 + 1800);
    assert_eq!(row("st-mona")["break_s"], 1800);
    assert_eq!(row("st-ali")["amount"], 0);
    assert_eq!(row("st-ali")["worked_s"], 8 * 3600);
    let csv = hub
        .request(reqwest::Method::GET, "/api/reports/z/1?format=csv")
        .send()
        .unwrap()
        .text()
        .unwrap();
    assert!(
        csv.contains("\"staff_hours\",\"st-mona\",\"mona\",\"\",7.50,"),
        "{csv}"
    );
    assert!(
        csv.contains("\"staff_takings\",\"st-mona\",\"mona\",\"\",1,10.00"),
        "{csv}"
    );
}

fn line_status_of(node: &Node, order: &str, line: &str) -> String {
    let (_, o) = node.get(&format!("/api/entities/order/{order}?parts=lines"));
    o["payload"]["lines"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["id"] == line)
        .map(|l| l["status"].as_str().unwrap().to_string())
        .unwrap_or_default()
}

#[test]
fn a_paired_browser_never_gets_the_pin_hashes_and_a_till_does() {
    let shop = Shop::new(2);
    let hub = shop.start(0, "manager-pc", &["--priority", "10"]);
    let till = shop.start(1, "till-a", &[]);
    wait_for_hub(&hub, &[&till], Duration::from_secs(60));
    let owner = hire_staff(&hub);
    wait_until(Duration::from_secs(20), "the till to hold the PINs", || {
        count(&till.db(), "staff_pin") == PINS.len() as i64
    });
    // A till (a paired device) holds them; a paired browser is refused them on every route
    // that carries entities, and its working set has none.
    // Not even this machine's own screen: a cashier at the manager's PC is not a node.
    let (code, _) = hub.get("/api/entities/staffpin/st-owner");
    assert_eq!(code, 403);
    let cookie = paired_browser(&hub, &owner);
    let browser = |path: &str| {
        client()
            .get(format!("{}{path}", hub.url))
            .header("cookie", &cookie)
            .send()
            .unwrap()
    };
    for path in [
        "/api/entities/staffpin/st-owner",
        "/api/entities?entity=staffpin&ids=st-owner",
        "/api/tables/staff_pin",
        "/api/snapshot",
        "/api/journal?after=0",
    ] {
        assert_eq!(browser(path).status().as_u16(), 403, "{path}");
    }
    let ws = browser("/api/working-set");
    assert_eq!(ws.status().as_u16(), 200);
    let text = ws.text().unwrap();
    assert!(
        !text.contains("$argon2id$") && text.contains("st-owner"),
        "staff without their PINs"
    );
}

/// A browser the manager paired with `hub` (a kitchen TV): its cookie.
fn paired_browser(hub: &Node, owner: &str) -> String {
    pair_browser(hub, "Kitchen TV", "kitchen", |path| {
        // In a shop with staff, a manager's session approves it (settings.edit).
        let (code, body) = as_staff(hub, reqwest::Method::POST, path, None, None, json!({}));
        assert_eq!(code, 403, "nobody logged in: {body}");
        as_staff(
            hub,
            reqwest::Method::POST,
            path,
            Some(owner),
            None,
            json!({}),
        )
    })
}
