//! Derived state, computed in the same transaction as the write that changes its inputs.
//!
//! The rules (order totals, shift totals, job progress, batch status) are code; the columns
//! they read and write are declared in the schema, and [`check_schema`] makes sure they are
//! there before a node starts. A derived change marks its part changed like any other write,
//! so it reaches the tills through the same capsules.

use std::collections::{BTreeMap, BTreeSet};

use capsule_protocol::{Row, Schema, TableDef, schema::ID_FIELD};
use rusqlite::{Connection, OptionalExtension, params};
use serde_json::{Value, json};

use crate::pipeline::Changes;
use crate::sql::{int, select_by_id, select_columns_by_id, text, update_columns};
use crate::{Result, StoreError};

const ORDER: &str = "order";
const SHIFT: &str = "shift";
const JOB: &str = "job";
const BATCH: &str = "batch";
const CLOCK: &str = "clock";

/// Batch statuses the kitchen's jobs decide; expo sets the others.
const BATCH_FOLLOWS_JOBS: [&str; 3] = ["queued", "cooking", "ready"];

/// Every (table, column) the rules below read or write.
const USED: &[(&str, &[&str])] = &[
    ("order_header", &["order_no"]),
    ("order_header", ORDER_COLUMNS),
    (
        "order_line",
        &[
            "order_id",
            "qty",
            "unit_price",
            "modifier_price",
            "tax_class",
            "discount",
            "status",
            "line_total",
        ],
    ),
    (
        "order_payment",
        &["order_id", "method", "amount", "tendered", "change_due"],
    ),
    ("pos_shift", SHIFT_COLUMNS),
    (
        "job_order_header",
        &[
            "batch_id",
            "station",
            "status",
            "started_at",
            "ready_at",
            "items_total",
            "items_done",
        ],
    ),
    ("job_order_detail", &["job_id", "status"]),
    (
        "job_order_batch",
        &["status", "jobs_total", "jobs_ready", "stations", "ready_at"],
    ),
    ("z_report", &["number", "to_v"]),
    ("time_clock", &["status", "finished_v"]),
];

pub fn check_schema(schema: &Schema) -> Result<(), String> {
    for (entity, table) in [
        (ORDER, "order_header"),
        (SHIFT, "pos_shift"),
        (JOB, "job_order_header"),
        (BATCH, "job_order_batch"),
        (CLOCK, "time_clock"),
    ] {
        if schema.entity(entity).map(|e| e.table.as_str()) != Some(table) {
            return Err(format!(
                "derived-state rules need entity '{entity}' on table '{table}'"
            ));
        }
    }
    // The derivations, the commands and the reports are code that names what it reads and
    // writes; every name is checked here, once, before a node serves anything.
    let used = [
        ("derived-state rules", USED),
        ("commands", crate::commands::USED),
        ("reports", crate::report::USED),
        ("order search", crate::history::USED),
    ];
    for (who, list) in used {
        for (table, cols) in list {
            let t = schema
                .table(table)
                .ok_or_else(|| format!("{who} need table '{table}'"))?;
            for c in *cols {
                if t.column(c).is_none() {
                    return Err(format!("{who} need column '{table}.{c}'"));
                }
            }
        }
    }
    Ok(())
}

/// `host:port`: a host name or IPv4 address and a port 1-65535 (where the print sender
/// connects, nothing else).
fn is_host_port(a: &str) -> bool {
    let Some((host, port)) = a.rsplit_once(':') else {
        return false;
    };
    !host.is_empty()
        && host.len() <= 253
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-')
        && port.parse::<u16>().is_ok_and(|p| p > 0)
}

/// Rejects writes to values the core decides that are not marked derived in the schema
/// because expo may also set them.
pub fn check_writable(t: &TableDef, row: &Row) -> Result<()> {
    if t.name == "printer"
        && let Some(a) = text(row, "address")
        && !is_host_port(a)
    {
        return Err(StoreError::Invalid(format!(
            "printer.address '{a}' must be host:port, e.g. 192.168.1.50:9100"
        )));
    }
    if t.name == "job_order_batch"
        && let Some(s) = text(row, "status")
        && BATCH_FOLLOWS_JOBS.contains(&s)
    {
        return Err(StoreError::Invalid(format!(
            "job_order_batch.status '{s}' follows from its jobs; only 'assembled' and 'served' can be set"
        )));
    }
    Ok(())
}

