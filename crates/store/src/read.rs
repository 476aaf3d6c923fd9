//! Reads: pick parts of entities (single and batched), snapshots, local part versions, digests.

use std::collections::BTreeMap;
use std::io::Write as _;

use capsule_protocol::schema::{ID_FIELD, VERSION_COLUMN};
use capsule_protocol::{
    BatchPull, Entity, EntityParts, PartKind, PullWant, PulledItem, Row, Schema, Snapshot,
};
use rusqlite::{Connection, OptionalExtension as _};
use serde_json::Value;

use crate::scope::Scope;
use crate::sql::{q, select_by_id, select_rows, sql_columns};
use crate::{Result, Store, StoreError, meta};

/// Picks `parts` out of an entity row (and its child rows): exactly the parts' columns, plus
/// each part's version. With `have` above 0 (the version the puller holds), child parts are
/// sent as a delta: the rows changed after `have` and the ids of every child.
fn pick(
    conn: &Connection,
    schema: &Schema,
    e: &Entity,
    row: &Row,
    parts: &[String],
    have: i64,
) -> Result<PulledItem> {
    let id = row[ID_FIELD].as_str().unwrap_or_default().to_string();
    let mut payload = Row::new();
    let mut pv = BTreeMap::new();
    let mut live = BTreeMap::new();
    for name in parts {
        let part = e.part(name).ok_or_else(|| {
            StoreError::Invalid(format!("entity '{}' has no part '{name}'", e.name))
        })?;
        pv.insert(
            name.clone(),
            row.get(&part.version_column())
                .and_then(Value::as_i64)
                .unwrap_or(0),
        );
        match &part.kind {
            PartKind::Columns(cols) => {
                for c in cols {
                    payload.insert(c.clone(), row.get(c).cloned().unwrap_or(Value::Null));
                }
            }
            PartKind::Child {
                table,
                parent_field,
            } => {
                let t = &schema.tables[table];
                let rows = if have > 0 {
                    let ids: Vec<String> = conn
                        .prepare_cached(&format!(
                            "SELECT id FROM {} WHERE {} = ?1 ORDER BY rowid",
                            q(table),
                            q(parent_field)
                        ))?
                        .query_map([&id], |r| r.get(0))?
                        .collect::<Result<_, _>>()?;
                    live.insert(name.clone(), ids);
                    select_rows(
                        conn,
                        t,
                        &format!("\"{parent_field}\" = ?1 AND \"{VERSION_COLUMN}\" > ?2"),
                        &[&id, &have],
                    )?
                } else {
                    select_rows(conn, t, &format!("\"{parent_field}\" = ?1"), &[&id])?
                };
                payload.insert(
                    name.clone(),
                    Value::Array(rows.into_iter().map(Value::Object).collect()),
                );
            }
        }
    }
    Ok(PulledItem {
        id,
        v: row.get("_v").and_then(Value::as_i64).unwrap_or(0),
        pv,
        payload,
        live,
    })
}

