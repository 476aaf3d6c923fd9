//! Who did what: one audit row per write made by a logged-in member of staff, kept for good.
//!
//! The rows are derived from the journal, where every write this node's data holds is written
//! (applied here as hub, or copied from the hub's journal by a node that may become hub), so
//! they say the same on every such node and follow the shop across hub changes. The journal
//! is pruned after a week; the audit rows are not, and nothing updates or deletes them. Each
//! row names the write's staff member, approver, the node that served the screen and when it
//! was made there (a till's offline write: when the cashier made it, not when it drained).

use capsule_protocol::{Action, Mutation};
use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;

use crate::Result;
use crate::sql::{int, text};

pub(crate) const DDL: &str = "
CREATE TABLE IF NOT EXISTS _audit (
    mid TEXT PRIMARY KEY,
    v INTEGER NOT NULL,
    at TEXT,
    staff TEXT,
    approver TEXT,
    device TEXT,
    tbl TEXT NOT NULL,
    row_id TEXT NOT NULL,
    what TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS _audit_row ON _audit(row_id, v);
CREATE INDEX IF NOT EXISTS _audit_staff ON _audit(staff, v);
CREATE INDEX IF NOT EXISTS _audit_v ON _audit(v);
CREATE INDEX IF NOT EXISTS _audit_what ON _audit(what, v);
CREATE INDEX IF NOT EXISTS _audit_at ON _audit(at);
";

/// One audit row.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AuditEntry {
    pub mid: String,
    /// The hub version that applied it (the order of events).
    pub v: i64,
    /// When it was made, on the node that served the screen (RFC 3339 UTC).
    pub at: Option<String>,
    pub staff: Option<String>,
    pub approver: Option<String>,
    /// The node that served the screen.
    pub device: Option<String>,
    pub table: String,
    pub row_id: String,
    /// What happened, e.g. `order.open`, `line.void`, `payment.take`, `z.take`.
    pub what: String,
    /// The staff member's and approver's names as the shop has them now.
    pub staff_name: Option<String>,
    pub approver_name: Option<String>,
}

/// Records the audit row of a journaled write made by a member of staff (others: none).
pub(crate) fn record(conn: &Connection, m: &Mutation, v: i64) -> Result<()> {
    let Some(by) =
        m.by.as_ref()
            .filter(|b| b.staff.is_some() || b.approver.is_some())
    else {
        return Ok(());
    };
    let row_id = text(&m.row, "id").unwrap_or_default();
    conn.prepare_cached(
        "INSERT OR IGNORE INTO _audit(mid, v, at, staff, approver, device, tbl, row_id, what)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
    )?
    .execute(params![
        m.mid,
        v,
        by.at,
        by.staff,
        by.approver,
        by.device,
        m.table,
        row_id,
        what(m)
    ])?;
    Ok(())
}

/// A short name for what a write did, for the timeline and the audit filter.
pub fn what(m: &Mutation) -> String {
    let has = |c: &str| m.row.contains_key(c);
    let status = text(&m.row, "status");
    let kind = match m.table.as_str() {
        "order_header" => "order",
        "order_line" => "line",
        "order_payment" => "payment",
        "job_order_header" | "job_order_detail" | "job_order_batch" => "kitchen",
        "pos_shift" => "shift",
        "z_report" => "z",
        "staff" | "staff_pin" | "staff_role" => "staff",
        "menu_category" | "menu_item" | "menu_modifier" => "menu",
        "shop_settings" | "printer" => "settings",
        other => other,
    };
    // A line sold at a price other than the menu's, as its node priced it: an override.
    let repriced = kind == "line"
        && m.action != Action::Delete
        && has("unit_price")
        && m.by.as_ref().is_some_and(|b| b.staff.is_some())
        && m.by.as_ref().and_then(|b| b.menu_price)
            != m.row.get("unit_price").and_then(|v| v.as_i64());
    let verb = match (m.action, kind) {
        _ if repriced => "price",
        (Action::Insert, "order") => "open",
        (Action::Insert, "line") => "add",
        (Action::Insert, "payment") => "take",
        (Action::Insert, "kitchen") => "send",
        (Action::Insert, "z") => "take",
        (Action::Insert, "shift") => "open",
        (Action::Insert, "staff") if m.table == "staff" => "add",
        (Action::Delete, "line") => "remove",
        (Action::Delete, _) => "delete",
        (_, "staff") if m.table == "staff_pin" => "pin",
        (_, "shift") if status == Some("closed") => "close",
        (_, "order") if status == Some("open") => "reopen",
        (_, "order" | "line" | "kitchen") if status.is_some() => status.unwrap_or_default(),
        (_, "order") if has("order_discount") => "discount",
        (_, "line") if has("discount") && int(&m.row, "discount") > 0 => "discount",
        (_, "line") if has("qty") => "qty",
        (_, "menu") if has("available") && m.row.len() <= 3 => "sold_out",
        _ => "edit",
    };
    format!("{kind}.{verb}")
}

