//! The built-in demo: a restaurant's menu and a lunch service in progress, written through the
//! same mutation pipeline as real sales so every derived total is genuine.

use capsule_protocol::{Action, Mutation, MutationBatch};
use capsule_store::{ApplyMode, Store};
use chrono::{Duration, Utc};
use serde_json::{Value, json};

/// One menu item: English and Arabic names, category, kitchen station, price in halalas.
pub struct MenuItem {
    pub code: &'static str,
    pub name_en: &'static str,
    pub name_ar: &'static str,
    pub category: &'static str,
    pub station: &'static str,
    pub price: i64,
}

macro_rules! menu {
    ($($code:literal, $en:literal, $ar:literal, $cat:literal, $st:literal, $price:literal;)*) => {
        &[$(MenuItem { code: $code, name_en: $en, name_ar: $ar, category: $cat, station: $st, price: $price }),*]
    };
}

/// A Levantine grill house's menu.
pub const MENU: &[MenuItem] = menu![
    "G01", "Mixed grill platter", "مشاوي مشكلة", "grill", "grill", 6900;
    "G02", "Chicken shish tawook", "شيش طاووق", "grill", "grill", 3800;
    "G03", "Lamb kofta", "كفتة لحم", "grill", "grill", 4200;
    "G04", "Beef shawarma plate", "صحن شاورما لحم", "grill", "grill", 3600;
    "G05", "Chicken shawarma wrap", "شاورما دجاج", "grill", "grill", 1850;
    "G06", "Half grilled chicken", "نصف دجاجة مشوية", "grill", "grill", 3200;
    "F01", "Falafel plate", "صحن فلافل", "fried", "fry", 1900;
    "F02", "Kibbeh (4 pcs)", "كبة", "fried", "fry", 2400;
    "F03", "French fries", "بطاطس مقلية", "fried", "fry", 1200;
    "F04", "Cheese sambousek", "سمبوسك جبنة", "fried", "fry", 1800;
    "C01", "Hummus", "حمص", "cold mezze", "cold", 1500;
    "C02", "Moutabal", "متبل", "cold mezze", "cold", 1600;
    "C03", "Tabbouleh", "تبولة", "cold mezze", "cold", 1700;
    "C04", "Fattoush", "فتوش", "cold mezze", "cold", 1700;
    "C05", "Vine leaves", "ورق عنب", "cold mezze", "cold", 1900;
    "B01", "Fresh lemon mint", "ليمون بالنعناع", "drinks", "bar", 1400;
    "B02", "Ayran", "عيران", "drinks", "bar", 900;
    "B03", "Arabic coffee", "قهوة عربية", "drinks", "bar", 1100;
    "B04", "Mint tea", "شاي بالنعناع", "drinks", "bar", 900;
    "B05", "Sparkling water", "مياه غازية", "drinks", "bar", 700;
    "D01", "Kunafa", "كنافة", "desserts", "dessert", 2200;
    "D02", "Umm Ali", "أم علي", "desserts", "dessert", 2000;
    "D03", "Baklava (6 pcs)", "بقلاوة", "desserts", "dessert", 1800;
];

fn id() -> String {
    uuid::Uuid::now_v7().to_string()
}

