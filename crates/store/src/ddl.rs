//! Creates the schema's tables (and adds columns a newer schema declares) plus the system tables.

use std::collections::HashMap;

use capsule_protocol::{Schema, TableRole};
use rusqlite::Connection;

use crate::sql::{q, sql_columns};
use crate::{Result, StoreError};

// Small tables keyed by text are WITHOUT ROWID: one B-tree per table instead of a table and
// its key index, so each write updates half as many (a store made before keeps the old
// layout; the SQL is the same for both).
const SYSTEM_TABLES: &str = "
CREATE TABLE IF NOT EXISTS _meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
-- Every applied mutation id, so a retried request changes nothing.
CREATE TABLE IF NOT EXISTS _mutation (
    mid TEXT PRIMARY KEY,
    seq INTEGER NOT NULL,
    applied_at INTEGER NOT NULL
) WITHOUT ROWID;
-- Capsules in stream order, written in the same transaction as the change they signal.
CREATE TABLE IF NOT EXISTS _capsule_log (
    seq INTEGER PRIMARY KEY,
    entity TEXT NOT NULL,
    id TEXT NOT NULL,
    parts TEXT NOT NULL,
    v INTEGER NOT NULL,
    ts INTEGER NOT NULL,
    source TEXT NOT NULL,
    gone INTEGER NOT NULL DEFAULT 0
);
-- The hub's per-order share of its shift's totals, so one order's write moves its shift's
-- totals by a difference instead of re-adding the whole shift. Rebuilt whenever a node starts
-- deciding as hub (derive::rebuild_shift_totals); a follower leaves it alone.
CREATE TABLE IF NOT EXISTS _shift_share (
    order_id TEXT PRIMARY KEY,
    shift_id TEXT NOT NULL,
    counted INTEGER NOT NULL,
    cash INTEGER NOT NULL,
    card INTEGER NOT NULL
) WITHOUT ROWID;
-- A shift summed afresh finds its orders by order_header's shift_id index (the schema declares
-- it): an index here cost every new order a B-tree insert (a page in its commit) for a read
-- made only when a shift itself is written or a node becomes hub.
DROP INDEX IF EXISTS _shift_share_by_shift;
-- A round's jobs are found among its order's (job_order_header.order_id); this index cost 140
-- bytes an order for nothing else.
DROP INDEX IF EXISTS idx_job_order_header_batch_id;
";

pub fn create_all(conn: &Connection, schema: &Schema) -> Result<()> {
    conn.execute_batch(SYSTEM_TABLES)?;
    crate::outbox::create(conn)?;
    conn.execute_batch(crate::rules::DDL)?;
    conn.execute_batch(crate::handover::DDL)?;
    conn.execute_batch(crate::audit::DDL)?;
    conn.execute_batch(crate::shadow::DDL)?;
    // Shadows a build before the trigger left behind (looked for first: a store opened
    // read-only to be refused must not be written).
    crate::shadow::forget_settled(conn)?;
    conn.execute_batch(crate::print_queue::DDL)?;
    for t in schema.tables_parent_first() {
        let cols = sql_columns(t);
        let defs: Vec<String> = cols
            .iter()
            .map(|(name, ty)| match ty {
                _ if name == "id" => "\"id\" TEXT PRIMARY KEY NOT NULL".to_string(),
                Some(ty) => format!("{} {}", q(name), ty.sql_type()),
                // sql::upsert_row binds these same defaults (0 here, NULL for a typed
                // column) for a column a row leaves out: change both together.
                None => format!("{} INTEGER NOT NULL DEFAULT 0", q(name)),
            })
            .collect();
        conn.execute_batch(&format!(
            "CREATE TABLE IF NOT EXISTS {} ({});",
            q(&t.name),
            defs.join(", ")
        ))?;

        // A schema that grew since this file was made: add the new columns.
        let mut stmt = conn.prepare(&format!("PRAGMA table_info({})", q(&t.name)))?;
        let have: HashMap<String, String> = stmt
            .query_map([], |r| Ok((r.get::<_, String>(1)?, r.get::<_, String>(2)?)))?
            .collect::<Result<_, _>>()?;
        for (i, (name, ty)) in cols.iter().enumerate() {
            // A column whose stored type differs from the schema's holds values the code would
            // misread; refuse rather than guess which one is right.
            let want = match ty {
                _ if name == "id" => "TEXT",
                Some(ty) => ty.sql_type(),
                None => "INTEGER",
            };
            if let Some(found) = have.get(name)
                && !found.eq_ignore_ascii_case(want)
            {
                return Err(StoreError::Corrupt(format!(
                    "column {}.{name} is {found} in the database file but {want} in the schema; \
                     restore a backup or migrate the file, the node will not guess",
                    t.name
                )));
            }
            if !have.contains_key(name) {
                let def = &defs[i];
                conn.execute_batch(&format!("ALTER TABLE {} ADD COLUMN {def};", q(&t.name)))?;
            }
        }

        let mut indexed: Vec<&str> = t
            .columns
            .iter()
            .filter(|c| c.index)
            .map(|c| c.name.as_str())
            .collect();
        if let TableRole::Child { parent_field, .. } = &t.role {
            indexed.push(parent_field);
        }
        for col in indexed {
            conn.execute_batch(&format!(
                "CREATE INDEX IF NOT EXISTS {} ON {} ({});",
                q(&format!("idx_{}_{col}", t.name)),
                q(&t.name),
                q(col)
            ))?;
        }
        for cols in &t.indexes {
            let list: Vec<String> = cols.iter().map(|c| q(c)).collect();
            conn.execute_batch(&format!(
                "CREATE INDEX IF NOT EXISTS {} ON {} ({});",
                q(&format!("idx_{}_{}", t.name, cols.join("_"))),
                q(&t.name),
                list.join(", ")
            ))?;
        }
        // The light snapshot a till opens with reads only open business: a partial index
        // holding just those rows finds them without reading the day's finished ones, and
        // costs a write only when a row enters or leaves open business.
        if let TableRole::Entity { entity } = &t.role
            && let e = &schema.entities[entity]
            && let (Some(light), Some(cond)) = (&e.light, crate::sql::light_condition(e))
        {
            conn.execute_batch(&format!(
                "CREATE INDEX IF NOT EXISTS {} ON {} ({}) WHERE {cond};",
                q(&format!("light_{}", t.name)),
                q(&t.name),
                q(&light.column)
            ))?;
        }
    }
    Ok(())
}
