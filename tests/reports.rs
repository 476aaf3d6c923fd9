//! End to end: X and Z reports over a seeded rush reconcile to the cent with the rows
//! themselves; a Z closes the day once, is immutable, and is taken only where every finished
//! order is known (the hub).

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::*;
use serde_json::{Value, json};

fn rows(node: &Node, table: &str) -> Vec<Value> {
    let (code, t) = node.get(&format!("/api/tables/{table}"));
    assert_eq!(code, 200, "{t}");
    t["rows"].as_array().unwrap().clone()
}

fn i(v: &Value, k: &str) -> i64 {
    v[k].as_i64().unwrap_or(0)
}

/// What the report should say, summed straight from the rows (not through the report code).
struct Expected {
    orders: i64,
    total: i64,
    tax: i64,
    service: i64,
    discounts: i64,
    gross: i64,
    by_category: BTreeMap<String, i64>,
    by_method: BTreeMap<String, i64>,
    void_orders: i64,
    void_lines: i64,
    open: i64,
}

fn expected(node: &Node, exclude: &[String]) -> Expected {
    let orders = rows(node, "order_header");
    let lines = rows(node, "order_line");
    let payments = rows(node, "order_payment");
    let mut e = Expected {
        orders: 0,
        total: 0,
        tax: 0,
        service: 0,
        discounts: 0,
        gross: 0,
        by_category: BTreeMap::new(),
        by_method: BTreeMap::new(),
        void_orders: 0,
        void_lines: 0,
        open: 0,
    };
    for o in &orders {
        let id = o["id"].as_str().unwrap().to_string();
        match o["status"].as_str().unwrap() {
            "open" | "sent" => e.open += 1,
            _ if exclude.contains(&id) => {}
            "void" => e.void_orders += 1,
            _ => {
                e.orders += 1;
                e.total += i(o, "total");
                e.tax += i(o, "tax_total");
                e.service += i(o, "service_total");
                e.discounts += i(o, "discount_total");
                for l in lines.iter().filter(|l| l["order_id"] == o["id"]) {
                    if l["status"] == "void" {
                        e.void_lines += 1;
                        continue;
                    }
                    e.gross += i(l, "qty") * (i(l, "unit_price") + i(l, "modifier_price"));
                    *e.by_category
                        .entry(l["category"].as_str().unwrap_or("-").to_string())
                        .or_default() += i(l, "line_total");
                }
                for p in payments.iter().filter(|p| p["order_id"] == o["id"]) {
                    *e.by_method
                        .entry(p["method"].as_str().unwrap().to_string())
                        .or_default() += i(p, "amount");
                }
            }
        }
    }
    e
}

fn assert_reconciles(r: &Value, e: &Expected) {
    assert_eq!(i(r, "orders"), e.orders, "{r}");
    assert_eq!(i(r, "total"), e.total);
    assert_eq!(i(r, "tax"), e.tax);
    assert_eq!(i(r, "service"), e.service);
    assert_eq!(i(r, "discounts"), e.discounts);
    assert_eq!(i(r, "gross_sales"), e.gross);
    assert_eq!(i(r, "void_orders"), e.void_orders);
    assert_eq!(i(r, "void_lines"), e.void_lines);
    assert_eq!(i(r, "open_orders"), e.open);
    // The report's own sums hold: net + service + tax is what customers owe.
    assert_eq!(
        i(r, "gross_sales") - i(r, "discounts") + i(r, "service") + i(r, "tax"),
        i(r, "total")
    );
    let cats: BTreeMap<String, i64> = r["by_category"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["key"].as_str().unwrap().to_string(), i(c, "amount")))
        .collect();
    assert_eq!(cats, e.by_category);
    let items: i64 = r["by_item"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| i(c, "amount"))
        .sum();
    assert_eq!(
        items,
        e.by_category.values().sum::<i64>(),
        "items add up to the categories"
    );
    let methods: BTreeMap<String, i64> = r["by_method"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| (m["method"].as_str().unwrap().to_string(), i(m, "amount")))
        .collect();
    assert_eq!(methods, e.by_method);
}