/// Values a new row gets from the rest of the table: an order without a number gets the next
/// one. On the hub this is the number everyone sees; a till's provisional guess is replaced
/// by the hub's through the usual capsule.
///
/// The next number is the highest + 1; past the top of the column's declared range it starts
/// again at the lowest number no open order holds, so one order stored with the largest
/// number cannot stop numbering.
pub fn fill_on_insert(conn: &Connection, t: &TableDef, row: &mut Row) -> Result<()> {
    if t.name == "order_header" && row.get("order_no").is_none_or(Value::is_null) {
        let top = t.column("order_no").and_then(|c| c.max).unwrap_or(i64::MAX);
        let highest: i64 = conn
            .prepare_cached("SELECT COALESCE(MAX(order_no), 0) FROM order_header")?
            .query_row([], |r| r.get(0))?;
        let next = match highest.checked_add(1) {
            Some(n) if n <= top => n,
            _ => conn
                .prepare_cached(
                    "SELECT COALESCE(MIN(n), 1) FROM (
                         SELECT 1 AS n WHERE NOT EXISTS (SELECT 1 FROM order_header
                             WHERE order_no = 1 AND status IN ('open', 'sent'))
                         UNION ALL
                         SELECT o.order_no + 1 FROM order_header o
                         WHERE o.status IN ('open', 'sent') AND o.order_no >= 1 AND o.order_no < ?1
                           AND NOT EXISTS (SELECT 1 FROM order_header p
                               WHERE p.order_no = o.order_no + 1 AND p.status IN ('open', 'sent')))",
                )?
                .query_row([top], |r| r.get(0))?,
        };
        row.insert("order_no".into(), json!(next));
    }
    Ok(())
}

/// An arithmetic result that does not fit: refused as bad input, never wrapped.
fn overflow(what: &str) -> StoreError {
    StoreError::Invalid(format!("{what} is too large to compute"))
}

/// Derived values that depend only on the row itself; all arithmetic is checked.
pub fn row_local(t: &TableDef, row: &mut Row) -> Result<()> {
    match t.name.as_str() {
        "order_line" => {
            let total = if text(row, "status") == Some("void") {
                0
            } else {
                let gross = int(row, "unit_price")
                    .checked_add(int(row, "modifier_price"))
                    .and_then(|unit| int(row, "qty").checked_mul(unit))
                    .ok_or_else(|| overflow("the line's qty x unit_price"))?;
                let net = gross
                    .checked_sub(int(row, "discount"))
                    .ok_or_else(|| overflow("the line's total"))?;
                if net < 0 {
                    return Err(StoreError::Invalid(format!(
                        "the line's discount ({}) is larger than qty x unit_price (with modifiers): {gross}",
                        int(row, "discount")
                    )));
                }
                net
            };
            row.insert("line_total".into(), json!(total));
        }
        "order_payment" => {
            let change = match (
                text(row, "method"),
                row.get("tendered").and_then(Value::as_i64),
            ) {
                (Some("cash"), Some(tendered)) => tendered
                    .checked_sub(int(row, "amount"))
                    .ok_or_else(|| overflow("the change due"))?
                    .max(0),
                _ => 0,
            };
            row.insert("change_due".into(), json!(change));
        }
        _ => {}
    }
    Ok(())
}

/// Records entities whose derived state follows a reference the written row held before or
/// holds now (an order's shift, a job's batch).
pub fn note_related(t: &TableDef, old: Option<&Row>, new: Option<&Row>, changes: &mut Changes) {
    let (field, entity) = match t.name.as_str() {
        "order_header" => ("shift_id", SHIFT),
        "job_order_header" => ("batch_id", BATCH),
        _ => return,
    };
    for row in [old, new].into_iter().flatten() {
        if let Some(id) = text(row, field) {
            changes.related.insert((entity.to_string(), id.to_string()));
        }
    }
}

