//! Past orders on demand: find them by number, opening time, table, amount or payment
//! reference, newest first, a page at a time, each condition reaching its rows by an index.

use capsule_protocol::validate::canonical_timestamp;
use rusqlite::types::Value as SqlValue;
use serde::{Deserialize, Serialize};

use crate::{Result, Store, StoreError};

/// Every (table, column) the search reads: checked against the schema when a store opens.
pub(crate) const USED: &[(&str, &[&str])] = &[
    (
        "order_header",
        &[
            "order_no",
            "opened_at",
            "table_label",
            "total",
            "status",
            "shift_id",
            "node_id",
            "paid_total",
            "closed_at",
            "provisional_no",
        ],
    ),
    ("order_payment", &["order_id", "reference"]),
];

/// Most orders one search page holds.
pub const MAX_ORDER_PAGE: usize = 100;

/// What to look for; every given condition must hold.
#[derive(Debug, Clone, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct OrderQuery {
    /// The order number staff call out.
    pub number: Option<i64>,
    /// Opened at or after this UTC instant (RFC 3339).
    pub from: Option<String>,
    /// Opened before this UTC instant (RFC 3339).
    pub to: Option<String>,
    /// The table label, exactly.
    pub table: Option<String>,
    /// The order's total, in minor units.
    pub amount: Option<i64>,
    /// A card payment's terminal reference, exactly.
    pub reference: Option<String>,
    /// The page after this cursor (a previous answer's `next`).
    pub before: Option<String>,
    /// Orders per page, 1..=100 (default 20).
    pub limit: Option<usize>,
}

/// One order found: enough to recognise it in a list; open it by pulling the entity.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct OrderHit {
    pub id: String,
    pub order_no: Option<i64>,
    pub provisional_no: Option<String>,
    pub opened_at: Option<String>,
    pub closed_at: Option<String>,
    pub table_label: Option<String>,
    pub status: Option<String>,
    pub total: i64,
    pub paid_total: i64,
    pub shift_id: Option<String>,
    pub node_id: Option<String>,
}

/// A page of orders, newest opened first; `next` asks for the following page.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct OrderPage {
    pub orders: Vec<OrderHit>,
    pub next: Option<String>,
}

impl OrderQuery {
    /// The SQL conditions and their values; refuses what cannot be a real search.
    fn conditions(&self) -> Result<(Vec<String>, Vec<SqlValue>)> {
        let bad = |m: String| StoreError::Invalid(m);
        let mut conds = Vec::new();
        let mut args = Vec::new();
        let mut arg = |cond: &str, v: SqlValue, args: &mut Vec<SqlValue>| {
            args.push(v);
            conds.push(cond.replace('?', &format!("?{}", args.len())));
        };
        if let Some(n) = self.number {
            if !(1..=1_000_000_000).contains(&n) {
                return Err(bad(format!("'number' is an order number from 1, got {n}")));
            }
            arg("order_no = ?", n.into(), &mut args);
        }
        for (name, value, op) in [("from", &self.from, ">="), ("to", &self.to, "<")] {
            if let Some(t) = value {
                let t = canonical_timestamp(t).map_err(|e| bad(format!("'{name}' {e}")))?;
                arg(&format!("opened_at {op} ?"), t.into(), &mut args);
            }
        }
        if let Some(t) = &self.table {
            if t.is_empty() || t.len() > 40 {
                return Err(bad("'table' is a table label of 1 to 40 bytes".into()));
            }
            arg("table_label = ?", t.clone().into(), &mut args);
        }
        if let Some(a) = self.amount {
            if a < 0 {
                return Err(bad(format!(
                    "'amount' is a total in minor units from 0, got {a}"
                )));
            }
            arg("total = ?", a.into(), &mut args);
        }
        if let Some(r) = &self.reference {
            if r.is_empty() || r.len() > 64 {
                return Err(bad(
                    "'reference' is a payment reference of 1 to 64 bytes".into()
                ));
            }
            arg(
                "id IN (SELECT order_id FROM order_payment WHERE reference = ?)",
                r.clone().into(),
                &mut args,
            );
        }
        if conds.is_empty() && self.before.is_none() {
            // Newest first with nothing else: the opened_at index, read backwards.
            conds.push("opened_at IS NOT NULL".into());
        }
        if let Some(c) = &self.before {
            let (at, id) = c
                .split_once('|')
                .ok_or_else(|| bad("'before' is a previous answer's 'next'".into()))?;
            canonical_timestamp(at)
                .map_err(|_| bad("'before' is a previous answer's 'next'".into()))?;
            args.push(at.to_string().into());
            args.push(id.to_string().into());
            let (a, b) = (args.len() - 1, args.len());
            conds.push(format!(
                "(opened_at < ?{a} OR (opened_at = ?{a} AND id < ?{b}))"
            ));
        }
        Ok((conds, args))
    }
}

/// The search's one SQL (its plan is what the tests assert): a page and one more row, which
/// tells whether a next page exists.
fn search_sql(conds: &[String], limit: usize) -> String {
    format!(
        "SELECT id, order_no, provisional_no, opened_at, closed_at, table_label, status,
                COALESCE(total, 0), COALESCE(paid_total, 0), shift_id, node_id
         FROM order_header WHERE {} ORDER BY opened_at DESC, id DESC LIMIT {}",
        conds.join(" AND "),
        limit + 1
    )
}

impl Store {
    /// Orders matching `query`, newest opened first, a page at a time.
    pub fn find_orders(&self, query: &OrderQuery) -> Result<OrderPage> {
        let limit = query.limit.unwrap_or(20);
        if !(1..=MAX_ORDER_PAGE).contains(&limit) {
            return Err(StoreError::Invalid(format!(
                "'limit' must be 1 to {MAX_ORDER_PAGE}, got {limit}"
            )));
        }
        let (conds, args) = query.conditions()?;
        let sql = search_sql(&conds, limit);
        self.with_reader(|c| {
            let mut stmt = c.prepare(&sql)?;
            let mut orders = stmt
                .query_map(rusqlite::params_from_iter(args), |r| {
                    Ok(OrderHit {
                        id: r.get(0)?,
                        order_no: r.get(1)?,
                        provisional_no: r.get(2)?,
                        opened_at: r.get(3)?,
                        closed_at: r.get(4)?,
                        table_label: r.get(5)?,
                        status: r.get(6)?,
                        total: r.get(7)?,
                        paid_total: r.get(8)?,
                        shift_id: r.get(9)?,
                        node_id: r.get(10)?,
                    })
                })?
                .collect::<std::result::Result<Vec<_>, _>>()?;
            let next = (orders.len() > limit).then(|| {
                orders.truncate(limit);
                let last = &orders[limit - 1];
                format!("{}|{}", last.opened_at.clone().unwrap_or_default(), last.id)
            });
            Ok(OrderPage { orders, next })
        })
    }

    /// SQLite's plan for `query` (tests assert every search reaches its rows by an index).
    #[doc(hidden)]
    pub fn find_orders_plan(&self, query: &OrderQuery) -> Result<String> {
        let (conds, args) = query.conditions()?;
        let sql = format!(
            "EXPLAIN QUERY PLAN {}",
            search_sql(&conds, query.limit.unwrap_or(20))
        );
        self.with_reader(|c| {
            let mut stmt = c.prepare(&sql)?;
            let rows =
                stmt.query_map(rusqlite::params_from_iter(args), |r| r.get::<_, String>(3))?;
            Ok(rows.collect::<std::result::Result<Vec<_>, _>>()?.join("; "))
        })
    }
}
