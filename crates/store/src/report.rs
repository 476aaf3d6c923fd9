//! Shift and day reports (X and Z), computed from the synced rows with checked arithmetic.
//!
//! A business day is the orders finished (paid, closed or voided) between two Z reports,
//! told by the hub version at which each order was first finished (`finished_v`): a Z
//! taken at hub version V holds the orders finished after the previous Z's `to_v` and up to
//! V, so every finished order lands in exactly one Z whatever the tills' clocks say. An X
//! report is the same computation over what is finished since the last Z, plus what is still
//! open, and writes nothing.

use std::collections::BTreeMap;

use capsule_protocol::{Action, Mutation, now_rfc3339};
use rusqlite::{Connection, OptionalExtension};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::sql::meta_i64;
use crate::{Result, Store, StoreError, meta};

/// Every (table, column) the reports read: checked against the schema when a store opens.
pub(crate) const USED: &[(&str, &[&str])] = &[
    (
        "shop_settings",
        &[
            "name",
            "currency",
            "currency_digits",
            "time_zone",
            "day_starts_hour",
        ],
    ),
    (
        "order_header",
        &[
            "status",
            "guests",
            "subtotal",
            "discount_total",
            "service_total",
            "tax_total",
            "total",
            "paid_total",
            "shift_id",
            "finished_v",
        ],
    ),
    (
        "order_line",
        &[
            "order_id",
            "item_code",
            "name_en",
            "name_ar",
            "category",
            "qty",
            "unit_price",
            "modifier_price",
            "line_total",
            "status",
        ],
    ),
    (
        "order_payment",
        &["order_id", "method", "amount", "taken_by"],
    ),
    (
        "time_clock",
        &[
            "staff_id",
            "kind",
            "started_at",
            "ended_at",
            "status",
            "finished_v",
        ],
    ),
    ("staff", &["name", "name_ar"]),
    ("menu_category", &["name_en", "name_ar"]),
    (
        "pos_shift",
        &[
            "cashier",
            "node_id",
            "status",
            "opened_at",
            "closed_at",
            "opening_float",
            "cash_sales",
            "card_sales",
            "expected_cash",
            "counted_cash",
        ],
    ),
    (
        "z_report",
        &[
            "number", "taken_at", "taken_by", "from_v", "to_v", "orders", "total", "body",
        ],
    ),
];

/// One row of a "by category" or "by item" table.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(default)]
pub struct SalesRow {
    pub key: String,
    pub name_en: String,
    pub name_ar: Option<String>,
    pub qty: i64,
    /// Line totals: after line discounts, before the order discount, service and tax.
    pub amount: i64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(default)]
pub struct MethodRow {
    pub method: String,
    pub count: i64,
    pub amount: i64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(default)]
pub struct ShiftRow {
    pub id: String,
    pub cashier: String,
    pub node_id: String,
    pub status: String,
    pub opened_at: String,
    pub closed_at: Option<String>,
    pub opening_float: i64,
    pub cash_sales: i64,
    pub card_sales: i64,
    pub expected_cash: i64,
    pub counted_cash: Option<i64>,
    /// counted - expected: negative is a shortage.
    pub difference: Option<i64>,
}

/// What one member of staff did in the report's day.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(default)]
pub struct StaffRow {
    pub staff_id: String,
    pub name: String,
    pub name_ar: Option<String>,
    /// Payments they took, and their sum (minor units).
    pub payments: i64,
    pub amount: i64,
    /// Seconds between clocking in and out, in entries closed in the day.
    pub clocked_s: i64,
    /// Seconds of breaks in the day.
    pub break_s: i64,
    /// Clocked time less breaks.
    pub worked_s: i64,
    /// Clocked in now (an open work entry).
    pub clocked_in: bool,
}