/// Recomputes every derived value `written` may have moved, parents after children, and
/// returns what the recomputation changed.
///
/// With `whole_shop` false (a till applying its own write before the hub's version arrives)
/// only values computed from an entity's own child rows are recomputed (order totals, job
/// progress): a till, a light one above all, may not hold every order of a shift or every job
/// of a batch, and a total computed from part of them would be wrong with nothing to correct
/// it. The hub's capsules bring shift and batch values.
pub fn propagate(
    conn: &Connection,
    schema: &Schema,
    written: &Changes,
    whole_shop: bool,
) -> Result<Changes> {
    let mut out = Changes::default();
    let mut shifts: BTreeMap<String, Share> = written
        .ids_of(SHIFT)
        .into_iter()
        .map(|id| (id, Share::default()))
        .collect();
    let mut batches = written.ids_of(BATCH);
    for id in written.ids_of(ORDER) {
        let found = recompute_order(conn, schema, &id, whole_shop, &mut out)?;
        if whole_shop {
            let share = found.and_then(|(shift, share)| Some((shift?, share)));
            move_share(conn, &id, share, &mut shifts)?;
        }
    }
    if whole_shop {
        for ((entity, id), ch) in &written.entities {
            if entity == ORDER && ch.gone {
                move_share(conn, id, None, &mut shifts)?;
            }
        }
    }
    for id in written.ids_of(JOB) {
        if let Some(batch) = recompute_job(conn, schema, &id, &mut out)? {
            batches.insert(batch);
        }
    }
    if whole_shop {
        for (id, delta) in shifts {
            // A shift written itself (opened, closed, re-floated; or created after its first
            // orders) is summed afresh from its orders' shares; otherwise moved by the delta.
            let whole = written
                .entities
                .get(&(SHIFT.to_string(), id.clone()))
                .is_some_and(|c| !c.gone);
            recompute_shift(conn, schema, &id, (!whole).then_some(delta), &mut out)?;
        }
        for id in batches {
            recompute_batch(conn, schema, &id, &mut out)?;
        }
        for id in written.ids_of(CLOCK) {
            recompute_clock(conn, schema, &id, &mut out)?;
        }
    }
    Ok(out)
}

/// A time-clock entry closed at the hub is filed in the business day of that version (its
/// hours count in that day's Z), once: a closed entry is not edited (`permits`).
fn recompute_clock(
    conn: &Connection,
    schema: &Schema,
    id: &str,
    changes: &mut Changes,
) -> Result<()> {
    let Some(row) = select_by_id(conn, &schema.tables["time_clock"], id)? else {
        return Ok(());
    };
    let closed = text(&row, "status") == Some("closed");
    let filed = row.get("finished_v").is_some_and(|v| !v.is_null());
    if closed && !filed {
        let v = crate::sql::meta_i64(conn, crate::meta::VERSION)?;
        set_derived(
            conn,
            schema,
            CLOCK,
            &row,
            vec![("finished_v", json!(v))],
            changes,
        )?;
    }
    Ok(())
}

/// Writes the derived values that differ from `current` and marks their parts changed.
fn set_derived(
    conn: &Connection,
    schema: &Schema,
    entity: &str,
    current: &Row,
    values: Vec<(&str, Value)>,
    changes: &mut Changes,
) -> Result<()> {
    let e = &schema.entities[entity];
    let t = &schema.tables[&e.table];
    let id = text(current, ID_FIELD).unwrap_or_default();
    let set: Vec<_> = values
        .into_iter()
        .filter(|(c, v)| current.get(*c) != Some(v))
        .map(|(c, v)| (c.to_string(), t.column(c).map(|col| col.ty), v))
        .collect();
    update_columns(conn, t, id, &set)?;
    for (c, _, _) in &set {
        changes.touch(
            entity,
            id,
            &e.part_of_column(c).expect("checked by check_schema").name,
        );
    }
    Ok(())
}

/// `amount * bp / 10000` rounded half up, in 128-bit so no rate can overflow it; amounts are
/// never negative (the schema's ranges), and the result is at most `amount` for rates up to
/// 100%, so it fits back in 64 bits whenever the rates are in their declared range.
fn apply_bp(amount: i64, bp: i64) -> Result<i64> {
    let v = (i128::from(amount) * i128::from(bp) + 5_000).div_euclid(10_000);
    i64::try_from(v).map_err(|_| overflow("a tax or service amount"))
}

/// `amount * part / whole` rounded down (exactly `amount` when every line is standard-rated),
/// in 128-bit so it cannot overflow; 0 when there is nothing to share.
fn share(amount: i64, part: i64, whole: i64) -> Result<i64> {
    if whole <= 0 || part >= whole {
        return Ok(if whole <= 0 { 0 } else { amount });
    }
    let v = i128::from(amount) * i128::from(part.max(0)) / i128::from(whole);
    i64::try_from(v).map_err(|_| overflow("the order's taxable amount"))
}