#[test]
fn x_and_z_reports_reconcile_a_rush_to_the_cent_and_a_z_closes_the_day_once() {
    let dir = tempfile::tempdir().unwrap();
    let hub = Node::hub(&dir.path().join("hub"));
    let till = Node::till(&dir.path().join("till"), &hub);
    run_rush(60, 7, &[&hub], |_| {});

    // Three tables still eating.
    let extra_shift = new_id();
    for no in 9001..=9003 {
        open_order(&hub, &extra_shift, &new_id(), no);
    }

    // The day's twists: an order voided, a line voided, an order discount, a shift counted.
    let orders = rows(&hub, "order_header");
    let open: Vec<&Value> = orders
        .iter()
        .filter(|o| o["status"] == "open" || o["status"] == "sent")
        .collect();
    let finished: Vec<&Value> = orders.iter().filter(|o| o["status"] == "closed").collect();
    assert!(
        open.len() >= 3 && finished.len() >= 10,
        "open {} closed {} of {}: {:?}",
        open.len(),
        finished.len(),
        orders.len(),
        orders
            .iter()
            .map(|o| o["status"].clone())
            .collect::<Vec<_>>()
    );
    hub.apply(&[(
        "order_header",
        "merge",
        json!({"id": open[0]["id"], "status": "void"}),
    )]);
    let line = rows(&hub, "order_line")
        .into_iter()
        .find(|l| l["order_id"] == open[1]["id"])
        .unwrap();
    hub.apply(&[
        (
            "order_line",
            "merge",
            json!({"id": line["id"], "status": "void"}),
        ),
        (
            "order_header",
            "merge",
            json!({"id": open[1]["id"], "order_discount": 333}),
        ),
    ]);
    let (_, o1) = hub.get(&format!(
        "/api/entities/order/{}?parts=totals",
        open[1]["id"].as_str().unwrap()
    ));
    let due = i(&o1["payload"], "balance_due");
    hub.apply(&[
        ("order_payment", "insert", json!({"id": new_id(), "order_id": open[1]["id"], "method": "card", "amount": due, "paid_at": T})),
        ("order_header", "merge", json!({"id": open[1]["id"], "status": "paid"})),
    ]);
    let shift = rows(&hub, "pos_shift").remove(0);
    hub.apply(&[(
        "pos_shift",
        "merge",
        json!({"id": shift["id"], "status": "closed", "counted_cash": i(&shift, "expected_cash") - 250}),
    )]);

    // X on the hub and on the till (once it has caught up) reconcile with the rows.
    let (code, x) = hub.get("/api/reports/x");
    assert_eq!(code, 200, "{x}");
    assert_eq!(x["kind"], "X");
    assert_reconciles(&x, &expected(&hub, &[]));
    assert_eq!(i(&x, "void_orders"), 1);
    assert_eq!(i(&x, "void_lines"), 1);
    let counted = x["shifts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == shift["id"])
        .unwrap()
        .clone();
    assert_eq!(
        i(&counted, "difference"),
        -250,
        "a short drawer shows as -2.50: {counted}"
    );
    assert_converges(&hub, &[&till]);
    let (_, x_till) = till.get("/api/reports/x");
    assert_reconciles(&x_till, &expected(&hub, &[]));

    // CSV: the same numbers, in decimals a spreadsheet adds exactly.
    let csv = reqwest_text(&hub, "/api/reports/x?format=csv");
    let total_line = csv
        .lines()
        .find(|l| l.starts_with("\"totals\",\"total\""))
        .unwrap();
    let t = i(&x, "total");
    assert!(
        total_line.ends_with(&format!(",{}.{:02}", t / 100, t % 100)),
        "{total_line}"
    );
    assert_eq!(hub.get("/api/reports/x?format=xml").0, 400);

    // A till cannot close the day; the hub can, once.
    let (code, refused) = till.post_raw("/api/reports/z", r#"{"taken_by":"Karim"}"#);
    assert_eq!(code, 409, "{refused}");
    assert!(refused["error"].as_str().unwrap().contains("hub"));
    let before = dump(&hub.db());
    let (code, bad) = hub.post_raw("/api/reports/z", r#"{"taken_by": 5}"#);
    assert_eq!(code, 400, "{bad}");
    assert_eq!(dump(&hub.db()), before, "a refused Z writes nothing");
    let (code, z1) = hub.post_raw("/api/reports/z", r#"{"taken_by":"Karim"}"#);
    assert_eq!(code, 201, "{z1}");
    assert_eq!(z1["number"], 1);
    assert_reconciles(&z1, &expected(&hub, &[]));

    // The Z is stored as taken and cannot be edited or deleted.
    let (_, again) = hub.get("/api/reports/z/1");
    assert_eq!(again, z1);
    for (action, row) in [
        ("merge", json!({"id": "z-000001", "total": 1})),
        ("delete", json!({"id": "z-000001"})),
    ] {
        let (code, body) = hub.mutate(&[("z_report", action, row)]);
        assert_eq!(code, 409, "{body}");
    }
    assert_eq!(hub.get("/api/reports/z/1").1, z1);
    assert_eq!(hub.get("/api/reports/z/2").0, 404);
    assert_eq!(hub.get("/api/reports/z/abc").0, 400);

    // A retry of the same Z (its answer was lost) gets that Z, not an empty next one; asking
    // for a number out of turn is refused.
    let (code, again) = hub.post_raw("/api/reports/z", r#"{"taken_by":"Karim","number":1}"#);
    assert_eq!(code, 200, "{again}");
    assert_eq!(again, z1);
    assert_eq!(hub.post_raw("/api/reports/z", r#"{"number":7}"#).0, 409);

    // A counted order's money never moves: no void, no payment, no new line, no delete.
    for (table, action, row) in [
        (
            "order_header",
            "merge",
            json!({"id": finished[1]["id"], "status": "void"}),
        ),
        (
            "order_payment",
            "insert",
            json!({"id": new_id(), "order_id": finished[1]["id"], "method": "cash", "amount": 100, "paid_at": T}),
        ),
        (
            "order_line",
            "insert",
            json!({"id": new_id(), "order_id": finished[1]["id"], "name_en": "Tea", "qty": 1, "unit_price": 100, "created_at": T}),
        ),
        ("order_header", "delete", json!({"id": finished[1]["id"]})),
    ] {
        let before = dump(&hub.db());
        let (code, body) = hub.mutate(&[(table, action, row)]);
        assert_eq!(code, 409, "{table} {action}: {body}");
        assert!(
            body["error"].as_str().unwrap().contains("Z report #1"),
            "{body}"
        );
        assert_eq!(dump(&hub.db()), before);
    }

    // A counted order stays closed.
    let (code, body) = hub.mutate(&[(
        "order_header",
        "merge",
        json!({"id": finished[0]["id"], "status": "open"}),
    )]);
    assert_eq!(code, 409, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("Z report #1"),
        "{body}"
    );

    // The next day starts empty; what is finished after the Z goes in Z #2 only.
    let (_, x2) = hub.get("/api/reports/x");
    assert_eq!(i(&x2, "orders"), 0, "{x2}");
    assert_eq!(i(&x2, "total"), 0);
    let counted_in_1: Vec<String> = rows(&hub, "order_header")
        .iter()
        .filter(|o| !matches!(o["status"].as_str(), Some("open" | "sent")))
        .map(|o| o["id"].as_str().unwrap().to_string())
        .collect();
    let (_, o2) = hub.get(&format!(
        "/api/entities/order/{}?parts=totals",
        open[2]["id"].as_str().unwrap()
    ));
    hub.apply(&[
        ("order_payment", "insert", json!({"id": new_id(), "order_id": open[2]["id"], "method": "cash",
                                           "amount": i(&o2["payload"], "balance_due"), "tendered": 100_000, "paid_at": T})),
        ("order_header", "merge", json!({"id": open[2]["id"], "status": "paid"})),
    ]);
    let (code, z2) = hub.post_raw("/api/reports/z", "{}");
    assert_eq!(code, 201, "{z2}");
    assert_eq!(z2["number"], 2);
    assert_eq!(i(&z2, "orders"), 1);
    assert_reconciles(&z2, &expected(&hub, &counted_in_1));
    // The PDF is an A4 report with real text: a well-formed file (every object where the xref
    // says), A4 pages, fonts embedded with their Unicode maps, no picture of a slip.
    let pdf = get_pdf(&hub, "/api/reports/z/2?format=pdf");
    assert_pdf_is_well_formed(&pdf);
    let raw = String::from_utf8_lossy(&pdf);
    assert!(raw.contains("/MediaBox[0 0 595.28 841.89]"), "not A4");
    assert!(raw.contains("/FontFile2") && raw.contains("/ToUnicode"));
    assert!(!raw.contains("/Subtype /Image"));
    std::fs::create_dir_all(concat!(env!("CARGO_MANIFEST_DIR"), "/test-artifacts")).unwrap();
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/test-artifacts/z-report-2.pdf");
    std::fs::write(path, &pdf).unwrap();
    // Where poppler is installed, the text reads back (the print crate's own test reads it in
    // Rust: Arabic, amounts, page size).
    if let Ok(out) = std::process::Command::new("pdftotext")
        .arg(path)
        .arg("-")
        .output()
    {
        let text = String::from_utf8_lossy(&out.stdout);
        let digits = u32::try_from(i(&z2, "currency_digits")).unwrap();
        let net = capsule_protocol::minor_to_decimal(i(&z2, "net_sales"), digits);
        let shop = z2["shop"].as_str().unwrap_or("");
        for want in ["Z REPORT #2", "Net sales", shop, &net] {
            assert!(
                text.contains(want),
                "{want:?} not in the PDF's text: {text}"
            );
        }
    }
    // The slip the receipt printer prints, as a picture of the paper.
    let slip = get_pdf(&hub, "/api/reports/z/2?format=slip");
    assert_pdf_is_well_formed(&slip);
    assert!(String::from_utf8_lossy(&slip).contains("/Subtype /Image"));

    let (_, list) = hub.get("/api/reports/z");
    assert_eq!(list["reports"].as_array().unwrap().len(), 2);
    // Both Z reports reach the till as synced rows (z_report is not among the tables
    // assert_converges compares, so wait for it itself).
    assert_converges(&hub, &[&till]);
    wait_until(Duration::from_secs(15), "Z #2 on the till", || {
        till.get("/api/reports/z/2").0 == 200
    });
    assert_eq!(till.get("/api/reports/z/2").1, z2);
}

fn reqwest_text(node: &Node, path: &str) -> String {
    let r = client().get(format!("{}{path}", node.url)).send().unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/csv")
    );
    r.text().unwrap()
}

/// A PDF the node serves at `path`.
fn get_pdf(node: &Node, path: &str) -> Vec<u8> {
    let r = client().get(format!("{}{path}", node.url)).send().unwrap();
    assert_eq!(r.status().as_u16(), 200, "{path}");
    assert_eq!(r.headers()["content-type"], "application/pdf");
    r.bytes().unwrap().to_vec()
}

/// Header, trailer, and each object at the offset its xref entry gives.
fn assert_pdf_is_well_formed(pdf: &[u8]) {
    assert!(pdf.starts_with(b"%PDF-1."));
    let text = String::from_utf8_lossy(pdf);
    assert!(text.trim_end().ends_with("%%EOF"));
    let startxref: usize = text
        .rsplit("startxref")
        .next()
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(pdf[startxref..].starts_with(b"xref"));
    let xref = String::from_utf8_lossy(&pdf[startxref..]);
    let mut lines = xref.lines().skip(1);
    let count: usize = lines
        .next()
        .unwrap()
        .split_whitespace()
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let entries: Vec<usize> = lines
        .skip(1)
        .take(count - 1)
        .map(|l| l[..10].parse().unwrap())
        .collect();
    assert!(entries.len() >= 4, "catalog, pages, page, content");
    for (n, off) in entries.iter().enumerate() {
        let want = format!("{} 0 obj", n + 1);
        assert!(
            pdf[*off..].starts_with(want.as_bytes()),
            "object {} at {off}",
            n + 1
        );
    }
}