/// An X or Z report. Money in minor units of `currency`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(default)]
pub struct Report {
    /// "X" or "Z".
    pub kind: String,
    /// Z only: its number, one more than the last.
    pub number: Option<i64>,
    pub taken_at: String,
    pub taken_by: Option<String>,
    pub shop: Option<String>,
    /// The shop's time zone when it was taken: its times are shown and printed in it.
    #[serde(default)]
    pub time_zone: Option<String>,
    /// The business day it reports (local date; a day starts at the shop's `day_starts_hour`).
    #[serde(default)]
    pub business_date: Option<String>,
    pub currency: Option<String>,
    pub currency_digits: i64,
    /// Orders finished after this hub version...
    pub from_v: i64,
    /// ...and up to this one.
    pub to_v: i64,
    /// Paid or closed orders.
    pub orders: i64,
    pub guests: i64,
    pub items: i64,
    /// qty x price over live lines, before any discount.
    pub gross_sales: i64,
    pub discounts: i64,
    pub net_sales: i64,
    pub service: i64,
    pub tax: i64,
    /// What the customers owe: net + service + tax.
    pub total: i64,
    /// Payments applied to these orders (cash and card).
    pub paid: i64,
    pub by_category: Vec<SalesRow>,
    pub by_item: Vec<SalesRow>,
    pub by_method: Vec<MethodRow>,
    pub void_orders: i64,
    pub void_orders_amount: i64,
    pub void_lines: i64,
    pub void_lines_amount: i64,
    /// Orders still open or at the kitchen, not in the figures above.
    pub open_orders: i64,
    pub open_orders_amount: i64,
    pub shifts: Vec<ShiftRow>,
    /// Per member of staff: payments taken and hours worked.
    pub by_staff: Vec<StaffRow>,
}

fn overflow(what: &str) -> StoreError {
    StoreError::Invalid(format!("{what} is too large to report"))
}

fn add(acc: &mut i64, v: i64, what: &str) -> Result<()> {
    *acc = acc.checked_add(v).ok_or_else(|| overflow(what))?;
    Ok(())
}

/// The highest `to_v` of the Z reports so far and the next Z number.
fn last_z(conn: &Connection) -> Result<(i64, i64)> {
    Ok(conn
        .query_row(
            "SELECT to_v, number FROM z_report ORDER BY number DESC LIMIT 1",
            [],
            |r| Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)? + 1)),
        )
        .optional()?
        .unwrap_or((0, 1)))
}

/// Computes the report over orders finished in `(from_v, to_v]` and the open ones, in phases:
/// the shop, the day's orders, their lines and payments, what is still open, the shifts, and
/// the staff (sales taken, hours worked).
pub(crate) fn compute(conn: &Connection, from_v: i64, to_v: i64) -> Result<Report> {
    let mut r = Report {
        from_v,
        to_v,
        currency_digits: 2,
        ..Report::default()
    };
    shop_of(conn, &mut r)?;
    let day = day_orders(conn, &mut r, from_v, to_v)?;
    let staff = sales_breakdown(conn, &mut r, &day.sales_ids)?;
    open_orders(conn, &mut r)?;
    shift_rows(conn, &mut r, &day.shift_ids)?;
    staff_rows(conn, &mut r, staff, from_v, to_v)?;
    Ok(r)
}

fn shop_of(conn: &Connection, r: &mut Report) -> Result<()> {
    if let Some((name, currency, digits, zone)) = conn
        .query_row(
            "SELECT name, currency, currency_digits, time_zone FROM shop_settings ORDER BY id LIMIT 1",
            [],
            |row| {
                Ok((
                    row.get(0)?,
                    row.get(1)?,
                    row.get::<_, Option<i64>>(2)?,
                    row.get(3)?,
                ))
            },
        )
        .optional()?
    {
        r.shop = name;
        r.currency = currency;
        r.currency_digits = digits.unwrap_or(2);
        r.time_zone = zone;
    }
    Ok(())
}

/// The day's orders, by what they are: sales (their ids), voids, and their shifts.
struct DayOrders {
    shift_ids: std::collections::BTreeSet<String>,
    sales_ids: Vec<String>,
}