/// Sums with a checked add; `what` names the total in the error.
fn checked_sum(values: impl IntoIterator<Item = i64>, what: &str) -> Result<i64> {
    values
        .into_iter()
        .try_fold(0i64, |acc, v| acc.checked_add(v))
        .ok_or_else(|| overflow(what))
}

/// An SQLite `SUM` over integers fails rather than wrap; that failure is a refused write.
fn sql_sum_error(e: rusqlite::Error, what: &str) -> StoreError {
    match &e {
        rusqlite::Error::SqliteFailure(_, Some(msg)) if msg.contains("integer overflow") => {
            overflow(what)
        }
        _ => StoreError::Sqlite(e),
    }
}

/// The columns of an order its totals are computed from and written to.
const ORDER_COLUMNS: &[&str] = &[
    "shift_id",
    "status",
    "finished_v",
    "tax_rate_bp",
    "service_rate_bp",
    "order_discount",
    "subtotal",
    "discount_total",
    "service_total",
    "tax_total",
    "total",
    "paid_total",
    "balance_due",
    "item_count",
];

/// Sets an order's totals; returns its shift and its share of the shift's totals (None when
/// the order is not here). `decides`: this node is the hub, which alone says when an order
/// was finished (a till's version is only where its last snapshot stood, which would file the
/// order in a closed day).
fn recompute_order(
    conn: &Connection,
    schema: &Schema,
    id: &str,
    decides: bool,
    changes: &mut Changes,
) -> Result<Option<(Option<String>, Share)>> {
    let t = &schema.tables["order_header"];
    let Some(order) = select_columns_by_id(conn, t, id, ORDER_COLUMNS)? else {
        return Ok(None);
    };
    // At most the schema's max_per_parent lines and payments: summed here with checked
    // arithmetic rather than by SQL, whose integer products silently turn into floats.
    let lines: Vec<(i64, i64, i64, bool)> = conn
        .prepare_cached(
            "SELECT qty, unit_price, modifier_price, discount, tax_class FROM order_line
             WHERE order_id = ?1 AND COALESCE(status, '') != 'void'",
        )?
        .query_map([id], |r| {
            let unit = r.get::<_, Option<i64>>(1)?.unwrap_or(0);
            let modifiers = r.get::<_, Option<i64>>(2)?.unwrap_or(0);
            Ok((
                r.get::<_, Option<i64>>(0)?.unwrap_or(0),
                // A sum of two in-range prices: far below i64::MAX.
                unit.saturating_add(modifiers),
                r.get::<_, Option<i64>>(3)?.unwrap_or(0),
                r.get::<_, Option<String>>(4)?.as_deref() != Some("zero"),
            ))
        })?
        .collect::<Result<_, _>>()?;
    let mut gross = Vec::with_capacity(lines.len());
    for (qty, price, _, _) in &lines {
        gross.push(
            qty.checked_mul(*price)
                .ok_or_else(|| overflow("a line's qty x unit_price"))?,
        );
    }
    // Net of line discounts, all lines and the standard-rated ones: the tax base is the
    // standard-rated share of what the customer pays before tax.
    let lines_net = checked_sum(
        gross.iter().zip(&lines).map(|(g, l)| g - l.2),
        "the order's subtotal",
    )?;
    let taxed_net = checked_sum(
        gross
            .iter()
            .zip(&lines)
            .filter(|(_, l)| l.3)
            .map(|(g, l)| g - l.2),
        "the order's subtotal",
    )?;
    let subtotal = checked_sum(gross, "the order's subtotal")?;
    let line_discounts = checked_sum(lines.iter().map(|l| l.2), "the order's discounts")?;
    let items = checked_sum(lines.iter().map(|l| l.0), "the order's item count")?;
    let payments = payments_of(conn, id)?;
    let paid = checked_sum(payments.iter().map(|p| p.1), "the order's payments")?;
    let discount_total = line_discounts
        .checked_add(int(&order, "order_discount"))
        .ok_or_else(|| overflow("the order's discounts"))?;
    let net = subtotal.saturating_sub(discount_total).max(0);
    let service = apply_bp(net, int(&order, "service_rate_bp"))?;
    let taxable = net
        .checked_add(service)
        .ok_or_else(|| overflow("the order's total"))?;
    let tax = apply_bp(
        share(taxable, taxed_net, lines_net)?,
        int(&order, "tax_rate_bp"),
    )?;
    let total = taxable
        .checked_add(tax)
        .ok_or_else(|| overflow("the order's total"))?;
    let balance = total
        .checked_sub(paid)
        .ok_or_else(|| overflow("the order's balance"))?;
    let most = capsule_protocol::defaults::MAX_ORDER_TOTAL;
    for (what, v) in [
        ("subtotal", subtotal),
        ("discounts", discount_total),
        ("total", total),
    ] {
        if v > most {
            return Err(StoreError::Invalid(format!(
                "the order's {what} would be {v}, above the most one order may come to ({most} in minor units)"
            )));
        }
    }
    let finished_v = if decides {
        finished_version(conn, &order)?
    } else {
        order.get("finished_v").and_then(Value::as_i64)
    };
    set_derived(
        conn,
        schema,
        ORDER,
        &order,
        vec![
            ("subtotal", json!(subtotal)),
            ("discount_total", json!(discount_total)),
            ("service_total", json!(service)),
            ("tax_total", json!(tax)),
            ("total", json!(total)),
            ("paid_total", json!(paid)),
            ("balance_due", json!(balance)),
            ("item_count", json!(items)),
            ("finished_v", json!(finished_v)),
        ],
        changes,
    )?;
    let counted = text(&order, "status") != Some("void");
    Ok(Some((
        text(&order, "shift_id").map(str::to_string),
        share_of(counted, &payments)?,
    )))
}