fn ts(minutes_ago: i64) -> String {
    (Utc::now() - Duration::minutes(minutes_ago))
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

struct DemoOrder {
    no: i64,
    table: &'static str,
    minutes_ago: i64,
    items: &'static [(&'static str, i64, &'static str)],
    /// How far it has gone: 0 open, 1 sent, 2 cooking, 3 ready, 4 served and paid.
    stage: u8,
}

const ORDERS: &[DemoOrder] = &[
    DemoOrder {
        no: 101,
        table: "T1",
        minutes_ago: 42,
        items: &[("G01", 1, ""), ("C01", 2, ""), ("B01", 2, "")],
        stage: 4,
    },
    DemoOrder {
        no: 102,
        table: "T4",
        minutes_ago: 25,
        items: &[("G02", 2, "no garlic"), ("F03", 1, ""), ("C04", 1, "")],
        stage: 3,
    },
    DemoOrder {
        no: 103,
        table: "T7",
        minutes_ago: 14,
        items: &[("G03", 1, ""), ("F01", 1, "extra tahini"), ("B03", 3, "")],
        stage: 2,
    },
    DemoOrder {
        no: 104,
        table: "T2",
        minutes_ago: 6,
        items: &[("G05", 3, "no onion"), ("F02", 1, ""), ("B02", 2, "")],
        stage: 1,
    },
    DemoOrder {
        no: 105,
        table: "Takeaway",
        minutes_ago: 3,
        items: &[("G06", 1, ""), ("C03", 1, ""), ("D01", 1, "")],
        stage: 1,
    },
    DemoOrder {
        no: 106,
        table: "T9",
        minutes_ago: 1,
        items: &[("C02", 1, ""), ("C05", 1, ""), ("B04", 2, "")],
        stage: 0,
    },
];

/// Writes the demo into an empty hub; returns how many mutations it applied (0 if the hub
/// already had data).
pub fn seed_if_empty(store: &Store) -> capsule_store::Result<usize> {
    // Anything ever applied here (versions alone start high once a term is claimed).
    if !store.journal_since(-1, i64::MAX, 1)?.entries.is_empty() {
        return Ok(0);
    }
    let mut muts = Vec::new();
    let shift = id();
    muts.push(Mutation::new(
        "pos_shift",
        Action::Insert,
        json!({"id": shift, "node_id": "demo-till-1", "cashier": "Mona", "opened_at": ts(180), "opening_float": 50_000}),
    ));
    let mut paid = Vec::new();
    for o in ORDERS {
        let order = order_mutations(&mut muts, &shift, o);
        if o.stage == 4 {
            paid.push(order);
        }
    }
    let mut n = apply(store, muts)?;
    // Payments take the total the core computed, so they are written after it.
    let mut payments = Vec::new();
    for order in paid {
        let total = store.pull("order", &order, Some("totals"))?.payload["total"]
            .as_i64()
            .unwrap_or(0);
        let tendered = (total / 5_000 + 1) * 5_000;
        payments.push(Mutation::new(
            "order_payment",
            Action::Insert,
            json!({"id": id(), "order_id": order, "method": "cash", "amount": total, "tendered": tendered,
                   "node_id": "demo-till-1", "paid_at": ts(4)}),
        ));
        payments.push(Mutation::new(
            "order_header",
            Action::Merge,
            json!({"id": order, "status": "paid", "updated_at": ts(4)}),
        ));
    }
    n += apply(store, payments)?;
    Ok(n)
}

fn apply(store: &Store, muts: Vec<Mutation>) -> capsule_store::Result<usize> {
    let n = muts.len();
    for chunk in muts.chunks(200) {
        store.apply(
            &MutationBatch {
                mutations: chunk.to_vec(),
                source: Some("demo".into()),
            },
            &ApplyMode::Authoritative {
                source: "demo".into(),
            },
        )?;
    }
    Ok(n)
}

/// Appends one demo order's mutations; returns the order id.
fn order_mutations(muts: &mut Vec<Mutation>, shift: &str, o: &DemoOrder) -> String {
    let order = id();
    let at = ts(o.minutes_ago);
    let kind = if o.table == "Takeaway" {
        "takeaway"
    } else {
        "dine_in"
    };
    muts.push(Mutation::new(
        "order_header",
        Action::Insert,
        json!({"id": order, "order_no": o.no, "shift_id": shift, "node_id": "demo-till-1", "table_label": o.table,
               "order_type": kind, "guests": 2, "opened_by": "Mona", "opened_at": at, "tax_rate_bp": 1500,
               "service_rate_bp": if kind == "dine_in" { 1000 } else { 0 }}),
    ));
    let mut lines = Vec::new();
    for (n, (code, qty, note)) in o.items.iter().enumerate() {
        let item = MENU
            .iter()
            .find(|m| m.code == *code)
            .expect("demo uses menu codes");
        let line = id();
        muts.push(Mutation::new(
            "order_line",
            Action::Insert,
            json!({"id": line, "order_id": order, "line_no": n as i64 + 1, "item_code": item.code,
                   "name_en": item.name_en, "name_ar": item.name_ar, "category": item.category,
                   "station": item.station, "qty": qty, "unit_price": item.price,
                   "modifiers": if note.is_empty() { Value::Null } else { json!(note) }, "created_at": at}),
        ));
        lines.push((line, item, *qty, *note));
    }
    if o.stage == 0 {
        return order;
    }
    // Send to the kitchen: one batch, one job per station, one detail per line.
    let batch = id();
    muts.push(Mutation::new(
        "job_order_batch",
        Action::Insert,
        json!({"id": batch, "order_id": order, "batch_no": 1, "kind": "initial", "order_no": o.no,
               "table_label": o.table, "created_at": at}),
    ));
    let mut stations: Vec<&str> = lines.iter().map(|(_, item, _, _)| item.station).collect();
    stations.sort_unstable();
    stations.dedup();
    let mut jobs = Vec::new();
    for station in stations {
        let job = id();
        muts.push(Mutation::new(
            "job_order_header",
            Action::Insert,
            json!({"id": job, "order_id": order, "batch_id": batch, "station": station, "order_no": o.no,
                   "table_label": o.table, "created_at": at}),
        ));
        for (line, item, qty, note) in lines
            .iter()
            .filter(|(_, item, _, _)| item.station == station)
        {
            muts.push(Mutation::new(
                "job_order_detail",
                Action::Insert,
                json!({"id": id(), "job_id": job, "order_line_id": line, "name_en": item.name_en,
                       "name_ar": item.name_ar, "qty": qty, "modifiers": if note.is_empty() { Value::Null } else { json!(note) }}),
            ));
        }
        jobs.push(job);
    }
    for (line, _, _, _) in &lines {
        muts.push(Mutation::new(
            "order_line",
            Action::Merge,
            json!({"id": line, "status": "sent", "batch_id": batch}),
        ));
    }
    muts.push(Mutation::new(
        "order_header",
        Action::Merge,
        json!({"id": order, "status": "sent", "updated_at": at}),
    ));
    let job_status = match o.stage {
        2 => Some("cooking"),
        3 | 4 => Some("ready"),
        _ => None,
    };
    if let Some(status) = job_status {
        for (i, job) in jobs.iter().enumerate() {
            // In a cooking order the first station is already done.
            let s = if status == "cooking" && i == 0 {
                "ready"
            } else {
                status
            };
            muts.push(Mutation::new(
                "job_order_header",
                Action::Merge,
                json!({"id": job, "status": s, "updated_at": ts(o.minutes_ago / 2)}),
            ));
        }
    }
    if o.stage == 4 {
        muts.push(Mutation::new(
            "job_order_batch",
            Action::Merge,
            json!({"id": batch, "status": "served", "served_at": ts(5), "served_by": "Karim"}),
        ));
    }
    order
}