/// The day's orders: finished in the window. Sales are the paid and closed ones.
fn day_orders(conn: &Connection, r: &mut Report, from_v: i64, to_v: i64) -> Result<DayOrders> {
    let mut orders = conn.prepare(
        "SELECT id, status, guests, subtotal, discount_total, service_total, tax_total, total,
                paid_total, shift_id
         FROM order_header WHERE finished_v > ?1 AND finished_v <= ?2",
    )?;
    let mut day = DayOrders {
        shift_ids: std::collections::BTreeSet::new(),
        sales_ids: Vec::new(),
    };
    let rows = orders.query_map([from_v, to_v], |row| {
        Ok((
            row.get::<_, String>(0)?,
            row.get::<_, Option<String>>(1)?.unwrap_or_default(),
            [2, 3, 4, 5, 6, 7, 8].map(|i| row.get::<_, Option<i64>>(i).map(|v| v.unwrap_or(0))),
            row.get::<_, Option<String>>(9)?,
        ))
    })?;
    for row in rows {
        let (id, status, nums, shift) = row?;
        let [guests, subtotal, discounts, service, tax, total, paid] = nums.map(|v| v.unwrap_or(0));
        if let Some(s) = shift {
            day.shift_ids.insert(s);
        }
        if status == "void" {
            r.void_orders += 1;
            add(&mut r.void_orders_amount, subtotal, "the voided amount")?;
            continue;
        }
        r.orders += 1;
        add(&mut r.guests, guests, "guests")?;
        add(&mut r.gross_sales, subtotal, "gross sales")?;
        add(&mut r.discounts, discounts, "discounts")?;
        add(&mut r.service, service, "service")?;
        add(&mut r.tax, tax, "tax")?;
        add(&mut r.total, total, "total sales")?;
        add(&mut r.paid, paid, "payments")?;
        day.sales_ids.push(id);
    }
    r.net_sales = r
        .gross_sales
        .checked_sub(r.discounts)
        .ok_or_else(|| overflow("net sales"))?
        .max(0);
    Ok(day)
}

/// By item, category and payment method over the sales orders' lines and payments, and the
/// payments each member of staff took (returned, for the staff phase).
fn sales_breakdown(
    conn: &Connection,
    r: &mut Report,
    sales_ids: &[String],
) -> Result<BTreeMap<String, StaffRow>> {
    let mut by_item: BTreeMap<String, SalesRow> = BTreeMap::new();
    let mut by_cat: BTreeMap<String, SalesRow> = BTreeMap::new();
    let mut by_method: BTreeMap<String, MethodRow> = BTreeMap::new();
    let mut by_staff: BTreeMap<String, StaffRow> = BTreeMap::new();
    let mut lines = conn.prepare_cached(
        "SELECT item_code, name_en, name_ar, category, qty, unit_price, modifier_price, line_total,
                status
         FROM order_line WHERE order_id = ?1",
    )?;
    let mut payments = conn
        .prepare_cached("SELECT method, amount, taken_by FROM order_payment WHERE order_id = ?1")?;
    for id in sales_ids {
        let rows = lines.query_map([id], |row| {
            Ok((
                row.get::<_, Option<String>>(0)?,
                row.get::<_, Option<String>>(1)?.unwrap_or_default(),
                row.get::<_, Option<String>>(2)?,
                row.get::<_, Option<String>>(3)?,
                [4, 5, 6, 7].map(|i| row.get::<_, Option<i64>>(i).map(|v| v.unwrap_or(0))),
                row.get::<_, Option<String>>(8)?,
            ))
        })?;
        for row in rows {
            let (code, name_en, name_ar, category, nums, status) = row?;
            let [qty, unit, modifiers, line_total] = nums.map(|v| v.unwrap_or(0));
            if status.as_deref() == Some("void") {
                let value = unit
                    .checked_add(modifiers)
                    .and_then(|u| u.checked_mul(qty))
                    .ok_or_else(|| overflow("a voided line"))?;
                r.void_lines += 1;
                add(&mut r.void_lines_amount, value, "the voided amount")?;
                continue;
            }
            add(&mut r.items, qty, "items")?;
            let key = code.unwrap_or_else(|| name_en.clone());
            let item = by_item.entry(key.clone()).or_insert_with(|| SalesRow {
                key,
                name_en: name_en.clone(),
                name_ar: name_ar.clone(),
                ..SalesRow::default()
            });
            add(&mut item.qty, qty, "an item's quantity")?;
            add(&mut item.amount, line_total, "an item's sales")?;
            let cat = category.unwrap_or_else(|| "-".into());
            let c = by_cat.entry(cat.clone()).or_insert_with(|| SalesRow {
                key: cat.clone(),
                name_en: cat,
                ..SalesRow::default()
            });
            add(&mut c.qty, qty, "a category's quantity")?;
            add(&mut c.amount, line_total, "a category's sales")?;
        }
        let rows = payments.query_map([id], |row| {
            Ok((
                row.get::<_, Option<String>>(0)?.unwrap_or_default(),
                row.get::<_, Option<i64>>(1)?.unwrap_or(0),
                row.get::<_, Option<String>>(2)?,
            ))
        })?;
        for row in rows {
            let (method, amount, taken_by) = row?;
            let m = by_method
                .entry(method.clone())
                .or_insert_with(|| MethodRow {
                    method,
                    ..MethodRow::default()
                });
            m.count += 1;
            add(&mut m.amount, amount, "a payment method's total")?;
            if let Some(staff) = taken_by {
                let s = by_staff.entry(staff.clone()).or_insert_with(|| StaffRow {
                    staff_id: staff,
                    ..StaffRow::default()
                });
                s.payments += 1;
                add(&mut s.amount, amount, "a member of staff's takings")?;
            }
        }
    }
    // Arabic category names from the menu, where the category still exists.
    let mut cat_ar = conn.prepare_cached("SELECT name_ar FROM menu_category WHERE name_en = ?1")?;
    for c in by_cat.values_mut() {
        c.name_ar = cat_ar
            .query_row([&c.name_en], |row| row.get(0))
            .optional()?
            .flatten();
    }
    r.by_item = by_item.into_values().collect();
    r.by_item
        .sort_by(|a, b| b.amount.cmp(&a.amount).then(a.key.cmp(&b.key)));
    r.by_category = by_cat.into_values().collect();
    r.by_category
        .sort_by(|a, b| b.amount.cmp(&a.amount).then(a.key.cmp(&b.key)));
    r.by_method = by_method.into_values().collect();
    Ok(by_staff)
}

