//! Replica side: merge pulled parts, apply deletes, load snapshots. Every merge is idempotent
//! and version-checked part by part, so a repeated or late payload never overwrites newer data.

use capsule_protocol::{BatchPull, Capsule, PartKind, Row, Snapshot, now_ms, schema::ID_FIELD};
use rusqlite::{Connection, TransactionBehavior};
use serde_json::Value;

use crate::sql::{self, q, select_by_id, sql_columns, upsert_row};
use crate::{Result, Store, StoreError, meta};

/// What a merge did, with one capsule per entity that changed locally (for the UI stream).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MergeOutcome {
    pub changed: Vec<Capsule>,
    /// Items whose every pulled part was already as new or newer here.
    pub stale: usize,
    /// Ids whose child delta named rows this replica does not hold: pull them whole.
    pub incomplete: Vec<String>,
}

/// Source named in the capsules a replica emits to its own UI.
const MERGE_SOURCE: &str = "merge";

impl Store {
    /// Merges a batch pull into the local tables in one transaction. Ids the hub reported
    /// missing are deleted here: the hub never forgets a live row.
    pub fn merge_pulled(&self, pull: &BatchPull) -> Result<MergeOutcome> {
        self.merge_pulled_with(pull, false)
    }

    /// Merges a pull over whatever is here, whatever its versions: after the hub refused a
    /// local write, its entities are re-read so the refused change leaves the screens.
    pub fn merge_pulled_over_local(&self, pull: &BatchPull) -> Result<MergeOutcome> {
        self.merge_pulled_with(pull, true)
    }

    fn merge_pulled_with(&self, pull: &BatchPull, force: bool) -> Result<MergeOutcome> {
        let mut conn = self.writer();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let out = self.merge_in(&tx, pull, force)?;
        tx.commit()?;
        Ok(out)
    }