impl Store {
    fn entity_def(&self, entity: &str) -> Result<&Entity> {
        self.schema.entity(entity).ok_or_else(|| {
            StoreError::NotFound(format!(
                "unknown entity '{entity}' (entities: {})",
                self.schema
                    .entities
                    .keys()
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        })
    }

    /// `GET /api/entities/:entity/:id?parts=`: `parts` None means all.
    pub fn pull(&self, entity: &str, id: &str, parts: Option<&str>) -> Result<EntityParts> {
        let e = self.entity_def(entity)?;
        let parts = e.parse_parts(parts).map_err(StoreError::Invalid)?;
        self.with_reader(|c| {
            let row = select_by_id(c, &self.schema.tables[&e.table], id)?
                .ok_or_else(|| StoreError::NotFound(format!("{entity} '{id}' does not exist")))?;
            let item = pick(c, &self.schema, e, &row, &parts, 0)?;
            Ok(EntityParts {
                entity: entity.to_string(),
                id: item.id,
                parts,
                v: item.v,
                pv: item.pv,
                payload: item.payload,
            })
        })
    }

    /// `GET /api/entities?entity=&ids=&parts=`: one read transaction for the whole batch.
    pub fn pull_many(
        &self,
        entity: &str,
        ids: &[String],
        parts: Option<&str>,
    ) -> Result<BatchPull> {
        self.pull_many_since(entity, ids, parts, &[])
    }

    /// A batch pull where `have[i]` is the version the puller holds of `ids[i]`'s parts (0 or
    /// missing: nothing), so child parts come as deltas ([`PulledItem::live`]).
    pub fn pull_many_since(
        &self,
        entity: &str,
        ids: &[String],
        parts: Option<&str>,
        have: &[i64],
    ) -> Result<BatchPull> {
        let want = PullWant {
            entity: entity.to_string(),
            ids: ids.to_vec(),
            parts: parts
                .map(|p| p.split(',').map(str::to_string).collect())
                .unwrap_or_default(),
            have: have.to_vec(),
        };
        Ok(self
            .pull_wants(std::slice::from_ref(&want))?
            .pop()
            .expect("one answer per want"))
    }

    /// Several batch pulls (`POST /api/pull`), read in one transaction so every entity's
    /// answer is from the same point of the data. Every want is checked before any is read.
    pub fn pull_wants(&self, wants: &[PullWant]) -> Result<Vec<BatchPull>> {
        let mut checked = Vec::with_capacity(wants.len());
        for w in wants {
            let e = self.entity_def(&w.entity)?;
            let parts = e
                .parse_part_list(w.parts.iter().map(String::as_str))
                .map_err(StoreError::Invalid)?;
            checked.push((e, parts));
        }
        self.with_reader(|c| {
            let tx = c.transaction()?;
            let mut out = Vec::with_capacity(wants.len());
            for (w, (e, parts)) in wants.iter().zip(checked) {
                let t = &self.schema.tables[&e.table];
                let mut items = Vec::new();
                let mut missing = Vec::new();
                for (i, id) in w.ids.iter().enumerate() {
                    let have = w.have.get(i).copied().unwrap_or(0);
                    match select_by_id(&tx, t, id)? {
                        Some(row) => items.push(pick(&tx, &self.schema, e, &row, &parts, have)?),
                        None => missing.push(id.clone()),
                    }
                }
                out.push(BatchPull {
                    entity: w.entity.clone(),
                    parts,
                    items,
                    missing,
                });
            }
            tx.finish()?;
            Ok(out)
        })
    }

    /// Every synced row, read in one transaction so it is consistent at the `seq` it reports.
    pub fn snapshot(&self) -> Result<Snapshot> {
        self.snapshot_with(Scope::Full)
    }

    /// Writes the snapshot's JSON (the same document as [`Store::snapshot_with`] serialises
    /// to) into `out` row by row, from one read transaction: a day of any size is never
    /// held in memory. Returns the bytes written.
    pub fn write_snapshot(&self, scope: Scope, out: &mut dyn std::io::Write) -> Result<u64> {
        let mut out = CountingWriter {
            inner: out,
            bytes: 0,
        };
        let io = |e: std::io::Error| StoreError::Storage(format!("writing the snapshot: {e}"));
        self.with_reader(|c| {
            let tx = c.transaction()?;
            let seq = crate::sql::meta_i64(&tx, meta::STREAM_SEQ)?;
            let v = crate::sql::meta_i64(&tx, meta::VERSION)?;
            out.write_all(b"{\"node_id\":").map_err(io)?;
            serde_json::to_writer(&mut out, &self.node_id).map_err(|e| io(e.into()))?;
            write!(
                out,
                ",\"seq\":{seq},\"v\":{v},\"scope\":\"{}\",\"tables\":{{",
                scope.name()
            )
            .map_err(io)?;
            for (i, t) in self.schema.tables_parent_first().into_iter().enumerate() {
                let filter = crate::scope::condition(&self.schema, t, scope);
                if i > 0 {
                    out.write_all(b",").map_err(io)?;
                }
                serde_json::to_writer(&mut out, &t.name).map_err(|e| io(e.into()))?;
                out.write_all(b":[").map_err(io)?;
                crate::sql::write_rows_json(&tx, t, &filter, &mut out)?;
                out.write_all(b"]").map_err(io)?;
            }
            out.write_all(b"}}").map_err(io)?;
            out.flush().map_err(io)?;
            tx.finish()?;
            Ok(())
        })?;
        Ok(out.bytes)
    }

    /// The rows `scope` selects (see [`Scope`]), in one read transaction.
    pub fn snapshot_with(&self, scope: Scope) -> Result<Snapshot> {
        self.with_reader(|c| {
            let tx = c.transaction()?;
            let seq = crate::sql::meta_i64(&tx, meta::STREAM_SEQ)?;
            let v = crate::sql::meta_i64(&tx, meta::VERSION)?;
            let mut tables = BTreeMap::new();
            for t in self.schema.tables_parent_first() {
                let filter = crate::scope::condition(&self.schema, t, scope);
                tables.insert(t.name.clone(), select_rows(&tx, t, &filter, &[])?);
            }
            tx.finish()?;
            Ok(Snapshot {
                node_id: self.node_id.clone(),
                seq,
                v,
                scope: scope.name().into(),
                tables,
            })
        })
    }

    /// Local version of each part of an entity row, or None when the row is not here.
    pub fn part_versions(&self, entity: &str, id: &str) -> Result<Option<BTreeMap<String, i64>>> {
        let e = self.entity_def(entity)?;
        self.with_reader(|c| {
            let row = select_by_id(c, &self.schema.tables[&e.table], id)?;
            Ok(row.map(|row| {
                e.parts
                    .iter()
                    .map(|p| {
                        (
                            p.name.clone(),
                            row.get(&p.version_column())
                                .and_then(Value::as_i64)
                                .unwrap_or(0),
                        )
                    })
                    .collect()
            }))
        })
    }

    /// All rows of one synced table (tests and small configuration tables; a screen reads
    /// the working set, an API client [`Store::write_table`]).
    pub fn table_rows(&self, table: &str) -> Result<Vec<Row>> {
        let t = self.table_def(table)?;
        self.with_reader(|c| select_rows(c, t, "1", &[]))
    }

    /// The rows of `table` whose indexed `column` equals `value`: a lookup that costs the
    /// rows it finds, whatever the table's size.
    pub fn rows_where(&self, table: &str, column: &str, value: &str) -> Result<Vec<Row>> {
        let t = self.table_def(table)?;
        if !t.columns.iter().any(|c| c.name == column && c.index) {
            return Err(StoreError::Invalid(format!(
                "'{table}.{column}' is not an indexed column"
            )));
        }
        self.with_reader(|c| select_rows(c, t, &format!("{} = ?1", q(column)), &[&value]))
    }

    /// Writes `{"rows":[...]}` of one table straight from SQLite into `out` (never the whole
    /// table in memory), rows with `id` after `after`, at most `limit` of them, in id order.
    /// Returns the last id written when the page is full (where the next page starts).
    pub fn write_table(
        &self,
        table: &str,
        after: Option<&str>,
        limit: usize,
        out: &mut dyn std::io::Write,
    ) -> Result<Option<String>> {
        let t = self.table_def(table)?;
        let io = |e: std::io::Error| StoreError::Storage(format!("writing rows: {e}"));
        let after_sql = match after {
            Some(a) => format!("id > '{}'", a.replace('\'', "''")),
            None => "1".to_string(),
        };
        self.with_reader(|c| {
            let tx = c.transaction()?;
            // The page's last id first (a key-only walk of the primary key), then its rows.
            let last: Option<String> = tx
                .query_row(
                    &format!(
                        "SELECT id FROM (SELECT id FROM {} WHERE {after_sql} ORDER BY id LIMIT {limit}) \
                         ORDER BY id DESC LIMIT 1",
                        q(&t.name)
                    ),
                    [],
                    |r| r.get(0),
                )
                .optional()?;
            out.write_all(b"{\"rows\":[").map_err(io)?;
            if let Some(last) = &last {
                let upto = format!("{after_sql} AND id <= '{}'", last.replace('\'', "''"));
                crate::sql::write_rows_json(&tx, t, &upto, out)?;
            }
            out.write_all(b"]").map_err(io)?;
            let full = match &last {
                Some(last) => tx.query_row(
                    &format!("SELECT COUNT(*) FROM (SELECT 1 FROM {} WHERE {after_sql} AND id <= ?1 LIMIT {limit})", q(&t.name)),
                    [last],
                    |r| r.get::<_, i64>(0),
                )? as usize
                    >= limit,
                None => false,
            };
            let next = last.filter(|_| full);
            if let Some(n) = &next {
                out.write_all(b",\"next\":").map_err(io)?;
                serde_json::to_writer(&mut *out, n).map_err(|e| io(e.into()))?;
            }
            out.write_all(b"}").map_err(io)?;
            tx.finish()?;
            Ok(next)
        })
    }

    pub(crate) fn table_def(&self, table: &str) -> Result<&capsule_protocol::TableDef> {
        self.schema
            .table(table)
            .ok_or_else(|| StoreError::NotFound(format!("unknown table '{table}'")))
    }

    /// A digest of every synced row (data and part versions): two nodes with equal digests
    /// hold the same data.
    pub fn digest(&self) -> Result<String> {
        let snap = self.snapshot()?;
        let mut h = Fnv64::default();
        for (table, mut rows) in snap.tables {
            let t = &self.schema.tables[&table];
            let cols = sql_columns(t);
            rows.sort_by(|a, b| a[ID_FIELD].as_str().cmp(&b[ID_FIELD].as_str()));
            h.write(table.as_bytes());
            for row in rows {
                for (name, _) in cols {
                    h.write(name.as_bytes());
                    h.write(row.get(name).unwrap_or(&Value::Null).to_string().as_bytes());
                }
            }
        }
        Ok(format!("{:016x}", h.0))
    }
}

/// FNV-1a, 64 bit: stable across runs and Rust versions, unlike `DefaultHasher`.
struct Fnv64(u64);

impl Default for Fnv64 {
    fn default() -> Self {
        Fnv64(0xcbf2_9ce4_8422_2325)
    }
}

impl Fnv64 {
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes.iter().chain(std::iter::once(&0xff)) {
            self.0 ^= u64::from(*b);
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
    }
}

struct CountingWriter<'a> {
    inner: &'a mut dyn std::io::Write,
    bytes: u64,
}

impl std::io::Write for CountingWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.bytes += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}
