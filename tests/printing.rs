//! End to end: a till prints kitchen tickets and receipts to ESC/POS network printers (virtual
//! ones here: TCP servers on 127.0.0.1 that keep every byte), decodes what they got, and keeps
//! a job for a printer that is off until it comes back, printing it once.

mod common;

use std::io::Read;
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use capsule_print::{Element, decode, render_png};
use common::*;
use serde_json::{Value, json};

/// A printer on 127.0.0.1: every connection's bytes, in order.
struct VirtualPrinter {
    port: u16,
    received: Arc<Mutex<Vec<Vec<u8>>>>,
}

impl VirtualPrinter {
    fn start() -> VirtualPrinter {
        VirtualPrinter::on(TcpListener::bind("127.0.0.1:0").unwrap())
    }

    fn on(listener: TcpListener) -> VirtualPrinter {
        let port = listener.local_addr().unwrap().port();
        let received = Arc::new(Mutex::new(Vec::new()));
        let r = received.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { continue };
                let mut bytes = Vec::new();
                if conn.read_to_end(&mut bytes).is_ok() && !bytes.is_empty() {
                    r.lock().unwrap().push(bytes);
                }
            }
        });
        VirtualPrinter { port, received }
    }

    fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn jobs(&self) -> Vec<Vec<Element>> {
        self.received
            .lock()
            .unwrap()
            .iter()
            .map(|b| decode(b).expect("valid ESC/POS"))
            .collect()
    }

    fn wait_for(&self, n: usize) -> Vec<Vec<Element>> {
        wait_until(Duration::from_secs(20), &format!("{n} print jobs"), || {
            self.received.lock().unwrap().len() >= n
        });
        self.jobs()
    }
}

fn texts(job: &[Element]) -> Vec<String> {
    job.iter()
        .filter_map(|e| match e {
            Element::Text { text, .. } => Some(text.trim().to_string()),
            _ => None,
        })
        .collect()
}

fn rasters(job: &[Element]) -> usize {
    job.iter()
        .filter(|e| matches!(e, Element::Raster(b) if b.ink() > 100))
        .count()
}

fn save_png(name: &str, job: &[Element]) {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("test-artifacts");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(name), render_png(job)).unwrap();
}

fn line(
    order: &str,
    code: &str,
    en: &str,
    ar: &str,
    station: &str,
    qty: i64,
    price: i64,
) -> (&'static str, &'static str, Value) {
    (
        "order_line",
        "insert",
        json!({"id": new_id(), "order_id": order, "item_code": code, "name_en": en, "name_ar": ar,
               "station": station, "qty": qty, "unit_price": price, "created_at": T}),
    )
}

