//! Commands: cashier actions that read current state and plan the mutations that carry them
//! out. Planning here keeps the rule in one place; the mutations go through the normal
//! pipeline (forwarded by a till, applied by the hub) like any other write.

use std::collections::BTreeMap;

use capsule_protocol::{Action, Mutation, Row, now_rfc3339};
use serde_json::{Value, json};

use crate::sql::{int, select_rows, text};
use crate::{Result, Store, StoreError};

/// Every (table, column) the commands read or write: checked against the schema when a store
/// opens ([`crate::derive::check_schema`]), so a schema without them never starts a node.
pub(crate) const USED: &[(&str, &[&str])] = &[
    (
        "order_header",
        &[
            "order_no",
            "provisional_no",
            "table_label",
            "status",
            "updated_at",
        ],
    ),
    (
        "order_line",
        &[
            "order_id",
            "status",
            "batch_id",
            "station",
            "name_en",
            "name_ar",
            "qty",
            "modifiers",
            "note",
        ],
    ),
    (
        "job_order_batch",
        &[
            "order_id",
            "batch_no",
            "kind",
            "order_no",
            "provisional_no",
            "table_label",
            "created_at",
        ],
    ),
    (
        "job_order_header",
        &[
            "order_id",
            "batch_id",
            "station",
            "order_no",
            "provisional_no",
            "table_label",
            "created_at",
        ],
    ),
    (
        "job_order_detail",
        &[
            "job_id",
            "order_line_id",
            "name_en",
            "name_ar",
            "qty",
            "modifiers",
            "note",
        ],
    ),
];

/// Ids in a planned command are derived from what the command is about, so planning the same
/// command twice (a cashier retrying after a lost answer) yields the same rows and mutation
/// ids, and the hub answers the repeat as a duplicate instead of cooking the round twice.
const COMMAND_NAMESPACE: uuid::Uuid =
    uuid::Uuid::from_u128(0x6361_7073_756c_6500_706f_7300_0000_0001);

fn derived_id(parts: &[&str]) -> String {
    uuid::Uuid::new_v5(&COMMAND_NAMESPACE, parts.join("/").as_bytes()).to_string()
}

/// A mutation whose mid is derived from the command (`scope`), the table, the row and the
/// action.
fn mutation(scope: &str, table: &str, action: Action, row: Value) -> Mutation {
    let id = row["id"].as_str().unwrap_or_default().to_string();
    let action_name = match action {
        Action::Insert => "insert",
        Action::Merge => "merge",
        Action::Save => "save",
        Action::Delete => "delete",
    };
    Mutation {
        mid: derived_id(&["mid", scope, table, &id, action_name]),
        table: table.into(),
        action,
        row: row.as_object().expect("rows are objects").clone(),
        base: None,
        by: None,
    }
}

impl Store {
    /// Plans "send to kitchen" for an order: its new lines become one batch (the first send,
    /// or an addition), with one job per station and one job item per line. Lines already
    /// sent stay in their own batch, so a served round never goes back to the kitchen.
    pub fn plan_send_to_kitchen(&self, order_id: &str) -> Result<(String, Vec<Mutation>)> {
        self.with_reader(|c| {
            let s = &self.schema;
            let order = select_rows(c, &s.tables["order_header"], "id = ?1", &[&order_id])?
                .into_iter()
                .next()
                .ok_or_else(|| StoreError::NotFound(format!("order '{order_id}' does not exist")))?;
            let lines: Vec<Row> =
                select_rows(c, &s.tables["order_line"], "order_id = ?1 AND status = 'new'", &[&order_id])?;
            if lines.is_empty() {
                return Err(StoreError::Conflict(format!("order '{order_id}' has no new lines to send")));
            }
            let batches: i64 =
                c.query_row("SELECT COUNT(*) FROM job_order_batch WHERE order_id = ?1", [order_id], |r| r.get(0))?;
            let now = now_rfc3339();
            // The round is named by its order and the lines in it.
            let mut line_ids: Vec<&str> = lines.iter().filter_map(|l| text(l, "id")).collect();
            line_ids.sort_unstable();
            let mut key = vec!["batch", order_id];
            key.extend(line_ids);
            let batch = derived_id(&key);
            let mut out = vec![mutation(
                &batch,
                "job_order_batch",
                Action::Insert,
                json!({"id": batch, "order_id": order_id, "batch_no": batches + 1,
                       "kind": if batches == 0 { "initial" } else { "addition" },
                       "order_no": order["order_no"], "provisional_no": order["provisional_no"], "table_label": order["table_label"], "created_at": now}),
            )];
            let mut by_station: BTreeMap<String, Vec<&Row>> = BTreeMap::new();
            for l in &lines {
                by_station.entry(text(l, "station").unwrap_or("kitchen").to_string()).or_default().push(l);
            }
            for (station, items) in by_station {
                let job = derived_id(&["job", &batch, &station]);
                out.push(mutation(
                    &batch,
                    "job_order_header",
                    Action::Insert,
                    json!({"id": job, "order_id": order_id, "batch_id": batch, "station": station,
                           "order_no": order["order_no"], "provisional_no": order["provisional_no"], "table_label": order["table_label"], "created_at": now}),
                ));
                for l in items {
                    out.push(mutation(
                        &batch,
                        "job_order_detail",
                        Action::Insert,
                        json!({"id": derived_id(&["item", &job, text(l, "id").unwrap_or_default()]), "job_id": job, "order_line_id": l["id"],
                               "name_en": l["name_en"], "name_ar": l["name_ar"], "qty": int(l, "qty"),
                               "modifiers": l["modifiers"], "note": l["note"]}),
                    ));
                }
            }
            for l in &lines {
                out.push(mutation(&batch, "order_line", Action::Merge, json!({"id": l["id"], "status": "sent", "batch_id": batch})));
            }
            if text(&order, "status") == Some("open") {
                out.push(mutation(&batch, "order_header", Action::Merge, json!({"id": order_id, "status": "sent", "updated_at": now})));
            }
            Ok((batch, out))
        })
    }
}