    /// A batch pull merged inside the caller's transaction: every merge (a followed capsule,
    /// a refused write re-read, a page of history) passes here, so each rule holds on all of
    /// them. An entity deleted here at or after the version an answer carries (its tombstone)
    /// is never brought back by that answer, however late it arrives.
    pub(crate) fn merge_in(
        &self,
        tx: &Connection,
        pull: &BatchPull,
        force: bool,
    ) -> Result<MergeOutcome> {
        let e = self
            .schema
            .entity(&pull.entity)
            .ok_or_else(|| StoreError::Invalid(format!("unknown entity '{}'", pull.entity)))?;
        let t = &self.schema.tables[&e.table];
        let mut out = MergeOutcome::default();
        let journal_upto = if self.keeps_journal() {
            Some(sql::meta_i64(tx, meta::JOURNAL_VERSION)?)
        } else {
            None
        };
        for item in &pull.items {
            if crate::handover::gone_at(tx, &e.name, &item.id)?.is_some_and(|gone| gone >= item.v) {
                out.stale += 1;
                continue;
            }
            let local = select_by_id(tx, t, &item.id)?;
            let mut row = local.clone().unwrap_or_else(|| {
                let mut r = Row::new();
                r.insert(ID_FIELD.into(), Value::String(item.id.clone()));
                r
            });
            let mut merged = Vec::new();
            for name in &pull.parts {
                let part = e
                    .part(name)
                    .ok_or_else(|| StoreError::Invalid(format!("unknown part '{name}'")))?;
                let vcol = part.version_column();
                let incoming = item.pv.get(name).copied().unwrap_or(0);
                let have = local.as_ref().map_or(-1, |r| sql::int(r, &vcol));
                if incoming <= have && !force {
                    continue;
                }
                match &part.kind {
                    PartKind::Columns(cols) => {
                        for c in cols {
                            let v = item.payload.get(c).cloned().ok_or_else(|| {
                                StoreError::Invalid(format!(
                                    "payload of {}.{name} lacks column '{c}'",
                                    e.name
                                ))
                            })?;
                            row.insert(c.clone(), v);
                        }
                    }
                    PartKind::Child {
                        table,
                        parent_field,
                    } => {
                        let rows = item
                            .payload
                            .get(name)
                            .and_then(Value::as_array)
                            .ok_or_else(|| {
                                StoreError::Invalid(format!(
                                    "payload of {}.{name} is not an array of rows",
                                    e.name
                                ))
                            })?;
                        let live = item.live.get(name).map(Vec::as_slice);
                        if !merge_children(tx, self, table, parent_field, &item.id, rows, live)? {
                            // The delta assumed rows this replica lacks: keep the part's old
                            // version and ask for all of it.
                            out.incomplete.push(item.id.clone());
                            continue;
                        }
                    }
                }
                row.insert(vcol, Value::from(incoming));
                merged.push(name.clone());
            }
            if merged.is_empty() {
                out.stale += 1;
                continue;
            }
            let top = e
                .parts
                .iter()
                .map(|p| sql::int(&row, &p.version_column()))
                .max()
                .unwrap_or(0);
            row.insert("_v".into(), Value::from(top));
            upsert_row(tx, t, &row)?;
            if journal_upto.is_some_and(|j| item.v > j) {
                crate::handover::note_unjournaled(tx, &e.name, &item.id, item.v)?;
            }
            out.changed
                .push(local_capsule(&e.name, &item.id, merged, top, false));
        }
        for id in &pull.missing {
            if delete_entity(tx, self, &e.name, id)? {
                out.changed
                    .push(local_capsule(&e.name, id, vec![], 0, true));
            }
        }
        // What the hub said is what a claim would start from; then the till's own writes not
        // yet back from the hub stay on its screens.
        let merged = out
            .changed
            .iter()
            .map(|c| (c.entity.clone(), c.id.clone()))
            .collect();
        crate::shadow::refresh(tx, self, &merged)?;
        let touched = out
            .changed
            .iter()
            .filter(|c| !c.gone)
            .map(|c| (c.entity.clone(), c.id.clone()))
            .collect();
        out.changed
            .extend(crate::outbox::reapply_pending(tx, self, &touched)?);
        Ok(out)
    }

    /// Applies a `gone` capsule: deletes the row if what is here is older than the delete.
    pub fn apply_gone(&self, capsule: &Capsule) -> Result<Option<Capsule>> {
        let e = self
            .schema
            .entity(&capsule.entity)
            .ok_or_else(|| StoreError::Invalid(format!("unknown entity '{}'", capsule.entity)))?;
        let mut conn = self.writer();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let local = select_by_id(&tx, &self.schema.tables[&e.table], &capsule.id)?;
        let deleted = match local {
            Some(row) if sql::int(&row, "_v") < capsule.v => {
                delete_entity(&tx, self, &e.name, &capsule.id)?
            }
            _ => false,
        };
        crate::handover::note_gone(&tx, &e.name, &capsule.id, capsule.v)?;
        if deleted {
            crate::shadow::refresh(
                &tx,
                self,
                &[(e.name.clone(), capsule.id.clone())].into_iter().collect(),
            )?;
        }
        tx.commit()?;
        Ok(deleted.then(|| local_capsule(&e.name, &capsule.id, vec![], capsule.v, true)))
    }

    /// Replaces every synced row with a snapshot's, in one transaction, and records the
    /// stream position the snapshot is consistent at.
    pub fn load_snapshot(&self, snap: &Snapshot) -> Result<()> {
        let mut conn = self.writer();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        self.snapshot_begin(&tx, &snap.node_id, snap.v)?;
        for t in self.schema.tables_parent_first() {
            self.snapshot_table(&tx, &t.name)?;
            for row in snap
                .tables
                .get(&t.name)
                .map(Vec::as_slice)
                .unwrap_or_default()
            {
                self.snapshot_row(&tx, &t.name, row)?;
            }
        }
        self.snapshot_finish(&tx, &snap.node_id, snap.seq, snap.v, snap.scope == "full")?;
        tx.commit()?;
        Ok(())
    }