#[test]
fn tickets_and_receipts_print_once_each_and_wait_for_a_printer_that_is_off() {
    let dir = tempfile::tempdir().unwrap();
    // The test's printers listen on this computer, which a manager must allow.
    let allow = ["--allow-printer", "127.0.0.1"];
    let hub = Node::spawn(
        &dir.path().join("hub"),
        &[&["--role", "hub", "--demo"][..], &allow].concat(),
    );
    let till = Node::spawn(
        &dir.path().join("till"),
        &[&["--role", "till", "--hub", &hub.url][..], &allow].concat(),
    );
    let grill = VirtualPrinter::start();
    let kitchen = VirtualPrinter::start();
    let counter = VirtualPrinter::start();
    hub.apply(&[
        ("printer", "insert", json!({"id": "p-grill", "name": "Grill", "role": "kitchen", "station": "grill", "address": grill.address()})),
        ("printer", "insert", json!({"id": "p-kitchen", "name": "Kitchen", "role": "kitchen", "address": kitchen.address()})),
        ("printer", "insert", json!({"id": "p-counter", "name": "Counter", "role": "receipt", "address": counter.address(), "drawer": true})),
        // Receipts in English (the demo shop prints both languages): its labels as text.
        ("shop_settings", "merge", json!({"id": "shop", "receipt_lang": "en"})),
    ]);

    // Till: an order with a grill item and a cold one, sent to the kitchen.
    let (shift, order) = (new_id(), new_id());
    till.apply(&[
        ("pos_shift", "insert", json!({"id": shift, "node_id": "till", "cashier": "Mona", "opened_at": T})),
        ("order_header", "insert", json!({"id": order, "order_no": 501, "shift_id": shift, "opened_at": T,
                                          "tax_rate_bp": 1500, "table_label": "T4", "currency": "SAR", "opened_by": "Mona"})),
        line(&order, "G05", "Chicken shawarma wrap", "شاورما دجاج", "grill", 2, 1850),
        line(&order, "C01", "Hummus", "حمص", "cold", 1, 1500),
    ]);
    wait_until(
        Duration::from_secs(10),
        "the printers reach the till",
        || {
            till.get("/api/tables/printer").1["rows"]
                .as_array()
                .is_some_and(|r| r.len() == 3)
        },
    );
    let (code, sent) = till.post_raw(&format!("/api/orders/{order}/send-to-kitchen"), "{}");
    assert_eq!(code, 200, "{sent}");
    assert_eq!(
        sent["print"]["queued"].as_array().unwrap().len(),
        2,
        "{sent}"
    );

    // One ticket per station, each on its own printer, Arabic as a picture.
    let g = grill.wait_for(1).remove(0);
    let t = texts(&g);
    assert_eq!(t[0], "GRILL", "{t:?}");
    assert!(
        t.iter().any(|l| l.starts_with("#501") && l.contains("T4")),
        "{t:?}"
    );
    assert!(
        t.contains(&"2 x Chicken shawarma wrap".to_string()),
        "{t:?}"
    );
    assert!(
        !t.iter().any(|l| l.contains("Hummus")),
        "the cold item is not the grill's"
    );
    assert_eq!(
        rasters(&g),
        1,
        "the Arabic name is printed as a raster image"
    );
    assert_eq!(g.last(), Some(&Element::Cut));
    let c = kitchen.wait_for(1).remove(0);
    assert_eq!(texts(&c)[0], "COLD");
    assert!(texts(&c).contains(&"1 x Hummus".to_string()));
    save_png("kitchen-ticket.png", &g);

    // An addition is marked as one.
    till.apply(&[line(
        &order,
        "G03",
        "Lamb kofta",
        "كفتة لحم",
        "grill",
        1,
        4200,
    )]);
    let (code, _) = till.post_raw(&format!("/api/orders/{order}/send-to-kitchen"), "{}");
    assert_eq!(code, 200);
    let g2 = grill.wait_for(2).remove(1);
    assert!(
        texts(&g2).iter().any(|l| l.contains("ADDITION (round 2)")),
        "{:?}",
        texts(&g2)
    );
    assert!(texts(&g2).contains(&"1 x Lamb kofta".to_string()));
    assert!(
        !texts(&g2).iter().any(|l| l.contains("shawarma")),
        "only the new round"
    );

    // A reprint asked for twice (a retry after a lost answer) prints once, marked.
    let batch = sent["batch_id"].as_str().unwrap();
    for _ in 0..2 {
        let (code, r) = till.post_raw(
            &format!("/api/batches/{batch}/tickets"),
            r#"{"request_id":"reprint-1"}"#,
        );
        assert_eq!(code, 200, "{r}");
    }
    let g3 = grill.wait_for(3).remove(2);
    assert!(texts(&g3).contains(&"** REPRINT **".to_string()));
    let (_, jobs) = till.get("/api/print/jobs");
    let kitchen_jobs = jobs["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|j| j["kind"] == "kitchen")
        .count();
    assert_eq!(
        kitchen_jobs, 5,
        "2 + 1 addition + 2 reprint tickets (grill and cold): {jobs}"
    );

    // Cash payment: the receipt, with the drawer kick; asking again prints nothing more.
    let (_, o) = till.get(&format!("/api/entities/order/{order}?parts=totals"));
    let total = o["payload"]["total"].as_i64().unwrap();
    till.apply(&[
        ("order_payment", "insert", json!({"id": new_id(), "order_id": order, "method": "cash", "amount": total, "tendered": 20_000, "paid_at": T})),
        ("order_header", "merge", json!({"id": order, "status": "paid"})),
    ]);
    let (code, first) = till.post_raw(&format!("/api/orders/{order}/receipt"), "{}");
    assert_eq!(code, 200, "{first}");
    let (_, again) = till.post_raw(&format!("/api/orders/{order}/receipt"), "{}");
    assert_eq!(again["already"], first["queued"], "{again}");
    let r = counter.wait_for(1).remove(0);
    let t = texts(&r);
    assert_eq!(
        t[0], "Capsule Grill House",
        "the shop's name from the settings: {t:?}"
    );
    let money = |v: i64| format!("{}.{:02}", v / 100, v % 100);
    assert!(
        t.iter()
            .any(|l| l.starts_with("TOTAL") && l.ends_with(&format!("SAR {}", money(total)))),
        "{t:?}"
    );
    assert!(
        t.iter()
            .any(|l| l.starts_with("2 x Chicken shawarma wrap") && l.ends_with("37.00")),
        "{t:?}"
    );
    assert!(
        t.iter()
            .any(|l| l.starts_with("Change") && l.ends_with(&money(20_000 - total))),
        "{t:?}"
    );
    assert!(
        r.contains(&Element::Drawer),
        "a cash payment opens the drawer"
    );
    assert!(
        rasters(&r) >= 3,
        "Arabic names, header and footer as pictures"
    );
    save_png("receipt.png", &r);

    // The counter printer is switched off: a reprint waits, retried, shown with its error.
    let off = TcpListener::bind("127.0.0.1:0").unwrap();
    let off_port = off.local_addr().unwrap().port();
    drop(off);
    hub.apply(&[(
        "printer",
        "merge",
        json!({"id": "p-counter", "address": format!("127.0.0.1:{off_port}")}),
    )]);
    wait_until(
        Duration::from_secs(10),
        "the new address reaches the till",
        || {
            till.get("/api/entities/printer/p-counter?parts=header").1["payload"]["address"]
                == format!("127.0.0.1:{off_port}")
        },
    );
    let (code, _) = till.post_raw(
        &format!("/api/orders/{order}/receipt"),
        r#"{"request_id":"copy-1"}"#,
    );
    assert_eq!(code, 200);
    let waiting = || -> Value {
        till.get("/api/print/jobs").1["jobs"]
            .as_array()
            .unwrap()
            .iter()
            .find(|j| j["address"] == format!("127.0.0.1:{off_port}"))
            .cloned()
            .unwrap()
    };
    wait_until(Duration::from_secs(20), "the job fails and waits", || {
        let j = waiting();
        j["state"] == "pending" && j["attempts"].as_i64().unwrap() >= 1 && j["error"].is_string()
    });
    // The till sells on meanwhile.
    till.apply(&[("pos_shift", "merge", json!({"id": shift, "updated_at": T}))]);
    // The till told the shop: the manager's dashboard (the hub) knows the counter printer is
    // down from the till, and why.
    let state_at_hub = || {
        hub.get("/api/tables/printer_status").1["rows"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|r| r["printer_id"] == "p-counter")
            .cloned()
    };
    wait_until(
        Duration::from_secs(20),
        "the printer's state at the hub",
        || state_at_hub().is_some_and(|r| r["ok"] == false && r["error"].is_string()),
    );
    // Power back on and Retry (the cashier's button): the copy prints, once.
    let back = VirtualPrinter::on(TcpListener::bind(("127.0.0.1", off_port)).unwrap());
    let job = waiting()["id"].as_str().unwrap().to_string();
    for _ in 0..2 {
        let (code, body) = till.post_raw(&format!("/api/print/jobs/{job}/retry"), "{}");
        assert!(code == 200 || code == 404, "{code} {body}");
    }
    let copy = back.wait_for(1).remove(0);
    assert!(texts(&copy).contains(&"*** COPY ***".to_string()));
    assert!(
        !copy.contains(&Element::Drawer),
        "a copy does not open the drawer"
    );
    wait_until(Duration::from_secs(10), "the job is done", || {
        waiting()["state"] == "done"
    });
    assert_eq!(back.received.lock().unwrap().len(), 1);
    assert_eq!(counter.received.lock().unwrap().len(), 1);
    assert_eq!(
        till.post_raw(&format!("/api/print/jobs/{job}/retry"), "{}")
            .0,
        404,
        "a printed job is not printed again"
    );
    wait_until(
        Duration::from_secs(20),
        "the printer's recovery at the hub",
        || state_at_hub().is_some_and(|r| r["ok"] == true),
    );
    // A test page, as the manager setting a printer up prints it.
    let (code, q) = till.post_raw("/api/printers/p-counter/test", r#"{"request_id":"t-1"}"#);
    assert_eq!(code, 200, "{q}");
    let test = back.wait_for(2).remove(1);
    assert!(
        texts(&test).contains(&"Counter".to_string()),
        "{:?}",
        texts(&test)
    );
    assert_eq!(
        till.post_raw("/api/printers/nope/test", r#"{"request_id":"t-2"}"#)
            .0,
        404
    );
    assert_eq!(till.post_raw("/api/reports/x/print", "{}").0, 400);

    // The X report on the counter printer, as the manager prints it at the end of a shift.
    let (code, q) = till.post_raw("/api/reports/x/print", r#"{"request_id":"x-1"}"#);
    assert_eq!(code, 200, "{q}");
    let x = back.wait_for(3).remove(2);
    let t = texts(&x);
    assert!(t.contains(&"X REPORT".to_string()), "{t:?}");
    let x_total = till.get("/api/reports/x").1["total"].as_i64().unwrap();
    assert!(x_total >= total);
    assert!(
        t.iter()
            .any(|l| l.starts_with("TOTAL") && l.ends_with(&money(x_total))),
        "{t:?}"
    );
    save_png("x-report-printed.png", &x);

    // A printer address is host:port and nothing else.
    for bad in [
        "http://10.0.0.5:9100",
        "10.0.0.5",
        "10.0.0.5:0",
        "10.0.0.5:99999",
        "a b:9100",
    ] {
        let (code, body) = hub.mutate(&[(
            "printer",
            "merge",
            json!({"id": "p-counter", "address": bad}),
        )]);
        assert_eq!(code, 400, "{bad}: {body}");
    }

    // Bad requests are refused with a reason.
    assert_eq!(
        till.post_raw(&format!("/api/batches/{batch}/tickets"), "{}")
            .0,
        400
    );
    assert_eq!(
        till.post_raw(
            &format!("/api/orders/{order}/receipt"),
            r#"{"request_id":""}"#
        )
        .0,
        400
    );
    assert_eq!(
        till.post_raw(&format!("/api/orders/{order}/receipt"), r#"{"copies":3}"#)
            .0,
        400
    );
    assert_eq!(till.post_raw("/api/orders/nope/receipt", "{}").0, 404);
}

#[test]
fn a_printer_pointed_off_the_shops_lan_is_never_connected_to_and_says_why() {
    let dir = tempfile::tempdir().unwrap();
    // No --allow-printer: only private LAN addresses are printers.
    let hub = Node::spawn(&dir.path().join("hub"), &["--role", "hub", "--demo"]);
    let listener = VirtualPrinter::start();
    let own_api = hub.url.trim_start_matches("http://").to_string();
    // An address off the LAN is refused when it is written, with the reason.
    for (address, why) in [
        (listener.address(), "this computer itself"),
        ("169.254.169.254:80".to_string(), "link-local"),
        ("8.8.8.8:9100".to_string(), "not on the shop's network"),
        (own_api, "this node's own API"),
    ] {
        let body = json!({"mutations": [mutation("printer", "save", json!({"id": "p-x", "name": "Counter", "role": "receipt", "address": address}))]});
        let (code, answer) = hub.post_raw("/api/mutations", &body.to_string());
        assert_eq!(code, 400, "{address}: {answer}");
        assert!(
            answer["error"].as_str().unwrap_or_default().contains(why),
            "{address}: {answer}"
        );
    }
    // A name is checked once it resolves, right before each job: `localhost` is this computer.
    let by_name = format!("localhost:{}", listener.port);
    hub.apply(&[(
        "printer",
        "save",
        json!({"id": "p-name", "name": "Counter", "role": "receipt", "address": by_name}),
    )]);
    let (code, q) = hub.post_raw("/api/reports/x/print", r#"{"request_id":"x-1"}"#);
    assert_eq!(code, 200, "{q}");
    wait_until(
        Duration::from_secs(20),
        "the job to fail, saying why",
        || {
            hub.get("/api/print/jobs").1["jobs"]
                .as_array()
                .unwrap()
                .iter()
                .any(|j| {
                    j["error"]
                        .as_str()
                        .is_some_and(|e| e.contains("this computer itself"))
                })
        },
    );
    assert!(
        listener.received.lock().unwrap().is_empty(),
        "a job was sent to a printer on this computer"
    );
}

#[test]
fn a_printer_that_is_off_holds_a_bounded_queue_and_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let hub = Node::spawn(
        &dir.path().join("hub"),
        &["--role", "hub", "--demo", "--allow-printer", "127.0.0.1"],
    );
    // A receipt printer that is off: nothing listens at its address.
    let off_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    hub.apply(&[("printer", "save", json!({"id": "p-off", "name": "Counter", "role": "receipt", "address": format!("127.0.0.1:{off_port}")}))]);
    let max = 200;
    let mut refused = 0;
    for i in 0..max + 20 {
        let (code, q) = hub.post_raw(
            "/api/reports/x/print",
            &json!({"request_id": format!("copy-{i}")}).to_string(),
        );
        assert_eq!(code, 200, "{q}");
        if let Some(why) = q["skipped"].as_array().and_then(|s| s.first()) {
            assert!(why.as_str().unwrap().contains("jobs waiting"), "{q}");
            refused += 1;
        }
    }
    assert_eq!(
        refused, 20,
        "the queue of a printer that is off grew past {max}"
    );
    // (The dashboard lists the newest 100; the queue itself is in the node's file.)
    assert_eq!(count(&hub.db(), "_print_job"), max as i64);
}

/// Decodes the QR codes printed in `job` (a phone's camera reading the paper).
fn qr_codes(job: &[Element]) -> Vec<String> {
    job.iter()
        .filter_map(|e| match e {
            Element::Raster(b) => Some(b),
            _ => None,
        })
        .filter_map(|b| {
            let mut img = rqrr::PreparedImage::prepare_from_greyscale(
                b.width as usize,
                b.height as usize,
                |x, y| if b.get(x as u32, y as u32) { 0 } else { 255 },
            );
            let grid = img.detect_grids().into_iter().next()?;
            grid.decode().ok().map(|(_, text)| text)
        })
        .collect()
}

/// A receipt in a shop in Riyadh paid at 02:44 local on 7 December (23:44 UTC the day before):
/// the receipt prints the local day and time, its ZATCA QR code decodes to the invoice's five
/// fields, it follows the receipt language (Arabic), and no Arabic line runs off the paper;
/// the kitchen ticket prints the local time and the modifiers in Arabic too.
#[test]
fn a_receipt_in_riyadh_prints_the_local_day_and_a_zatca_qr_code() {
    let dir = tempfile::tempdir().unwrap();
    let allow = ["--allow-printer", "127.0.0.1"];
    let hub = Node::spawn(
        &dir.path().join("hub"),
        &[&["--role", "hub", "--demo"][..], &allow].concat(),
    );
    let counter = VirtualPrinter::start();
    let grill = VirtualPrinter::start();
    hub.apply(&[
        ("printer", "insert", json!({"id": "p-counter", "name": "Counter", "role": "receipt", "address": counter.address()})),
        ("printer", "insert", json!({"id": "p-grill", "name": "Grill", "role": "kitchen", "address": grill.address()})),
        ("shop_settings", "merge", json!({"id": "shop", "receipt_lang": "ar"})),
    ]);
    let settings = hub.get("/api/entities/settings/shop").1["payload"].clone();
    assert_eq!(settings["time_zone"], "Asia/Riyadh");
    assert_eq!(settings["country"], "SA");

    let (shift, order) = (new_id(), new_id());
    let long = "صحن مشاوي مشكلة كبير مع الأرز والسلطة والخبز والصلصات الخاصة بالمطعم";
    let (_, grill_item) = hub.get("/api/tables/menu_item");
    let g01 = grill_item["rows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["code"] == "G01")
        .cloned()
        .unwrap();
    let modifier = hub.get("/api/tables/menu_modifier").1["rows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["item_id"] == g01["id"] && m["name_ar"].is_string())
        .cloned()
        .expect("a grill modifier with an Arabic name");
    hub.apply(&[
        ("pos_shift", "insert", json!({"id": shift, "node_id": "hub", "cashier": "Mona", "opened_at": T})),
        ("order_header", "insert", json!({"id": order, "order_no": 702, "shift_id": shift, "opened_at": T,
                                          "tax_rate_bp": 1500, "table_label": "T9", "currency": "SAR", "opened_by": "Mona"})),
        ("order_line", "insert", json!({"id": new_id(), "order_id": order, "item_code": "G01", "name_en": "Mixed grill platter",
               "name_ar": long, "station": "grill", "qty": 1, "unit_price": g01["price"], "modifiers": modifier["name_en"],
               "modifier_price": modifier["price"], "created_at": T})),
    ]);
    let riyadh = capsule_protocol::local_time::zone("Asia/Riyadh").unwrap();
    // The X names its business day: Riyadh's date, a day starting at 04:00 (the default).
    let day = || {
        capsule_protocol::local_time::business_date(&capsule_protocol::now_rfc3339(), &riyadh, 4)
            .unwrap()
    };
    let (first, x, last) = (day(), hub.get("/api/reports/x").1, day());
    let named = x["business_date"].as_str().unwrap_or_default();
    assert!(named == first || named == last, "{named} ({first})");
    let before = capsule_protocol::local_time::now_label(&riyadh);
    let (code, sent) = hub.post_raw(&format!("/api/orders/{order}/send-to-kitchen"), "{}");
    assert_eq!(code, 200, "{sent}");
    let ticket = grill.wait_for(1).remove(0);
    let after = capsule_protocol::local_time::now_label(&riyadh);
    let t = texts(&ticket);
    assert!(
        t.iter().any(|l| *l == before || *l == after),
        "the ticket's time is Riyadh's ({before}): {t:?}"
    );
    assert!(
        rasters(&ticket) >= 3,
        "the name and the modifier in Arabic: {t:?}"
    );
    save_png("kitchen-ticket-riyadh.png", &ticket);

    // Paid at 23:44 UTC on 6 December: 02:44 on 7 December in Riyadh.
    let (_, o) = hub.get(&format!("/api/entities/order/{order}?parts=totals"));
    let (total, tax) = (
        o["payload"]["total"].as_i64().unwrap(),
        o["payload"]["tax_total"].as_i64().unwrap(),
    );
    hub.apply(&[
        ("order_payment", "insert", json!({"id": new_id(), "order_id": order, "method": "card", "amount": total, "paid_at": "2026-12-06T23:44:00Z"})),
        ("order_header", "merge", json!({"id": order, "status": "paid", "closed_at": "2026-12-06T23:44:00Z"})),
    ]);
    let (code, q) = hub.post_raw(&format!("/api/orders/{order}/receipt"), "{}");
    assert_eq!(code, 200, "{q}");
    let receipt = counter.wait_for(1).remove(0);
    save_png("receipt-riyadh-ar.png", &receipt);
    let t = texts(&receipt);
    assert!(
        t.iter().any(|l| l.contains("2026-12-07 02:44")),
        "the local day and time: {t:?}"
    );
    assert!(!t.iter().any(|l| l.contains("UTC")), "{t:?}");
    let money = |v: i64| format!("{}.{:02}", v / 100, v % 100);
    let codes = qr_codes(&receipt);
    assert_eq!(codes.len(), 1, "one QR code on the receipt");
    let fields = capsule_print::parse_tlv(&codes[0]).unwrap();
    assert_eq!(
        fields,
        vec![
            (1, "Capsule Grill House".to_string()),
            (2, "300000000000003".to_string()),
            (3, "2026-12-06T23:44:00Z".to_string()),
            (4, money(total)),
            (5, money(tax)),
        ]
    );
    // The long Arabic name wrapped onto lines of its own instead of running off the paper
    // (how much of it each line holds is asserted in capsule-print's tests).
    let lines: Vec<&capsule_print::Bitmap> = receipt
        .iter()
        .filter_map(|e| match e {
            Element::Raster(b) if b.height < 100 => Some(b),
            _ => None,
        })
        .collect();
    assert!(lines.iter().all(|b| b.width == capsule_print::PAPER_DOTS));
    assert!(lines.len() >= 10, "{} lines as pictures", lines.len());
}
