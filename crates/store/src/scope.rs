//! Which rows a read selects: all of them, what a till opens for business with (light), or
//! what a screen shows (the working set). The light and working-set selections are bounded
//! by the shop's open business and its current day, never by its history.

use capsule_protocol::{Entity, Schema, TableDef, TableRole};

/// The rows a snapshot-shaped read carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Every row: a node that may become hub copies this.
    Full,
    /// Open business (each entity's `light` filter) and the newest Z report: what a till
    /// needs to open for business and to refuse a write into a counted day.
    Light,
    /// What the screens (till, kitchen, expo, dashboard) show: open business, the current
    /// day's newest finished orders with their kitchen work and shifts, the newest Z report,
    /// and every row of the shop's configuration (menu, settings, printers).
    Screens,
    /// What a node that will hold every row opens with before its history is copied in
    /// pages ([`Store::backfill_page`](crate::Store)): open business, every order the newest
    /// Z has not counted (the whole current day, so its X report is whole at once) with their
    /// kitchen work and shifts, the newest Z report and the configuration.
    Day,
}

impl Scope {
    /// The name a snapshot document carries (`scope`).
    pub fn name(self) -> &'static str {
        match self {
            Scope::Full => "full",
            Scope::Light => "light",
            Scope::Screens => "screens",
            Scope::Day => "day",
        }
    }
}

/// At most this many finished orders of the current day are on the screens (the newest, with
/// their lines, payments and kitchen work: about 5 KB each), which keeps a screen's load
/// under 1 MB on a busy day; older ones are found through the order search.
pub const SCREEN_FINISHED_ORDERS: usize = 100;

/// The entities whose rows follow the orders they belong to (by their `order_id`): in the
/// light and screen scopes only the rows of open orders and of the day's newest finished ones.
const FOLLOW_ORDERS: &[&str] = &["job", "batch"];

/// The SQL condition selecting `t`'s rows for `scope` ("1" for all of them). Each condition
/// reaches its rows through an index (asserted by `the_working_set_reads_through_indexes`):
/// an `id IN (...)` of indexed lookups, never a scan of the table.
pub fn condition(schema: &Schema, t: &TableDef, scope: Scope) -> String {
    match &t.role {
        TableRole::Entity { entity } => entity_condition(schema, &schema.entities[entity], scope),
        TableRole::Child {
            entity,
            parent_field,
            ..
        } => {
            let e = &schema.entities[entity];
            match entity_condition(schema, e, scope).as_str() {
                "1" => "1".to_string(),
                cond => format!(
                    "\"{parent_field}\" IN (SELECT id FROM \"{}\" WHERE {cond})",
                    e.table
                ),
            }
        }
    }
}

fn entity_condition(schema: &Schema, e: &Entity, scope: Scope) -> String {
    if scope == Scope::Full {
        return "1".to_string();
    }
    if e.secret && scope == Scope::Screens {
        // A screen never holds PIN hashes: its node verifies the PIN.
        return "0".to_string();
    }
    if e.table == "z_report" {
        return "id IN (SELECT id FROM z_report ORDER BY number DESC LIMIT 1)".to_string();
    }
    let Some(open) = crate::sql::light_condition(e) else {
        // Configuration (menu, settings, printers, the roster of devices): bounded by the
        // shop, not its history.
        return "1".to_string();
    };
    let open_ids = format!("SELECT id FROM \"{}\" WHERE {open}", e.table);
    let Some(order) = schema.entities.get("order") else {
        return format!("id IN ({open_ids})");
    };
    let open_orders = format!(
        "SELECT id FROM order_header WHERE {}",
        crate::sql::light_condition(order).unwrap_or_else(|| "0".to_string())
    );
    // The finished orders this scope carries besides the open ones.
    let finished = match scope {
        Scope::Day => day_orders(),
        _ => recent_orders(),
    };
    let working_orders = format!("{open_orders} UNION {finished}");
    match (e.name.as_str(), scope) {
        ("order", Scope::Light) => format!("id IN ({open_ids})"),
        ("order", _) => format!("id IN ({working_orders})"),
        // Kitchen work follows its order: a round nobody bumped or served (a shop without a
        // kitchen screen or expo) leaves the screens with its order, instead of staying
        // "queued" there for years.
        (name, Scope::Light) if FOLLOW_ORDERS.contains(&name) => format!(
            "id IN (SELECT id FROM \"{}\" WHERE order_id IN ({working_orders}) AND {open})",
            e.table
        ),
        (name, _) if FOLLOW_ORDERS.contains(&name) => format!(
            "id IN (SELECT id FROM \"{}\" WHERE order_id IN ({working_orders}))",
            e.table
        ),
        ("shift", Scope::Screens | Scope::Day) => format!(
            "id IN ({open_ids} UNION SELECT shift_id FROM order_header WHERE id IN ({finished}))"
        ),
        _ => format!("id IN ({open_ids})"),
    }
}

/// SQL for the hub version the current business day starts after: the newest Z report's
/// `to_v` (0 before the first), read from the first entry of the Z number index.
pub(crate) const DAY_STARTS_AFTER_V: &str =
    "(SELECT COALESCE(MAX(to_v), 0) FROM (SELECT to_v FROM z_report ORDER BY number DESC LIMIT 1))";

/// The current day's newest finished orders: finished after the newest Z report's last
/// version, found backwards through the index on `finished_v`.
fn recent_orders() -> String {
    format!(
        "SELECT id FROM (SELECT id FROM order_header WHERE finished_v > {DAY_STARTS_AFTER_V} \
         ORDER BY finished_v DESC LIMIT {SCREEN_FINISHED_ORDERS})"
    )
}

/// Every order the newest Z report has not counted (the current day, however busy), through
/// the index on `finished_v`.
fn day_orders() -> String {
    format!("SELECT id FROM order_header WHERE finished_v > {DAY_STARTS_AFTER_V}")
}