    /// A snapshot's first phase, before any row: what its hub and version mean for this
    /// node's queued writes.
    pub(crate) fn snapshot_begin(&self, tx: &Connection, node_id: &str, v: i64) -> Result<()> {
        // A snapshot of another hub or term is another history: the versions this node's
        // queued writes say they saw count in the old one, and could read as newer than
        // anything the new hub holds. They saw nothing of it (base 0), so the hub's rules
        // never let them move a status back over its own writes.
        let same_history = sql::meta_text(tx, meta::HUB_NODE_ID)?.as_deref() == Some(node_id)
            && sql::meta_i64(tx, meta::HUB_TERM)? == v.div_euclid(crate::VERSIONS_PER_TERM);
        if !same_history {
            tx.execute(
                "UPDATE _outbox SET mutation = json_set(mutation, '$.base', 0)
                 WHERE state != 'rejected' AND json_extract(mutation, '$.base') IS NOT NULL",
                [],
            )?;
        }
        Ok(())
    }

    /// Empties one synced table before the snapshot's rows of it are written.
    pub(crate) fn snapshot_table(&self, tx: &Connection, table: &str) -> Result<()> {
        let t = self.schema.table(table).ok_or_else(|| {
            StoreError::Invalid(format!("snapshot names unknown table '{table}'"))
        })?;
        tx.execute(&format!("DELETE FROM {}", q(&t.name)), [])?;
        Ok(())
    }

    /// Writes one snapshot row (its table emptied first by [`Store::snapshot_table`]).
    pub(crate) fn snapshot_row(&self, tx: &Connection, table: &str, row: &Row) -> Result<()> {
        let t = self.schema.table(table).ok_or_else(|| {
            StoreError::Invalid(format!("snapshot names unknown table '{table}'"))
        })?;
        let known = sql_columns(t);
        if let Some(k) = row.keys().find(|k| !known.iter().any(|(n, _)| n == *k)) {
            return Err(StoreError::Invalid(format!(
                "snapshot row of {} has unknown column '{k}'",
                t.name
            )));
        }
        upsert_row(tx, t, row)
    }

    /// A snapshot's last phase, after every row: its position, whether it held every row
    /// (`whole`; otherwise the history is copied in pages from the start), the journal set
    /// aside, the node's own queued writes applied again over the new data.
    pub(crate) fn snapshot_finish(
        &self,
        tx: &Connection,
        node_id: &str,
        seq: i64,
        v: i64,
        whole: bool,
    ) -> Result<()> {
        crate::backfill::restart(tx, self, whole)?;
        sql::set_meta(tx, meta::STREAM_SEQ, &seq.to_string())?;
        sql::set_meta(tx, meta::VERSION, &v.to_string())?;
        sql::set_meta(tx, meta::MERGED_VERSION, &v.to_string())?;
        // Deletions before the snapshot left no tombstone here: this copy cannot tell a
        // follower what went away before it.
        sql::set_meta(tx, meta::GONE_SINCE, &v.to_string())?;
        sql::set_meta(tx, meta::HUB_NODE_ID, node_id)?;
        // What the hub says is the snapshot now: no entity's earlier hub copy is put back.
        tx.execute("DELETE FROM _shadow", [])?;
        crate::outbox::prune(tx)?;
        let everything = tx
            .prepare("SELECT DISTINCT entity, entity_id FROM _outbox WHERE entity IS NOT NULL")?
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<std::result::Result<_, _>>()?;
        // Local values now are the snapshot's plus what is re-applied just below.
        tx.execute("DELETE FROM _dirty", [])?;
        // The writes known as applied (and journaled) were those of the data just replaced:
        // from now on they are the snapshot hub's, fetched afresh (a mid known here whose row
        // the new data lacks would turn the write's resend into a "duplicate" that never
        // lands). The journal is set aside, not dropped: once the hub's is copied, what the
        // hub lacks of it is replayed into the hub (`Store::reconcile_aside`), so rows this
        // node held are never lost because another lineage's snapshot replaced them.
        tx.execute("DELETE FROM _mutation", [])?;
        tx.execute(
            "INSERT OR IGNORE INTO _journal_aside(mid, v, mutation) SELECT mid, v, mutation FROM _journal ORDER BY v",
            [],
        )?;
        tx.execute("DELETE FROM _journal", [])?;
        sql::set_meta(tx, meta::JOURNAL_VERSION, "0")?;
        tx.execute("DELETE FROM _unjournaled", [])?;
        crate::outbox::reapply_pending(tx, self, &everything)?;
        Ok(())
    }
}