/// An order's payments: method and amount.
fn payments_of(conn: &Connection, order_id: &str) -> Result<Vec<(Option<String>, i64)>> {
    // At most max_per_parent payments: summed with checked arithmetic by the callers.
    Ok(conn
        .prepare_cached(
            "SELECT method, COALESCE(amount, 0) FROM order_payment WHERE order_id = ?1",
        )?
        .query_map([order_id], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<Result<_, _>>()?)
}

/// Statuses that finish an order: it then belongs to a business day (a Z report).
const ORDER_FINISHED: [&str; 3] = ["paid", "closed", "void"];

/// The version at which the order was first finished (kept while it stays finished), or None
/// while it is open. An order a Z report has counted is never reopened: that would move money
/// out of a closed day.
fn finished_version(conn: &Connection, order: &Row) -> Result<Option<i64>> {
    let before = order.get("finished_v").and_then(Value::as_i64);
    let finished = text(order, "status").is_some_and(|s| ORDER_FINISHED.contains(&s));
    match (finished, before) {
        (true, Some(v)) => Ok(Some(v)),
        (true, None) => Ok(Some(crate::sql::meta_i64(conn, crate::meta::VERSION)?)),
        (false, None) => Ok(None),
        (false, Some(v)) => match counted_in(conn, v)? {
            Some(number) => Err(StoreError::Conflict(format!(
                "order '{}' was counted in Z report #{number}: a closed day cannot be reopened",
                text(order, ID_FIELD).unwrap_or_default()
            ))),
            None => Ok(None),
        },
    }
}

/// The Z report that counted an order finished at hub version `v`, if one did.
fn counted_in(conn: &Connection, v: i64) -> Result<Option<i64>> {
    Ok(conn
        .query_row(
            "SELECT number FROM z_report WHERE to_v >= ?1 ORDER BY number LIMIT 1",
            [v],
            |r| r.get(0),
        )
        .optional()?)
}

/// The hub refuses any write to an order a Z report has counted (its header, lines or
/// payments): a closed day's money never moves. The one change it still takes is paid ->
/// closed (clearing the table after the day was closed). A till leaves this to the hub.
pub fn check_closed_day(
    conn: &Connection,
    t: &TableDef,
    old: Option<&Row>,
    new: &Row,
    action: capsule_protocol::Action,
) -> Result<()> {
    let order_id = match t.name.as_str() {
        "order_header" => text(new, ID_FIELD),
        "order_line" | "order_payment" => {
            text(new, "order_id").or_else(|| old.and_then(|o| text(o, "order_id")))
        }
        _ => return Ok(()),
    };
    let Some(order_id) = order_id else {
        return Ok(());
    };
    let finished: Option<Option<i64>> = conn
        .prepare_cached("SELECT finished_v FROM order_header WHERE id = ?1")?
        .query_row([order_id], |r| r.get(0))
        .optional()?;
    let Some(v) = finished.flatten() else {
        return Ok(());
    };
    let Some(number) = counted_in(conn, v)? else {
        return Ok(());
    };
    let settled =
        |r: Option<&Row>| matches!(r.and_then(|r| text(r, "status")), Some("paid" | "closed"));
    let closing_only = t.name == "order_header"
        && action == capsule_protocol::Action::Merge
        && new
            .keys()
            .all(|k| matches!(k.as_str(), ID_FIELD | "status" | "updated_at" | "closed_at"))
        && settled(old)
        && text(new, "status").is_none_or(|s| s == "paid" || s == "closed");
    if closing_only {
        return Ok(());
    }
    Err(StoreError::Conflict(format!(
        "order '{order_id}' was counted in Z report #{number}: a closed day's orders cannot change"
    )))
}

/// An order's share of its shift's totals: whether it counts (not void), its cash and card
/// payments.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Share {
    counted: i64,
    cash: i64,
    card: i64,
}