/// What is still open: not in the figures, but the manager must see it.
fn open_orders(conn: &Connection, r: &mut Report) -> Result<()> {
    let (n, amount): (i64, Option<i64>) = conn.query_row(
        "SELECT COUNT(*), SUM(total) FROM order_header WHERE status IN ('open', 'sent')",
        [],
        |row| Ok((row.get(0)?, row.get(1)?)),
    )?;
    r.open_orders = n;
    r.open_orders_amount = amount.unwrap_or(0);
    Ok(())
}

/// Cash per shift: the day's shifts and any still open, each found by its key (the open
/// ones through the light index), never by reading every shift the shop ever had.
fn shift_rows(
    conn: &Connection,
    r: &mut Report,
    shift_ids: &std::collections::BTreeSet<String>,
) -> Result<()> {
    let day_shifts = serde_json::to_string(shift_ids).unwrap_or_else(|_| "[]".into());
    let mut shifts = conn.prepare_cached(
        "SELECT id, cashier, node_id, status, opened_at, closed_at, opening_float, cash_sales,
                card_sales, expected_cash, counted_cash
         FROM pos_shift
         WHERE id IN (SELECT id FROM pos_shift WHERE status IN ('open')
                      UNION SELECT value FROM json_each(?1))
         ORDER BY opened_at, id",
    )?;
    let rows = shifts.query_map([&day_shifts], |row| {
        Ok(ShiftRow {
            id: row.get(0)?,
            cashier: row.get::<_, Option<String>>(1)?.unwrap_or_default(),
            node_id: row.get::<_, Option<String>>(2)?.unwrap_or_default(),
            status: row.get::<_, Option<String>>(3)?.unwrap_or_default(),
            opened_at: row.get::<_, Option<String>>(4)?.unwrap_or_default(),
            closed_at: row.get(5)?,
            opening_float: row.get::<_, Option<i64>>(6)?.unwrap_or(0),
            cash_sales: row.get::<_, Option<i64>>(7)?.unwrap_or(0),
            card_sales: row.get::<_, Option<i64>>(8)?.unwrap_or(0),
            expected_cash: row.get::<_, Option<i64>>(9)?.unwrap_or(0),
            counted_cash: row.get(10)?,
            difference: None,
        })
    })?;
    for row in rows {
        let mut s = row?;
        if s.status != "open" && !shift_ids.contains(&s.id) {
            continue;
        }
        s.difference = match s.counted_cash {
            Some(c) => Some(
                c.checked_sub(s.expected_cash)
                    .ok_or_else(|| overflow("a cash difference"))?,
            ),
            None => None,
        };
        r.shifts.push(s);
    }
    Ok(())
}