fn local_capsule(entity: &str, id: &str, parts: Vec<String>, v: i64, gone: bool) -> Capsule {
    Capsule {
        entity: entity.into(),
        id: id.into(),
        parts,
        v,
        ts: now_ms(),
        source: MERGE_SOURCE.into(),
        gone,
    }
}

/// Makes `parent`'s children in `table` what the hub sent: all of them (`live` None), or a
/// delta (`live`: every child id the hub holds; `rows`: those changed since the version the
/// puller held), where children not listed are gone. False when the delta names a child that
/// is neither here nor in it (this replica's copy was not what the hub assumed); the caller
/// then pulls the part whole.
fn merge_children(
    conn: &Connection,
    store: &Store,
    table: &str,
    parent_field: &str,
    parent: &str,
    rows: &[Value],
    live: Option<&[String]>,
) -> Result<bool> {
    let t = &store.schema.tables[table];
    match live {
        None => {
            conn.execute(
                &format!("DELETE FROM {} WHERE {} = ?1", q(table), q(parent_field)),
                [parent],
            )?;
        }
        Some(ids) => {
            let here: Vec<String> = conn
                .prepare_cached(&format!(
                    "SELECT id FROM {} WHERE {} = ?1",
                    q(table),
                    q(parent_field)
                ))?
                .query_map([parent], |r| r.get(0))?
                .collect::<Result<_, _>>()?;
            let keep: std::collections::HashSet<&str> = ids.iter().map(String::as_str).collect();
            let mut delete =
                conn.prepare_cached(&format!("DELETE FROM {} WHERE id = ?1", q(table)))?;
            for id in here.iter().filter(|id| !keep.contains(id.as_str())) {
                delete.execute([id])?;
            }
        }
    }
    for r in rows {
        let row = r
            .as_object()
            .ok_or_else(|| StoreError::Invalid(format!("a {table} row is not an object")))?;
        if row.get(parent_field).and_then(Value::as_str) != Some(parent) {
            return Err(StoreError::Invalid(format!(
                "a {table} row in {parent}'s payload names another parent"
            )));
        }
        upsert_row(conn, t, row)?;
    }
    let Some(ids) = live else {
        return Ok(true);
    };
    let held: i64 = conn
        .prepare_cached(&format!(
            "SELECT COUNT(*) FROM {} WHERE {} = ?1",
            q(table),
            q(parent_field)
        ))?
        .query_row([parent], |r| r.get(0))?;
    Ok(held == ids.len() as i64)
}

pub(crate) fn delete_entity(
    conn: &Connection,
    store: &Store,
    entity: &str,
    id: &str,
) -> Result<bool> {
    let e = &store.schema.entities[entity];
    for p in &e.parts {
        if let PartKind::Child {
            table,
            parent_field,
        } = &p.kind
        {
            conn.execute(
                &format!("DELETE FROM {} WHERE {} = ?1", q(table), q(parent_field)),
                [id],
            )?;
        }
    }
    Ok(conn.execute(&format!("DELETE FROM {} WHERE id = ?1", q(&e.table)), [id])? > 0)
}