impl Share {
    fn plus(self, o: Share, sign: i64) -> Result<Share> {
        let add = |a: i64, b: i64| {
            b.checked_mul(sign)
                .and_then(|b| a.checked_add(b))
                .ok_or_else(|| overflow("the shift's sales"))
        };
        Ok(Share {
            counted: add(self.counted, o.counted)?,
            cash: add(self.cash, o.cash)?,
            card: add(self.card, o.card)?,
        })
    }
}

fn order_share(conn: &Connection, order_id: &str) -> Result<Share> {
    let counted: bool = conn
        .prepare_cached("SELECT COALESCE(status, '') != 'void' FROM order_header WHERE id = ?1")?
        .query_row([order_id], |r| r.get(0))?;
    if !counted {
        return Ok(Share::default());
    }
    share_of(counted, &payments_of(conn, order_id)?)
}

/// The share of an order that counts (or not: a void one), given its payments.
fn share_of(counted: bool, payments: &[(Option<String>, i64)]) -> Result<Share> {
    if !counted {
        return Ok(Share::default());
    }
    let sum = |m: &str| {
        checked_sum(
            payments
                .iter()
                .filter(|(method, _)| method.as_deref() == Some(m))
                .map(|(_, a)| *a),
            "the order's payments",
        )
    };
    Ok(Share {
        counted: 1,
        cash: sum("cash")?,
        card: sum("card")?,
    })
}

/// Records `order_id`'s new share (None: the order is gone or has no shift) and adds the
/// difference to `deltas`: minus the old share on the old shift, plus the new on the new.
fn move_share(
    conn: &Connection,
    order_id: &str,
    new: Option<(String, Share)>,
    deltas: &mut BTreeMap<String, Share>,
) -> Result<()> {
    let old: Option<(String, Share)> = conn
        .prepare_cached(
            "SELECT shift_id, counted, cash, card FROM _shift_share WHERE order_id = ?1",
        )?
        .query_row([order_id], |r| {
            Ok((
                r.get(0)?,
                Share {
                    counted: r.get(1)?,
                    cash: r.get(2)?,
                    card: r.get(3)?,
                },
            ))
        })
        .optional()?;
    if old == new {
        return Ok(());
    }
    if let Some((shift, share)) = &old {
        let d = deltas.entry(shift.clone()).or_default();
        *d = d.plus(*share, -1)?;
    }
    match &new {
        Some((shift, share)) => {
            let d = deltas.entry(shift.clone()).or_default();
            *d = d.plus(*share, 1)?;
            conn.prepare_cached(
                "INSERT INTO _shift_share(order_id, shift_id, counted, cash, card) VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT(order_id) DO UPDATE SET shift_id = excluded.shift_id, counted = excluded.counted,
                 cash = excluded.cash, card = excluded.card",
            )?
            .execute(params![order_id, shift, share.counted, share.cash, share.card])?;
        }
        None => {
            conn.prepare_cached("DELETE FROM _shift_share WHERE order_id = ?1")?
                .execute([order_id])?;
        }
    }
    Ok(())
}

