//! End to end: the menu and the shop settings are synced data that the manager edits and
//! every till follows, and a price change never touches what is already on an order.

mod common;

use std::time::Duration;

use common::*;
use serde_json::{Value, json};

fn item_on(node: &Node, id: &str) -> Value {
    let (code, body) = node.get(&format!(
        "/api/entities/item/{id}?parts=header,availability"
    ));
    assert_eq!(code, 200, "{body}");
    body["payload"].clone()
}

/// A line of the demo's first order that rang up `code`.
fn demo_line_of(node: &Node, code: &str) -> Value {
    let (_, t) = node.get("/api/tables/order_line");
    t["rows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["item_code"] == code)
        .cloned()
        .unwrap_or_else(|| panic!("the demo rang up {code}"))
}

#[test]
fn the_manager_edits_the_menu_and_every_till_follows_without_touching_open_orders() {
    let dir = tempfile::tempdir().unwrap();
    let hub = Node::spawn(&dir.path().join("hub"), &["--role", "hub", "--demo"]);
    let till = Node::till(&dir.path().join("till"), &hub);
    assert_converges(&hub, &[&till]);

    // The till opens for business with the shop's menu and settings, from its own file.
    assert!(count(&till.db(), "menu_item") >= 20);
    assert!(count(&till.db(), "menu_category") >= 5);
    assert!(count(&till.db(), "menu_modifier") > 0);
    let (_, shop) = till.get("/api/entities/settings/shop?parts=shop,money");
    assert_eq!(shop["payload"]["currency"], "SAR", "{shop}");
    assert_eq!(shop["payload"]["currency_digits"], 2);
    let g01 = item_on(&till, "item-G01");
    assert_eq!(g01["price"], 6900);
    assert_eq!(g01["available"], true);
    let sold_before = demo_line_of(&till, "G01");

    // The manager reprices the mixed grill and marks the kunafa sold out at the hub.
    hub.apply(&[
        (
            "menu_item",
            "merge",
            json!({"id": "item-G01", "price": 7500}),
        ),
        (
            "menu_item",
            "merge",
            json!({"id": "item-D01", "available": false}),
        ),
    ]);
    // The kitchen, from the till's screen, says the hummus is gone too.
    till.apply(&[(
        "menu_item",
        "merge",
        json!({"id": "item-C01", "available": false}),
    )]);
    wait_until(Duration::from_secs(10), "menu edits reach the till", || {
        item_on(&till, "item-G01")["price"] == 7500
            && item_on(&till, "item-D01")["available"] == false
            && item_on(&hub, "item-C01")["available"] == false
    });
    assert_converges(&hub, &[&till]);

    // The order already rung up keeps the price it was sold at, on both nodes.
    for node in [&hub, &till] {
        let line = demo_line_of(node, "G01");
        assert_eq!(line["unit_price"], 6900, "{line}");
        assert_eq!(line["line_total"], sold_before["line_total"]);
    }

    // A new item in a new category reaches the till whole, modifiers included.
    hub.apply(&[
        ("menu_category", "insert", json!({"id": "cat-breakfast", "name_en": "Breakfast", "name_ar": "فطور", "sort": 9})),
        ("menu_item", "insert", json!({"id": "item-K01", "code": "K01", "name_en": "Foul medames", "name_ar": "فول مدمس",
                                        "category_id": "cat-breakfast", "price": 1400, "station": "cold"})),
        ("menu_modifier", "insert", json!({"id": "item-K01-oil", "item_id": "item-K01", "name_en": "extra olive oil", "price": 150})),
    ]);
    wait_until(
        Duration::from_secs(10),
        "the new item reaches the till",
        || {
            till.get("/api/entities/item/item-K01?parts=header,modifiers")
                .1["payload"]["modifiers"][0]["price"]
                == 150
        },
    );
    assert_eq!(
        item_on(&till, "item-K01")["available"],
        true,
        "new items are on sale"
    );

    // Nonsense is refused with a reason, and the menu is unchanged.
    for (row, what) in [
        (json!({"id": "item-G01", "price": -1}), "price"),
        (json!({"id": "item-G01", "available": "no"}), "available"),
        (
            json!({"id": "item-G01", "tax_class": "luxury"}),
            "tax_class",
        ),
        (
            json!({"id": "item-G01", "price": 100_000_000_001_i64}),
            "price",
        ),
    ] {
        let (code, body) = hub.mutate(&[("menu_item", "merge", row)]);
        assert!((400..500).contains(&code), "{code} {body}");
        assert!(
            body["error"].as_str().unwrap_or_default().contains(what),
            "{body}"
        );
    }
    let (code, body) = hub.mutate(&[(
        "menu_item",
        "insert",
        json!({"id": "item-X", "code": "X", "name_en": "No price", "category_id": "cat-grill", "station": "grill"}),
    )]);
    assert!((400..500).contains(&code), "{code} {body}");
    assert_eq!(item_on(&hub, "item-G01")["price"], 7500);
    assert_converges(&hub, &[&till]);
}

#[test]
fn the_schema_tells_a_client_every_column_its_type_and_whether_it_may_write_it() {
    let dir = tempfile::tempdir().unwrap();
    let hub = Node::hub(&dir.path().join("hub"));
    let (code, schema) = hub.get("/api/schema");
    assert_eq!(code, 200);
    let col = |table: &str, name: &str| -> Value {
        schema["tables"][table]["columns"]
            .as_array()
            .unwrap_or_else(|| panic!("table {table} in {schema}"))
            .iter()
            .find(|c| c["name"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("{table}.{name}"))
    };
    let price = col("menu_item", "price");
    assert_eq!(price["type"], "money");
    assert_eq!(price["derived"], false);
    assert_eq!(price["required"], true);
    assert_eq!(price["min"], 0);
    let total = col("order_header", "total");
    assert_eq!(total["derived"], true);
    assert_eq!(
        col("menu_item", "tax_class")["values"],
        json!(["standard", "zero"])
    );
    assert_eq!(col("shop_settings", "currency_digits")["max"], 3);
    assert_eq!(col("menu_item", "id")["type"], "text");
    // Entities still list their parts, the menu among them.
    assert!(
        schema["entities"]["item"]["parts"]["availability"].is_array(),
        "{schema}"
    );

    // A client that builds its write from the schema (every required, writable column at a
    // value in range) gets it applied first time.
    let mut row = serde_json::Map::new();
    for c in schema["tables"]["menu_item"]["columns"].as_array().unwrap() {
        if c["derived"] == true || c["required"] != true {
            continue;
        }
        let v = match c["type"].as_str().unwrap() {
            "money" | "integer" => json!(c["min"].as_i64().unwrap_or(0)),
            "enum" => c["values"][0].clone(),
            "boolean" => json!(true),
            "timestamp" => json!(T),
            _ => json!("x"),
        };
        row.insert(c["name"].as_str().unwrap().into(), v);
    }
    row.insert("id".into(), json!(new_id()));
    hub.apply(&[("menu_item", "insert", Value::Object(row))]);
}