/// Per member of staff: the payments they took (from the sales phase), the time they worked
/// and took as breaks in entries closed in the window (through the `finished_v` index), and
/// whether they are still clocked in (through the light index); names as the shop has them.
fn staff_rows(
    conn: &Connection,
    r: &mut Report,
    mut by_staff: BTreeMap<String, StaffRow>,
    from_v: i64,
    to_v: i64,
) -> Result<()> {
    let mut times = conn.prepare_cached(
        "SELECT staff_id, kind,
                SUM(MAX(0, CAST(ROUND((julianday(ended_at) - julianday(started_at)) * 86400) AS INTEGER)))
         FROM time_clock WHERE finished_v > ?1 AND finished_v <= ?2 AND ended_at IS NOT NULL
         GROUP BY staff_id, kind",
    )?;
    let rows = times.query_map([from_v, to_v], |row| {
        Ok((
            row.get::<_, String>(0)?,
            row.get::<_, Option<String>>(1)?.unwrap_or_default(),
            row.get::<_, Option<i64>>(2)?.unwrap_or(0),
        ))
    })?;
    for row in rows {
        let (staff, kind, secs) = row?;
        let s = by_staff.entry(staff.clone()).or_insert_with(|| StaffRow {
            staff_id: staff,
            ..StaffRow::default()
        });
        if kind == "break" {
            add(&mut s.break_s, secs, "break time")?;
        } else {
            add(&mut s.clocked_s, secs, "time worked")?;
        }
    }
    let mut open = conn.prepare_cached(
        "SELECT DISTINCT staff_id FROM time_clock WHERE status = 'open' AND kind = 'work'",
    )?;
    for staff in open.query_map([], |row| row.get::<_, String>(0))? {
        let staff = staff?;
        by_staff
            .entry(staff.clone())
            .or_insert_with(|| StaffRow {
                staff_id: staff,
                ..StaffRow::default()
            })
            .clocked_in = true;
    }
    let mut names = conn.prepare_cached("SELECT name, name_ar FROM staff WHERE id = ?1")?;
    for s in by_staff.values_mut() {
        s.worked_s = s.clocked_s.saturating_sub(s.break_s).max(0);
        if let Some((name, name_ar)) = names
            .query_row([&s.staff_id], |row| Ok((row.get(0)?, row.get(1)?)))
            .optional()?
        {
            s.name = name;
            s.name_ar = name_ar;
        }
    }
    r.by_staff = by_staff.into_values().collect();
    r.by_staff
        .sort_by(|a, b| b.amount.cmp(&a.amount).then(a.name.cmp(&b.name)));
    Ok(())
}

/// Deterministic id of Z report `number`: two managers taking "the next Z" at once write the
/// same id, and the second is refused instead of closing the day twice.
fn z_id(number: i64) -> String {
    format!("z-{number:06}")
}

impl Report {
    /// Stamps the moment it is taken, and the business day that moment belongs to (the
    /// shop's day starts at its `day_starts_hour`, local time).
    fn taken_now(&mut self, conn: &Connection) -> Result<()> {
        self.taken_at = now_rfc3339();
        let start: Option<i64> = conn
            .query_row(
                "SELECT day_starts_hour FROM shop_settings ORDER BY id LIMIT 1",
                [],
                |row| row.get(0),
            )
            .optional()?
            .flatten();
        let zone = capsule_protocol::local_time::zone_or_utc(self.time_zone.as_deref());
        self.business_date =
            capsule_protocol::local_time::business_date(&self.taken_at, &zone, start.unwrap_or(4));
        Ok(())
    }
}

