//! The hub's own version of each entity a node has changed locally (its "shadow"), kept
//! beside the rows that show the node's local writes on top of it.
//!
//! A follower's rows mix two things: what the hub said, and the node's own writes not yet back
//! from the hub (re-applied after every merge, so the cashier sees them). When that node claims
//! the hub, its queued writes must be judged against what the hub said, not against rows that
//! already hold them: a stale "sent" applied locally over an order the hub had paid would
//! otherwise look like no change at all and be published as the truth of the new term. So the
//! first local write to an entity keeps the rows it found (the hub's) here, every merge of that
//! entity refreshes them, and a claim puts them back before applying the queued writes as hub.
//! An entity whose local writes have all come back loses its shadow.

use std::collections::BTreeSet;

use capsule_protocol::PartKind;
use rusqlite::{Connection, params};
use serde_json::{Map, Value};

use crate::sql::{q, select_by_id, select_rows, upsert_row};
use crate::{Result, Store, StoreError};

pub(crate) const DDL: &str = "
-- Per entity changed locally: its rows as the hub last said (JSON: table -> rows; {} when
-- the hub has no such entity).
CREATE TABLE IF NOT EXISTS _shadow (
    entity TEXT NOT NULL,
    id TEXT NOT NULL,
    rows TEXT NOT NULL,
    PRIMARY KEY (entity, id)
) WITHOUT ROWID;
-- An entity whose last outbox entry goes (seen back, dropped, adopted) loses its shadow: on
-- every path that removes an entry, at the cost of one indexed look per entry.
CREATE TRIGGER IF NOT EXISTS _outbox_settles_shadow AFTER DELETE ON _outbox
WHEN old.entity IS NOT NULL BEGIN
    DELETE FROM _shadow WHERE entity = old.entity AND id = old.entity_id
        AND NOT EXISTS (SELECT 1 FROM _outbox o
                        WHERE o.entity = old.entity AND o.entity_id = old.entity_id);
END;
";

/// The entity's rows as they are now: its own row and its child rows, by table.
fn capture(conn: &Connection, store: &Store, entity: &str, id: &str) -> Result<String> {
    let e = &store.schema.entities[entity];
    let mut out = Map::new();
    if let Some(row) = select_by_id(conn, &store.schema.tables[&e.table], id)? {
        out.insert(e.table.clone(), Value::Array(vec![Value::Object(row)]));
        for p in &e.parts {
            if let PartKind::Child {
                table,
                parent_field,
            } = &p.kind
            {
                let rows = select_rows(
                    conn,
                    &store.schema.tables[table],
                    &format!("{} = ?1", q(parent_field)),
                    &[&id],
                )?;
                out.insert(
                    table.clone(),
                    Value::Array(rows.into_iter().map(Value::Object).collect()),
                );
            }
        }
    }
    Ok(Value::Object(out).to_string())
}

/// Before a local write to `entity` `id`: keeps the rows the hub gave, unless kept already.
pub(crate) fn keep(conn: &Connection, store: &Store, entity: &str, id: &str) -> Result<()> {
    let kept: bool = conn
        .prepare_cached("SELECT EXISTS(SELECT 1 FROM _shadow WHERE entity = ?1 AND id = ?2)")?
        .query_row(params![entity, id], |r| r.get(0))?;
    if !kept {
        let rows = capture(conn, store, entity, id)?;
        conn.prepare_cached("INSERT INTO _shadow(entity, id, rows) VALUES (?1, ?2, ?3)")?
            .execute(params![entity, id, rows])?;
    }
    Ok(())
}

/// After a merge wrote the hub's rows for `entities` (and before local writes are re-applied
/// on top): their shadows, where they have one, become those rows.
pub(crate) fn refresh(
    conn: &Connection,
    store: &Store,
    entities: &BTreeSet<(String, String)>,
) -> Result<()> {
    for (entity, id) in entities {
        let kept: bool = conn
            .prepare_cached("SELECT EXISTS(SELECT 1 FROM _shadow WHERE entity = ?1 AND id = ?2)")?
            .query_row(params![entity, id], |r| r.get(0))?;
        if kept {
            let rows = capture(conn, store, entity, id)?;
            conn.prepare_cached("UPDATE _shadow SET rows = ?3 WHERE entity = ?1 AND id = ?2")?
                .execute(params![entity, id, rows])?;
        }
    }
    Ok(())
}

/// Forgets the shadows of entities no outbox entry touches any more (once, at open; after
/// that the `_outbox_settles_shadow` trigger does it entry by entry).
pub(crate) fn forget_settled(conn: &Connection) -> Result<()> {
    let settled: bool = conn.query_row(
        "SELECT EXISTS(SELECT 1 FROM _shadow WHERE NOT EXISTS
           (SELECT 1 FROM _outbox o WHERE o.entity = _shadow.entity AND o.entity_id = _shadow.id))",
        [],
        |r| r.get(0),
    )?;
    if !settled {
        return Ok(());
    }
    conn.prepare_cached(
        "DELETE FROM _shadow WHERE NOT EXISTS
           (SELECT 1 FROM _outbox o WHERE o.entity = _shadow.entity AND o.entity_id = _shadow.id)",
    )?
    .execute([])?;
    Ok(())
}

/// Puts one entity's rows back as a shadow holds them.
fn restore(conn: &Connection, store: &Store, entity: &str, id: &str, text: &str) -> Result<()> {
    let e = &store.schema.entities[entity];
    let rows: Map<String, Value> = serde_json::from_str(text)
        .map_err(|err| StoreError::Corrupt(format!("shadow of {entity} {id}: {err}")))?;
    crate::merge::delete_entity(conn, store, &e.name, id)?;
    // Parent first, then children.
    let tables =
        std::iter::once(e.table.clone()).chain(e.parts.iter().filter_map(|p| match &p.kind {
            PartKind::Child { table, .. } => Some(table.clone()),
            PartKind::Columns(_) => None,
        }));
    for table in tables {
        let t = &store.schema.tables[&table];
        for row in rows
            .get(&table)
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if let Some(row) = row.as_object() {
                upsert_row(conn, t, row)?;
            }
        }
    }
    Ok(())
}

/// Puts every shadowed entity back as the hub last said, and forgets the shadows (a node
/// about to apply its queued writes as hub).
pub(crate) fn restore_all(conn: &Connection, store: &Store) -> Result<usize> {
    let kept: Vec<(String, String, String)> = conn
        .prepare("SELECT entity, id, rows FROM _shadow")?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
        .collect::<std::result::Result<_, _>>()?;
    for (entity, id, text) in &kept {
        if store.schema.entity(entity).is_some() {
            restore(conn, store, entity, id, text)?;
        }
    }
    conn.execute("DELETE FROM _shadow", [])?;
    Ok(kept.len())
}