/// The columns of a shift its totals are computed from and written to.
const SHIFT_COLUMNS: &[&str] = &[
    "opening_float",
    "orders_count",
    "cash_sales",
    "card_sales",
    "total_sales",
    "expected_cash",
];

/// Sets a shift's totals: its stored totals moved by `delta`, or (None) the sum of its
/// orders' shares.
fn recompute_shift(
    conn: &Connection,
    schema: &Schema,
    id: &str,
    delta: Option<Share>,
    changes: &mut Changes,
) -> Result<()> {
    let t = &schema.tables["pos_shift"];
    let Some(shift) = select_columns_by_id(conn, t, id, SHIFT_COLUMNS)? else {
        return Ok(());
    };
    let totals = match delta {
        Some(delta) => Share {
            counted: int(&shift, "orders_count"),
            cash: int(&shift, "cash_sales"),
            card: int(&shift, "card_sales"),
        }
        .plus(delta, 1)?,
        None => conn
            .prepare_cached(
                "SELECT COUNT(*), COALESCE(SUM(s.counted), 0), COALESCE(SUM(s.cash), 0), COALESCE(SUM(s.card), 0)
                 FROM order_header o JOIN _shift_share s ON s.order_id = o.id
                 WHERE o.shift_id = ?1 AND s.shift_id = ?1",
            )?
            .query_row([id], |r| {
                let _: i64 = r.get(0)?;
                Ok(Share {
                    counted: r.get(1)?,
                    cash: r.get(2)?,
                    card: r.get(3)?,
                })
            })
            .map_err(|e| sql_sum_error(e, "the shift's sales"))?,
    };
    let total = totals
        .cash
        .checked_add(totals.card)
        .ok_or_else(|| overflow("the shift's sales"))?;
    let expected = int(&shift, "opening_float")
        .checked_add(totals.cash)
        .ok_or_else(|| overflow("the shift's expected cash"))?;
    set_derived(
        conn,
        schema,
        SHIFT,
        &shift,
        vec![
            ("orders_count", json!(totals.counted)),
            ("cash_sales", json!(totals.cash)),
            ("card_sales", json!(totals.card)),
            ("total_sales", json!(total)),
            ("expected_cash", json!(expected)),
        ],
        changes,
    )
}

/// Rebuilds the shares and totals of every shift that can still change, from the data: when
/// a node starts deciding as hub, whatever its shares held (a follower never keeps them).
///
/// A shift can still change while it is open or while one of its orders is not counted by a
/// Z report (open, or finished after the newest Z). Every other shift's orders are closed
/// days, which no write moves (`check_closed_day`), so its synced totals are final and its
/// orders' shares are never asked for again. This keeps a claim's cost to the shop's open
/// business instead of its whole history.
pub fn rebuild_shift_totals(conn: &Connection, schema: &Schema) -> Result<Changes> {
    let live: Vec<String> = conn
        .prepare(&format!(
            "SELECT id FROM pos_shift WHERE status IN ('open')
             UNION SELECT shift_id FROM order_header WHERE status IN ('open', 'sent')
             UNION SELECT shift_id FROM order_header WHERE finished_v > {}",
            crate::scope::DAY_STARTS_AFTER_V
        ))?
        .query_map([], |r| r.get::<_, Option<String>>(0))?
        .filter_map(|r| r.transpose())
        .collect::<Result<_, _>>()?;
    let mut ignored = BTreeMap::new();
    let mut changes = Changes::default();
    for shift in live {
        // Each order's share is overwritten (keyed by order); a stale one naming another
        // shift is never summed, since a shift sums only shares that name it and whose order
        // still does.
        let orders: Vec<String> = conn
            .prepare_cached("SELECT id FROM order_header WHERE shift_id = ?1")?
            .query_map([&shift], |r| r.get(0))?
            .collect::<Result<_, _>>()?;
        for id in orders {
            let share = order_share(conn, &id)?;
            move_share(conn, &id, Some((shift.clone(), share)), &mut ignored)?;
        }
        recompute_shift(conn, schema, &shift, None, &mut changes)?;
    }
    Ok(changes)
}