impl Store {
    /// The X report: what is finished since the last Z, and what is still open. Any node can
    /// take one from its own data.
    pub fn x_report(&self) -> Result<Report> {
        self.with_reader(|c| {
            let tx = c.transaction()?;
            let (from_v, _) = last_z(&tx)?;
            let mut r = compute(&tx, from_v, i64::MAX)?;
            r.kind = "X".into();
            r.to_v = meta_i64(&tx, meta::VERSION)?;
            r.taken_now(&tx)?;
            Ok(r)
        })
    }

    /// Plans the next Z report from this node's data: the report and the mutation that records
    /// it. Only the hub's data is complete up to its version, so only the hub takes a Z.
    pub fn plan_z_report(&self, taken_by: Option<&str>) -> Result<(Report, Mutation)> {
        self.with_reader(|c| {
            let tx = c.transaction()?;
            let (from_v, number) = last_z(&tx)?;
            let to_v = meta_i64(&tx, meta::VERSION)?;
            let mut r = compute(&tx, from_v, to_v)?;
            r.kind = "Z".into();
            r.number = Some(number);
            r.taken_now(&tx)?;
            r.taken_by = taken_by.map(str::to_string);
            let body = serde_json::to_string(&r).map_err(|e| StoreError::Invalid(e.to_string()))?;
            let row = json!({"id": z_id(number), "number": number, "taken_at": r.taken_at,
                             "taken_by": taken_by, "from_v": from_v, "to_v": to_v,
                             "orders": r.orders, "total": r.total, "body": body});
            let Value::Object(row) = row else {
                unreachable!("json! of an object")
            };
            let m = Mutation {
                mid: uuid::Uuid::now_v7().to_string(),
                table: "z_report".into(),
                action: Action::Insert,
                row,
                base: None,
                by: None,
            };
            Ok((r, m))
        })
    }

    /// The number the next Z report will get.
    pub fn next_z_number(&self) -> Result<i64> {
        self.with_reader(|c| Ok(last_z(c)?.1))
    }

    /// A Z report as it was taken.
    pub fn z_report(&self, number: i64) -> Result<Report> {
        self.with_reader(|c| {
            let body: Option<String> = c
                .query_row(
                    "SELECT body FROM z_report WHERE number = ?1",
                    [number],
                    |r| r.get(0),
                )
                .optional()?;
            let body = body
                .ok_or_else(|| StoreError::NotFound(format!("there is no Z report #{number}")))?;
            serde_json::from_str(&body)
                .map_err(|e| StoreError::Corrupt(format!("Z report #{number}: {e}")))
        })
    }

