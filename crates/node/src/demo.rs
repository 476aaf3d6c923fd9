//! The built-in demo: a restaurant's menu and a lunch service in progress, written through the
//! same mutation pipeline as real sales so every derived total is genuine.

use capsule_protocol::{Action, Mutation, MutationBatch};
use capsule_store::{ApplyMode, Store};
use chrono::{Duration, Utc};
use serde::Deserialize;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::sync::LazyLock;

/// The demo shop's settings and menu (`demo/shop.toml`): data, not code.
const SHOP_TOML: &str = include_str!("../demo/shop.toml");

#[derive(Deserialize)]
struct ShopFile {
    settings: serde_json::Map<String, Value>,
    categories: Vec<CategoryDef>,
    modifier_sets: BTreeMap<String, Vec<(String, String, i64)>>,
    items: Vec<ItemDef>,
}

#[derive(Deserialize)]
struct CategoryDef {
    key: String,
    name_en: String,
    name_ar: String,
}

#[derive(Deserialize)]
#[allow(dead_code)] // read positionally from the file; tax_class and set are used by seeding
struct ItemDef(String, String, String, String, String, i64, String, String);

/// One item of the demo menu, as the demo orders and the bench ring it up.
pub struct MenuItem {
    pub code: String,
    pub name_en: String,
    pub name_ar: String,
    /// The category's English name, as a line records it.
    pub category: String,
    pub station: String,
    pub price: i64,
    pub tax_class: String,
}

fn shop_file() -> &'static ShopFile {
    static SHOP: LazyLock<ShopFile> =
        LazyLock::new(|| toml::from_str(SHOP_TOML).expect("demo/shop.toml is valid"));
    &SHOP
}

/// The demo menu, in the file's order.
pub fn menu() -> &'static [MenuItem] {
    static MENU: LazyLock<Vec<MenuItem>> = LazyLock::new(|| {
        let f = shop_file();
        f.items
            .iter()
            .map(
                |ItemDef(code, en, ar, cat, station, price, tax, _)| MenuItem {
                    code: code.clone(),
                    name_en: en.clone(),
                    name_ar: ar.clone(),
                    category: f
                        .categories
                        .iter()
                        .find(|c| &c.key == cat)
                        .map_or_else(|| cat.clone(), |c| c.name_en.clone()),
                    station: station.clone(),
                    price: *price,
                    tax_class: tax.clone(),
                },
            )
            .collect()
    });
    &MENU
}

/// The settings row and the menu (categories, items, modifiers) as inserts.
fn shop_mutations(at: &str) -> Vec<Mutation> {
    let f = shop_file();
    let mut settings = f.settings.clone();
    settings.insert("id".into(), json!(SETTINGS_ID));
    settings.insert("updated_at".into(), json!(at));
    let mut muts = vec![Mutation::new(
        "shop_settings",
        Action::Insert,
        Value::Object(settings),
    )];
    for (n, c) in f.categories.iter().enumerate() {
        muts.push(Mutation::new(
            "menu_category",
            Action::Insert,
            json!({"id": format!("cat-{}", c.key), "name_en": c.name_en, "name_ar": c.name_ar,
                   "sort": n, "updated_at": at}),
        ));
    }
    for (n, ItemDef(code, en, ar, cat, station, price, tax, set)) in f.items.iter().enumerate() {
        let item = format!("item-{code}");
        muts.push(Mutation::new(
            "menu_item",
            Action::Insert,
            json!({"id": item, "code": code, "name_en": en, "name_ar": ar, "category_id": format!("cat-{cat}"),
                   "price": price, "tax_class": tax, "station": station, "sort": n, "available": true,
                   "updated_at": at}),
        ));
        for (m, (en, ar, price)) in f.modifier_sets.get(set).into_iter().flatten().enumerate() {
            muts.push(Mutation::new(
                "menu_modifier",
                Action::Insert,
                json!({"id": format!("{item}-mod-{m}"), "item_id": item, "name_en": en, "name_ar": ar,
                       "price": price, "sort": m}),
            ));
        }
    }
    muts
}

/// The id of the one shop settings row.
pub const SETTINGS_ID: &str = "shop";

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

/// Writes the demo into a hub whose shop has never been set up; returns how many mutations it
/// applied (0 if the shop exists).
pub fn seed_if_empty(store: &Store) -> capsule_store::Result<usize> {
    // The shop's settings row is the marker, in the data: it reaches every node with the shop
    // and survives snapshots, restarts and hub changes, so the demo is seeded once per shop,
    // never because this node's journal happens to be empty.
    if store.part_versions("settings", SETTINGS_ID)?.is_some() {
        return Ok(0);
    }
    let mut muts = shop_mutations(&ts(240));
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
    let settings = &shop_file().settings;
    let kind = if o.table == "Takeaway" {
        "takeaway"
    } else {
        "dine_in"
    };
    // A takeaway has no table: the screens name it by its type, in their language.
    let table = if kind == "takeaway" {
        Value::Null
    } else {
        json!(o.table)
    };
    muts.push(Mutation::new(
        "order_header",
        Action::Insert,
        json!({"id": order, "order_no": o.no, "shift_id": shift, "node_id": "demo-till-1",
               "table_label": table,
               "order_type": kind, "guests": 2, "opened_by": "Mona", "opened_at": at, "currency": settings["currency"],
               "tax_rate_bp": settings["tax_rate_bp"],
               "service_rate_bp": if kind == "dine_in" { settings["service_rate_bp"].clone() } else { json!(0) }}),
    ));
    let mut lines: Vec<(String, &MenuItem, i64, &str)> = Vec::new();
    for (n, (code, qty, note)) in o.items.iter().enumerate() {
        let item = menu()
            .iter()
            .find(|m| m.code == *code)
            .expect("demo uses menu codes");
        let line = id();
        muts.push(Mutation::new(
            "order_line",
            Action::Insert,
            json!({"id": line, "order_id": order, "line_no": n as i64 + 1, "item_code": item.code,
                   "name_en": item.name_en, "name_ar": item.name_ar, "category": item.category,
                   "station": item.station, "qty": qty, "unit_price": item.price, "tax_class": item.tax_class,
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
               "table_label": table, "created_at": at}),
    ));
    let mut stations: Vec<&str> = lines
        .iter()
        .map(|(_, item, _, _)| item.station.as_str())
        .collect();
    stations.sort_unstable();
    stations.dedup();
    let mut jobs = Vec::new();
    for station in stations {
        let job = id();
        muts.push(Mutation::new(
            "job_order_header",
            Action::Insert,
            json!({"id": job, "order_id": order, "batch_id": batch, "station": station, "order_no": o.no,
                   "table_label": table, "created_at": at}),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_demo_shop_file_names_only_categories_and_modifier_sets_it_declares() {
        let f = shop_file();
        assert!(menu().len() >= 20);
        for ItemDef(code, _, _, cat, _, price, tax, set) in &f.items {
            assert!(
                f.categories.iter().any(|c| &c.key == cat),
                "{code}: category {cat}"
            );
            assert!(
                set.is_empty() || f.modifier_sets.contains_key(set),
                "{code}: modifiers {set}"
            );
            assert!(
                *price > 0 && ["standard", "zero"].contains(&tax.as_str()),
                "{code}"
            );
        }
        // Every row the demo writes is valid against the schema (the seed applies it whole).
        let dir = tempfile::tempdir().unwrap();
        let schema = std::sync::Arc::new(capsule_protocol::Schema::builtin());
        let store = Store::open(dir.path().join("demo.sqlite3"), schema).unwrap();
        assert!(seed_if_empty(&store).unwrap() > f.items.len());
    }
}