fn recompute_job(
    conn: &Connection,
    schema: &Schema,
    id: &str,
    changes: &mut Changes,
) -> Result<Option<String>> {
    let Some(job) = select_by_id(conn, &schema.tables["job_order_header"], id)? else {
        return Ok(None);
    };
    let (total, done): (i64, i64) = conn
        .prepare_cached(
            "SELECT COUNT(*), COALESCE(SUM(status = 'done'), 0) FROM job_order_detail WHERE job_id = ?1",
        )?
        .query_row([id], |r| Ok((r.get(0)?, r.get(1)?)))?;
    let mut values = vec![("items_total", json!(total)), ("items_done", json!(done))];
    // Timers on the kitchen screen count from these; fill them when the client did not.
    let now = capsule_protocol::now_rfc3339();
    match text(&job, "status") {
        Some("cooking") | Some("ready") if job.get("started_at").is_none_or(Value::is_null) => {
            values.push(("started_at", json!(now)));
        }
        _ => {}
    }
    match text(&job, "status") {
        Some("ready") if job.get("ready_at").is_none_or(Value::is_null) => {
            values.push(("ready_at", json!(now)))
        }
        Some("queued") | Some("cooking") if !job.get("ready_at").is_none_or(Value::is_null) => {
            values.push(("ready_at", Value::Null));
        }
        _ => {}
    }
    set_derived(conn, schema, JOB, &job, values, changes)?;
    Ok(text(&job, "batch_id").map(str::to_string))
}

/// A round's jobs, through its order's (the order_id index): a round's jobs are among its
/// order's few, so this costs the same after a year of rounds.
pub(crate) const JOBS_OF_ROUND: &str =
    "SELECT status, station FROM job_order_header WHERE order_id = ?1 AND batch_id = ?2";

fn recompute_batch(
    conn: &Connection,
    schema: &Schema,
    id: &str,
    changes: &mut Changes,
) -> Result<()> {
    let Some(batch) = select_by_id(conn, &schema.tables["job_order_batch"], id)? else {
        return Ok(());
    };
    let mut stmt = conn.prepare_cached(JOBS_OF_ROUND)?;
    let jobs: Vec<(Option<String>, Option<String>)> = stmt
        .query_map(
            params![text(&batch, "order_id").unwrap_or_default(), id],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?
        .collect::<Result<_, _>>()?;
    let total = jobs.len() as i64;
    let ready = jobs
        .iter()
        .filter(|(s, _)| s.as_deref() == Some("ready"))
        .count() as i64;
    let started = jobs
        .iter()
        .any(|(s, _)| matches!(s.as_deref(), Some("cooking") | Some("ready")));
    let stations: BTreeSet<&str> = jobs.iter().filter_map(|(_, st)| st.as_deref()).collect();
    let current = text(&batch, "status").unwrap_or("queued");
    let status = if !BATCH_FOLLOWS_JOBS.contains(&current) {
        // Assembled and served are expo's decisions; a served round never goes back.
        current
    } else if total > 0 && ready == total {
        "ready"
    } else if started {
        "cooking"
    } else {
        "queued"
    };
    let ready_at = match (status, batch.get("ready_at")) {
        ("queued" | "cooking", _) => Value::Null,
        (_, Some(Value::String(s))) => json!(s),
        _ => json!(capsule_protocol::now_rfc3339()),
    };
    set_derived(
        conn,
        schema,
        BATCH,
        &batch,
        vec![
            ("status", json!(status)),
            ("jobs_total", json!(total)),
            ("jobs_ready", json!(ready)),
            (
                "stations",
                json!(stations.into_iter().collect::<Vec<_>>().join(",")),
            ),
            ("ready_at", ready_at),
        ],
        changes,
    )
}

#[cfg(test)]
mod tests {
    use super::apply_bp;

    #[test]
    fn basis_points_round_half_up() {
        assert_eq!(apply_bp(10_000, 1_500).unwrap(), 1_500);
        assert_eq!(apply_bp(333, 1_500).unwrap(), 50); // 49.95 -> 50
        assert_eq!(apply_bp(3, 1_500).unwrap(), 0); // 0.45 -> 0
        assert_eq!(apply_bp(0, 1_500).unwrap(), 0);
        // Rates out of their declared range are refused, never wrapped.
        assert!(apply_bp(i64::MAX, 1_000_000_000_000_000).is_err());
        assert_eq!(apply_bp(i64::MAX, 10_000).unwrap(), i64::MAX);
    }
}