    /// Z reports taken, newest first: number, when, by whom, orders and total; `limit` of
    /// them, those numbered below `before` when given (the next page).
    pub fn z_reports(&self, before: Option<i64>, limit: usize) -> Result<Vec<Value>> {
        self.with_reader(|c| {
            let mut s = c.prepare_cached(
                "SELECT number, taken_at, taken_by, orders, total FROM z_report
                 WHERE number < ?1 ORDER BY number DESC LIMIT ?2",
            )?;
            let rows = s.query_map(
                rusqlite::params![before.unwrap_or(i64::MAX), limit as i64],
                |r| {
                    Ok(
                        json!({"number": r.get::<_, i64>(0)?, "taken_at": r.get::<_, String>(1)?,
                          "taken_by": r.get::<_, Option<String>>(2)?, "orders": r.get::<_, i64>(3)?,
                          "total": r.get::<_, i64>(4)?}),
                    )
                },
            )?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
    }
}

impl Report {
    /// The report as CSV: `section,key,name_en,name_ar,qty,amount`, amounts as decimals in
    /// the currency's digits, so a spreadsheet adds them up exactly.
    pub fn to_csv(&self) -> String {
        let d = u32::try_from(self.currency_digits.clamp(0, 3)).unwrap_or(2);
        let money = |v: i64| capsule_protocol::minor_to_decimal(v, d);
        let q = |s: &str| -> String {
            // Quote every text field; a leading = + - @ would be a formula in a spreadsheet.
            let s = if s.starts_with(['=', '+', '-', '@', '\t', '\r']) {
                format!("'{s}")
            } else {
                s.to_string()
            };
            format!("\"{}\"", s.replace('"', "\"\""))
        };
        let mut out = String::from("section,key,name_en,name_ar,qty,amount\n");
        let mut line =
            |section: &str, key: &str, en: &str, ar: &str, qty: String, amount: String| {
                out.push_str(&format!(
                    "{},{},{},{},{qty},{amount}\n",
                    q(section),
                    q(key),
                    q(en),
                    q(ar)
                ));
            };
        let title = match self.number {
            Some(n) => format!("{} #{n}", self.kind),
            None => self.kind.clone(),
        };
        line(
            "report",
            &title,
            self.shop.as_deref().unwrap_or(""),
            "",
            String::new(),
            String::new(),
        );
        // The shop's local time with its offset: what staff saw, and exact.
        let zone = capsule_protocol::local_time::zone_or_utc(self.time_zone.as_deref());
        line(
            "report",
            "taken_at",
            &capsule_protocol::local_time::with_offset(&self.taken_at, &zone),
            "",
            String::new(),
            String::new(),
        );
        line(
            "report",
            "business_date",
            self.business_date.as_deref().unwrap_or(""),
            "",
            String::new(),
            String::new(),
        );
        line(
            "report",
            "currency",
            self.currency.as_deref().unwrap_or(""),
            "",
            String::new(),
            String::new(),
        );
        for (k, qty, v) in [
            ("orders", Some(self.orders), None),
            ("guests", Some(self.guests), None),
            ("items", Some(self.items), None),
            ("gross_sales", None, Some(self.gross_sales)),
            ("discounts", None, Some(self.discounts)),
            ("net_sales", None, Some(self.net_sales)),
            ("service", None, Some(self.service)),
            ("tax", None, Some(self.tax)),
            ("total", None, Some(self.total)),
            ("paid", None, Some(self.paid)),
            (
                "void_orders",
                Some(self.void_orders),
                Some(self.void_orders_amount),
            ),
            (
                "void_lines",
                Some(self.void_lines),
                Some(self.void_lines_amount),
            ),
            (
                "open_orders",
                Some(self.open_orders),
                Some(self.open_orders_amount),
            ),
        ] {
            line(
                "totals",
                k,
                "",
                "",
                qty.map(|q| q.to_string()).unwrap_or_default(),
                v.map(money).unwrap_or_default(),
            );
        }
        for m in &self.by_method {
            line(
                "payment",
                &m.method,
                "",
                "",
                m.count.to_string(),
                money(m.amount),
            );
        }
        for (section, rows) in [("category", &self.by_category), ("item", &self.by_item)] {
            for r in rows {
                line(
                    section,
                    &r.key,
                    &r.name_en,
                    r.name_ar.as_deref().unwrap_or(""),
                    r.qty.to_string(),
                    money(r.amount),
                );
            }
        }
        for s in &self.shifts {
            let who = format!("{} ({})", s.cashier, s.status);
            line(
                "shift_expected_cash",
                &s.id,
                &who,
                "",
                String::new(),
                money(s.expected_cash),
            );
            if let Some(c) = s.counted_cash {
                line(
                    "shift_counted_cash",
                    &s.id,
                    &who,
                    "",
                    String::new(),
                    money(c),
                );
            }
            if let Some(d) = s.difference {
                line("shift_difference", &s.id, &who, "", String::new(), money(d));
            }
        }
        for s in &self.by_staff {
            let ar = s.name_ar.as_deref().unwrap_or("");
            line(
                "staff_takings",
                &s.staff_id,
                &s.name,
                ar,
                s.payments.to_string(),
                money(s.amount),
            );
            // Hours worked (breaks taken out), to the minute, as a decimal a payroll sheet sums.
            let minutes = s.worked_s / 60;
            line(
                "staff_hours",
                &s.staff_id,
                &s.name,
                ar,
                format!("{}.{:02}", minutes / 60, (minutes % 60) * 100 / 60),
                String::new(),
            );
        }
        out
    }
}