fn entry(r: &rusqlite::Row<'_>) -> rusqlite::Result<AuditEntry> {
    Ok(AuditEntry {
        mid: r.get(0)?,
        v: r.get(1)?,
        at: r.get(2)?,
        staff: r.get(3)?,
        approver: r.get(4)?,
        device: r.get(5)?,
        table: r.get(6)?,
        row_id: r.get(7)?,
        what: r.get(8)?,
        staff_name: r.get(9)?,
        approver_name: r.get(10)?,
    })
}

const COLUMNS: &str = "a.mid, a.v, a.at, a.staff, a.approver, a.device, a.tbl, a.row_id, a.what, \
    (SELECT name FROM staff WHERE id = a.staff), (SELECT name FROM staff WHERE id = a.approver)";

/// Filter of the audit view; every field optional. Pages go backwards from `before`.
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    pub staff: Option<String>,
    /// A prefix of `what` (`line.void`, or `order.` for every order event).
    pub what: Option<String>,
    /// `at` from this instant (RFC 3339) ...
    pub from: Option<String>,
    /// ... and before this one.
    pub to: Option<String>,
    /// Only rows below this version (the previous page's last `v`).
    pub before: Option<i64>,
    pub limit: usize,
}

/// The SQL and arguments of an audit page: only the conditions given, so the planner picks
/// the index of the one that narrows (a `what` prefix as a range, which an index serves).
pub(crate) fn audit_query(f: &AuditFilter) -> (String, Vec<rusqlite::types::Value>) {
    use rusqlite::types::Value as V;
    let mut conds = vec!["a.v < ?".to_string()];
    let mut args = vec![V::Integer(f.before.unwrap_or(i64::MAX))];
    if let Some(staff) = &f.staff {
        conds.push("a.staff = ?".into());
        args.push(V::Text(staff.clone()));
    }
    match &f.what {
        // A kind (`order.`): every `what` starting with it sorts between it and it followed by
        // U+FFFF (the matches are then sorted by version: a kind is for a day's or a person's
        // page, with those filters). One action (`line.void`): walked in version order.
        Some(kind) if kind.ends_with('.') => {
            conds.push("a.what >= ? AND a.what < ?".into());
            args.push(V::Text(kind.clone()));
            args.push(V::Text(format!("{kind}\u{ffff}")));
        }
        Some(action) => {
            conds.push("a.what = ?".into());
            args.push(V::Text(action.clone()));
        }
        None => {}
    }
    if let Some(from) = &f.from {
        conds.push("a.at >= ?".into());
        args.push(V::Text(from.clone()));
    }
    if let Some(to) = &f.to {
        conds.push("a.at < ?".into());
        args.push(V::Text(to.clone()));
    }
    args.push(V::Integer(f.limit.clamp(1, 5000) as i64));
    (
        format!(
            "SELECT {COLUMNS} FROM _audit a WHERE {} ORDER BY a.v DESC LIMIT ?",
            conds.join(" AND ")
        ),
        args,
    )
}

impl crate::Store {
    /// Whether this follower holds the audit trail (it copies the hub's journal, being a node
    /// that may become hub); a till that does not asks the hub.
    pub fn follower_holds_audit(&self) -> bool {
        self.keeps_journal()
    }

    /// An order's timeline: every audited write to it, its lines, payments and kitchen work,
    /// in the order the hub applied them. Reads through the row index: bounded by the order.
    pub fn order_timeline(&self, order_id: &str) -> Result<Vec<AuditEntry>> {
        self.with_reader(|conn| {
            let exists: Option<i64> = conn
                .query_row(
                    "SELECT 1 FROM order_header WHERE id = ?1",
                    [order_id],
                    |r| r.get(0),
                )
                .optional()?;
            if exists.is_none() {
                return Err(crate::StoreError::NotFound(format!(
                    "order '{order_id}' not found"
                )));
            }
            let mut stmt = conn.prepare_cached(&format!(
                "SELECT {COLUMNS} FROM _audit a WHERE row_id IN (
                    SELECT ?1
                    UNION ALL SELECT id FROM order_line WHERE order_id = ?1
                    UNION ALL SELECT id FROM order_payment WHERE order_id = ?1
                    UNION ALL SELECT id FROM job_order_header WHERE order_id = ?1
                    UNION ALL SELECT id FROM job_order_batch WHERE order_id = ?1
                 ) ORDER BY a.v, a.mid"
            ))?;
            let rows = stmt
                .query_map([order_id], entry)?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(rows)
        })
    }

    /// A page of the audit trail, newest first, filtered. Each filter reaches its rows through
    /// an index (who: staff then version; what: its prefix then version; a day: the time), so
    /// a page costs the same after years of history (`an_audit_page_reads_through_an_index`).
    pub fn audit_page(&self, f: &AuditFilter) -> Result<Vec<AuditEntry>> {
        let (sql, args) = audit_query(f);
        self.with_reader(|conn| {
            let mut stmt = conn.prepare_cached(&sql)?;
            let rows = stmt
                .query_map(rusqlite::params_from_iter(args.iter()), entry)?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(rows)
        })
    }
}
