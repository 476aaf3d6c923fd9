//! Domain rules where last-writer-wins is wrong, applied by the hub to each incoming write.
//!
//! Writes from different tills are ordered by the hub's version (arrival). That is right for
//! most columns, but a till that was offline can deliver an edit made before someone else's
//! newer change. An edit is **stale** when it carries a `base` (the entity version its writer
//! saw) older than the current version of the part it changes, and that part was last written
//! by another node. A node's own queued writes are never stale to each other: its outbox
//! delivers them in order. Rules for stale edits:
//!
//! - a kitchen job's or round's status never moves backwards (queued < cooking < ready <
//!   assembled < served): the stale status change is dropped, the rest of the write applies;
//! - a paid, closed or void order is never reopened: the stale status change is dropped;
//! - quantities are set, not incremented: a stale `qty` is a value like any other (the later
//!   arrival wins), so two tills never add up to a doubled quantity.
//!
//! A deliberate move back (the kitchen's "recall", a manager reopening an order) comes with a
//! base at or past the current version, or from the node that made the current state (but a
//! finished order is reopened only with a current base). A write replayed into another
//! lineage's hub carries base 0, having seen nothing of that hub's own writes
//! (`Store::reconcile_aside`), so a replay never reopens a paid order or moves a ticket back.

use capsule_protocol::{Mutation, Row, Schema, TableRole};
use rusqlite::{Connection, OptionalExtension, params};

use crate::Result;
use crate::sql::{int, text};

/// Status orders that never go back by a stale edit, per table.
const FORWARD_ONLY: &[(&str, &[&str])] = &[
    ("job_order_header", &["queued", "cooking", "ready"]),
    (
        "job_order_batch",
        &["queued", "cooking", "ready", "assembled", "served"],
    ),
];

/// Order statuses a stale edit cannot leave.
const ORDER_FINAL: &[&str] = &["paid", "closed", "void"];

pub(crate) const DDL: &str = "
-- The hub: which node last wrote each part of each entity, for the stale-edit rules.
CREATE TABLE IF NOT EXISTS _part_source (
    entity TEXT NOT NULL,
    id TEXT NOT NULL,
    part TEXT NOT NULL,
    source TEXT NOT NULL,
    PRIMARY KEY (entity, id, part)
) WITHOUT ROWID;
";

/// Records who wrote the given parts of an entity at this version (the pipeline notes the
/// status part, the only one the rules ask about).
pub(crate) fn note_writer(
    conn: &Connection,
    entity: &str,
    id: &str,
    parts: &[String],
    source: &str,
) -> Result<()> {
    let mut stmt = conn.prepare_cached(
        "INSERT INTO _part_source(entity, id, part, source) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT(entity, id, part) DO UPDATE SET source = excluded.source",
    )?;
    for p in parts {
        stmt.execute(params![entity, id, p, source])?;
    }
    Ok(())
}

/// The columns of `m` the rules keep, given the row as stored now. Returns `None` when the
/// write is kept whole.
pub(crate) fn settle(
    conn: &Connection,
    schema: &Schema,
    m: &Mutation,
    old: &Row,
    source: &str,
) -> Result<Option<Row>> {
    let Some(base) = m.base else {
        return Ok(None);
    };
    let t = &schema.tables[&m.table];
    let TableRole::Entity { entity } = &t.role else {
        return Ok(None);
    };
    let (Some(new_status), Some(cur_status)) = (text(&m.row, "status"), text(old, "status")) else {
        return Ok(None);
    };
    if new_status == cur_status {
        return Ok(None);
    }
    let e = &schema.entities[entity];
    let Some(part) = e.part_of_column("status") else {
        return Ok(None);
    };
    let part_v = int(old, &part.version_column());
    if base >= part_v {
        return Ok(None);
    }
    let id = text(old, "id").unwrap_or_default();
    let writer: Option<String> = conn
        .prepare_cached(
            "SELECT source FROM _part_source WHERE entity = ?1 AND id = ?2 AND part = ?3",
        )?
        .query_row(params![entity, id, part.name], |r| r.get(0))
        .optional()?;
    let reopens = t.name == "order_header"
        && ORDER_FINAL.contains(&cur_status)
        && !ORDER_FINAL.contains(&new_status);
    // A node's own queued chain is never stale to itself; except that reopening a finished
    // order takes having seen it finished at the hub (a current base): a replay, or a write
    // that crossed a hub change, never reopens one.
    if !reopens && writer.as_deref() == Some(source) {
        return Ok(None);
    }
    let backwards = if let Some((_, order)) = FORWARD_ONLY.iter().find(|(tb, _)| *tb == t.name) {
        let rank = |s: &str| order.iter().position(|x| *x == s);
        matches!((rank(new_status), rank(cur_status)), (Some(n), Some(c)) if n < c)
    } else {
        reopens
    };
    if !backwards {
        return Ok(None);
    }
    tracing::info!(
        table = %t.name, id, from = cur_status, to = new_status, base, current = part_v,
        "stale status change dropped"
    );
    // Drop the status part's columns from the write; the rest of it applies.
    let mut kept = m.row.clone();
    if let capsule_protocol::PartKind::Columns(cols) = &part.kind {
        for c in cols {
            kept.remove(c);
        }
    }
    Ok(Some(kept))
}
