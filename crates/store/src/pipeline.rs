//! The one mutation pipeline: validate, apply rows, derive, version, log capsules, commit.

use std::collections::{BTreeMap, BTreeSet};

use capsule_protocol::schema::{ID_FIELD, VERSION_COLUMN};
use capsule_protocol::{
    Action, Capsule, Mutation, MutationBatch, MutationResult, MutationStatus, Row, Schema,
    TableDef, TableRole, now_ms,
};
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use serde_json::Value;

use crate::sql::{self, q, select_by_id, text, update_columns, upsert_row};
use crate::{Result, Store, StoreError, derive, meta};

/// Who is applying, which decides versions and logging. (A till's own writes go through
/// [`Store::apply_local`] instead.)
#[derive(Debug, Clone)]
pub enum ApplyMode {
    /// The hub: each new mutation gets the next version; capsules are logged for the stream.
    Authoritative {
        /// Node the mutations come from, named in their capsules.
        source: String,
    },
}

/// A capsule and its stream position (0 for a till's local, unlogged changes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoggedCapsule {
    pub seq: i64,
    pub capsule: Capsule,
}

/// A request checked against the schema and put in stored form ([`Store::prepare`]): the hub
/// does this on the request's own task, so the one writer thread only applies.
#[derive(Debug, Clone)]
pub struct PreparedBatch(MutationBatch);

impl PreparedBatch {
    pub fn batch(&self) -> &MutationBatch {
        &self.0
    }
}

#[derive(Debug, Clone, Default)]
pub struct Applied {
    pub results: Vec<MutationResult>,
    /// Capsules of this request in stream order; broadcast them only after `apply` returns,
    /// which is after the commit.
    pub capsules: Vec<LoggedCapsule>,
}

/// What one mutation changed, per entity: the parts that moved, or that the row is gone.
#[derive(Debug, Default)]
pub(crate) struct Changes {
    pub entities: BTreeMap<(String, String), EntityChange>,
    /// Entities whose derived state may depend on a row that changed (e.g. the batch a job
    /// used to belong to), to recompute even though nothing of theirs was written.
    pub related: BTreeSet<(String, String)>,
}

#[derive(Debug, Default)]
pub(crate) struct EntityChange {
    pub parts: BTreeSet<String>,
    pub gone: bool,
}

impl Changes {
    /// Adds what a later change set moved; the later word on whether an entity is gone wins
    /// (deleted then written again within one request means written).
    pub fn absorb(&mut self, other: Changes) {
        for (key, ch) in other.entities {
            let e = self.entities.entry(key).or_default();
            e.gone = ch.gone;
            if ch.gone {
                e.parts.clear();
            } else {
                e.parts.extend(ch.parts);
            }
        }
        self.related.extend(other.related);
    }

    pub fn touch(&mut self, entity: &str, id: &str, part: &str) {
        self.entities
            .entry((entity.to_string(), id.to_string()))
            .or_default()
            .parts
            .insert(part.to_string());
    }

    fn mark_gone(&mut self, entity: &str, id: &str) {
        let e = self
            .entities
            .entry((entity.to_string(), id.to_string()))
            .or_default();
        e.gone = true;
        e.parts.clear();
    }

    /// Ids of `entity` that were written or are related to a write, and still exist.
    pub fn ids_of(&self, entity: &str) -> BTreeSet<String> {
        let mut ids: BTreeSet<String> = self
            .entities
            .iter()
            .filter(|((e, _), ch)| e == entity && !ch.gone)
            .map(|((_, id), _)| id.clone())
            .collect();
        ids.extend(
            self.related
                .iter()
                .filter(|(e, _)| e == entity)
                .map(|(_, id)| id.clone()),
        );
        ids.retain(|id| {
            !self
                .entities
                .get(&(entity.to_string(), id.clone()))
                .is_some_and(|c| c.gone)
        });
        ids
    }
}

impl Store {
    /// Applies a request in one SQLite transaction. On any error nothing is written.
    pub fn apply(&self, batch: &MutationBatch, mode: &ApplyMode) -> Result<Applied> {
        let ApplyMode::Authoritative { source } = mode;
        self.apply_group(&[(batch, source.as_str())])
            .pop()
            .expect("one answer per request")
    }

    /// Group commit: applies many requests in one SQLite transaction and one fsync, each in
    /// its own savepoint, so a bad request rolls back alone and gets its own error while the
    /// others commit. Answers per request, in order; if the commit itself fails, every
    /// request fails and nothing of the group is written.
    pub fn apply_group(&self, requests: &[(&MutationBatch, &str)]) -> Vec<Result<Applied>> {
        let prepared: Vec<std::result::Result<PreparedBatch, String>> = requests
            .iter()
            .map(|(batch, _)| self.prepare((*batch).clone()).map_err(|e| e.to_string()))
            .collect();
        let checked: Vec<std::result::Result<&MutationBatch, String>> = prepared
            .iter()
            .map(|p| p.as_ref().map(PreparedBatch::batch).map_err(Clone::clone))
            .collect();
        let sources: Vec<&str> = requests.iter().map(|(_, s)| *s).collect();
        self.apply_checked(&checked, &sources)
    }

    /// Refuses with [`StoreError::NotHub`] unless this node applies writes as hub: asked before
    /// anything else about a request, so a fenced node answers every write 503 and the till
    /// queues it for the real hub (whose schema may take what this node's would refuse).
    pub fn ensure_hub(&self) -> Result<()> {
        if self.is_authority() {
            Ok(())
        } else {
            Err(not_hub())
        }
    }

    /// Checks a request against the schema and puts it in stored form; the error is the
    /// request's 400.
    pub fn prepare(&self, mut batch: MutationBatch) -> Result<PreparedBatch> {
        self.check_request(&mut batch)?;
        Ok(PreparedBatch(batch))
    }

    /// [`Store::apply_group`] for requests already prepared.
    pub fn apply_prepared(&self, requests: &[(&PreparedBatch, &str)]) -> Vec<Result<Applied>> {
        let checked: Vec<std::result::Result<&MutationBatch, String>> =
            requests.iter().map(|(p, _)| Ok(p.batch())).collect();
        let sources: Vec<&str> = requests.iter().map(|(_, s)| *s).collect();
        self.apply_checked(&checked, &sources)
    }

    /// The group commit over requests each either checked or refused (with why).
    fn apply_checked(
        &self,
        prepared: &[std::result::Result<&MutationBatch, String>],
        sources: &[&str],
    ) -> Vec<Result<Applied>> {
        if !self.is_authority() {
            return sources.iter().map(|_| Err(not_hub())).collect();
        }
        let mut conn = self.writer();
        // First without savepoints (their sub-journal copies every page a request touches):
        // if every request applies, that is the group. If one fails, the whole transaction
        // is rolled back and the group runs again with a savepoint per request, so the bad
        // one rolls back alone. A request alone in its group needs no second run.
        let alone = prepared.iter().filter(|b| b.is_ok()).count() <= 1;
        let mut outcome = self.try_group(&mut conn, prepared, sources, false);
        if !alone && matches!(outcome, Ok(Err(_))) {
            outcome = self.try_group(&mut conn, prepared, sources, true);
        }
        match outcome {
            Ok(Ok(out)) => out,
            // The one request that could apply failed: its error, and the others' own.
            Ok(Err(e)) => {
                let mut e = Some(e);
                prepared
                    .iter()
                    .map(|b| match b {
                        Err(why) => Err(StoreError::Invalid(why.clone())),
                        Ok(_) => Err(e.take().unwrap_or_else(|| {
                            StoreError::Storage("the write was not stored; send it again".into())
                        })),
                    })
                    .collect()
            }
            Err(e) if sources.len() == 1 => vec![Err(e)],
            Err(e) => {
                let why = e.to_string();
                sources
                    .iter()
                    .map(|_| {
                        Err(StoreError::Storage(format!(
                            "the write was not stored ({why}); send it again"
                        )))
                    })
                    .collect()
            }
        }
    }

    /// One attempt at a group in one transaction. Without savepoints, the first failing
    /// request rolls everything back and is returned as the inner error; with them, each
    /// request's outcome is in the list. The outer error is the transaction's own failure.
    fn try_group(
        &self,
        conn: &mut Connection,
        prepared: &[std::result::Result<&MutationBatch, String>],
        sources: &[&str],
        savepoints: bool,
    ) -> Result<std::result::Result<Vec<Result<Applied>>, StoreError>> {
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let mut out = Vec::with_capacity(sources.len());
        for (batch, source) in prepared.iter().zip(sources) {
            let batch = match batch {
                Ok(batch) => batch,
                Err(why) => {
                    out.push(Err(StoreError::Invalid(why.clone())));
                    continue;
                }
            };
            if !savepoints {
                match self.apply_in(&tx, batch, source) {
                    Ok(applied) => out.push(Ok(applied)),
                    // Dropping the transaction rolls it back.
                    Err(e) => return Ok(Err(e)),
                }
                continue;
            }
            tx.execute_batch("SAVEPOINT request")?;
            let applied = self.apply_in(&tx, batch, source);
            tx.execute_batch(if applied.is_ok() {
                "RELEASE request"
            } else {
                "ROLLBACK TO request; RELEASE request"
            })?;
            out.push(applied);
        }
        tx.commit()?;
        Ok(Ok(out))
    }

    /// Applies a validated request inside `tx` (the caller commits).
    pub(crate) fn apply_in(
        &self,
        tx: &Connection,
        batch: &MutationBatch,
        source: &str,
    ) -> Result<Applied> {
        let mut out = Applied::default();
        // The hub derives once per request, after all its rows are written: the cost follows
        // the entities the request touched, not the number of mutations times their size.
        let mut request_changes = Changes::default();
        let mut last_version = None;
        // One capsule per entity per request (union of parts, highest version): a request of
        // 200 writes to one order logs one capsule, not 200.
        let mut request_capsules: Vec<Capsule> = Vec::new();
        for (index, m) in batch.mutations.iter().enumerate() {
            let prior: Option<i64> = tx
                .prepare_cached("SELECT seq FROM _mutation WHERE mid = ?1")?
                .query_row([&m.mid], |r| r.get(0))
                .optional()?;
            if let Some(seq) = prior {
                // Applied in an earlier term: its data is here, at or below the current
                // version, which is what the sender waits to merge before forgetting it.
                let now = sql::meta_i64(tx, meta::VERSION)?;
                let term_start = now - now.rem_euclid(crate::VERSIONS_PER_TERM);
                out.results.push(MutationResult {
                    mid: m.mid.clone(),
                    status: MutationStatus::Duplicate,
                    seq: if seq < term_start { now } else { seq },
                    partial: false,
                });
                continue;
            }
            let at = |e: StoreError| match e {
                StoreError::Invalid(s) => StoreError::Invalid(format!("mutation {index}: {s}")),
                StoreError::NotFound(s) => StoreError::NotFound(format!("mutation {index}: {s}")),
                StoreError::Conflict(s) => StoreError::Conflict(format!("mutation {index}: {s}")),
                StoreError::Forbidden(s) => StoreError::Forbidden(format!("mutation {index}: {s}")),
                other => other,
            };
            // An insert of a row that is here exactly as the insert would write it is that
            // insert arriving again (after a failover the row can reach the new hub before
            // its mid does): a duplicate, not a conflict.
            // So is an insert into an entity this node merged as a follower without the mids
            // of the writes that made it (its hub died before they were copied): the resend
            // of one of those writes, however the row changed since.
            if m.action == Action::Insert && inserted_already(tx, &self.schema, m)? {
                let seq = next_version(tx)?;
                announce(tx, &self.schema, m, seq, source, &mut request_capsules)?;
                record_mid(tx, &m.mid, seq)?;
                crate::handover::journal(tx, m, seq)?;
                out.results.push(MutationResult {
                    mid: m.mid.clone(),
                    status: MutationStatus::Duplicate,
                    seq,
                    partial: false,
                });
                continue;
            }
            let seq = next_version(tx)?;
            let mut changes = Changes::default();
            let partial = apply_row(tx, &self.schema, m, &mut changes, Some(source)).map_err(at)?;
            // A write that changed nothing (the same values again, a stale status dropped)
            // still takes a version, announced by a capsule naming no part (see `announce`).
            let seq = if changes.entities.is_empty() && changes.related.is_empty() {
                announce(tx, &self.schema, m, seq, source, &mut request_capsules)?;
                seq
            } else {
                for capsule in finalize(tx, &self.schema, &changes, Some(seq), source)? {
                    combine(&mut request_capsules, capsule);
                }
                request_changes.absorb(changes);
                last_version = Some(seq);
                seq
            };
            record_mid(tx, &m.mid, seq)?;
            crate::handover::journal(tx, m, seq)?;
            out.results.push(MutationResult {
                mid: m.mid.clone(),
                status: MutationStatus::Applied,
                seq,
                partial,
            });
        }
        if let Some(seq) = last_version {
            let derived = derive::propagate(tx, &self.schema, &request_changes, true)?;
            for capsule in finalize(tx, &self.schema, &derived, Some(seq), source)? {
                combine(&mut request_capsules, capsule);
            }
        }
        out.capsules = log_capsules(tx, request_capsules)?;
        Ok(out)
    }

    /// The oldest stream position still in the log (0 when it is empty).
    pub fn oldest_logged(&self) -> Result<i64> {
        self.with_reader(|c| {
            Ok(
                c.query_row("SELECT COALESCE(MIN(seq), 0) FROM _capsule_log", [], |r| {
                    r.get(0)
                })?,
            )
        })
    }

    /// Number of entries in the capsule log.
    pub fn log_len(&self) -> Result<i64> {
        self.with_reader(
            |c| Ok(c.query_row("SELECT COUNT(*) FROM _capsule_log", [], |r| r.get(0))?),
        )
    }

    /// Drops log entries at or before `upto`; the log stays bounded, and a subscriber asking
    /// for older positions is told to take a snapshot instead.
    pub fn prune_log(&self, upto: i64) -> Result<usize> {
        let conn = self.writer();
        Ok(conn.execute("DELETE FROM _capsule_log WHERE seq <= ?1", [upto])?)
    }

    /// Capsules logged after stream position `since`, oldest first, at most `limit`.
    pub fn capsules_since(&self, since: i64, limit: usize) -> Result<Vec<LoggedCapsule>> {
        self.with_reader(|c| {
            let mut stmt = c.prepare_cached(
                "SELECT seq, entity, id, parts, v, ts, source, gone FROM _capsule_log WHERE seq > ?1 ORDER BY seq LIMIT ?2",
            )?;
            let rows = stmt.query_map(params![since, limit as i64], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, String>(3)?,
                    r.get::<_, i64>(4)?,
                    r.get::<_, i64>(5)?,
                    r.get::<_, String>(6)?,
                    r.get::<_, bool>(7)?,
                ))
            })?;
            let mut out = Vec::new();
            for row in rows {
                let (seq, entity, id, parts, v, ts, source, gone) = row?;
                let parts: Vec<String> = serde_json::from_str(&parts)
                    .map_err(|e| StoreError::Corrupt(format!("capsule log parts: {e}")))?;
                out.push(LoggedCapsule { seq, capsule: Capsule { entity, id, parts, v, ts, source, gone } });
            }
            Ok(out)
        })
    }
}

fn not_hub() -> StoreError {
    StoreError::NotHub("this node is no longer the hub; send the write to the current hub".into())
}

/// The hub's next version, taken for one write.
fn next_version(tx: &Connection) -> Result<i64> {
    let seq = sql::meta_i64(tx, meta::VERSION)?
        .checked_add(1)
        .ok_or_else(|| StoreError::Corrupt("version counter is exhausted".into()))?;
    sql::set_meta(tx, meta::VERSION, &seq.to_string())?;
    Ok(seq)
}

/// Announces version `seq` of a write that changed no row (a duplicate insert, the same
/// values again, a stale status dropped) with a capsule naming its entity and no part.
/// The write's mid is journaled at `seq`, and followers copy the journal by version: an entry
/// added at a version they had already copied past would never reach them, and one of them
/// would lead without the mid (a later replay of the write was refused as "already exists";
/// found by tests/month.rs). Every version is also one a capsule carries, so a follower that
/// merged the stream holds the hub's freshness and its journal copy reaches `seq`. Followers
/// pull nothing for it (no part is newer) unless they lack the entity.
fn announce(
    tx: &Connection,
    schema: &Schema,
    m: &Mutation,
    seq: i64,
    source: &str,
    list: &mut Vec<Capsule>,
) -> Result<()> {
    let (entity, id) = match target_entity(tx, schema, m)? {
        Some(target) => target,
        None => (
            schema.tables[&m.table].role.entity().to_string(),
            text(&m.row, ID_FIELD).unwrap_or_default().to_string(),
        ),
    };
    match list.iter_mut().find(|x| x.entity == entity && x.id == id) {
        // Already announced by this request (changed or deleted): only the version rises.
        Some(x) => {
            x.v = x.v.max(seq);
            x.ts = x.ts.max(now_ms());
        }
        None => list.push(Capsule {
            entity,
            id,
            parts: Vec::new(),
            v: seq,
            ts: now_ms(),
            source: source.to_string(),
            gone: false,
        }),
    }
    Ok(())
}

/// Folds a later capsule into the request's list: same entity and id become one capsule with
/// the union of parts and the later version; the later word on deletion wins.
fn combine(list: &mut Vec<Capsule>, c: Capsule) {
    match list
        .iter_mut()
        .find(|x| x.entity == c.entity && x.id == c.id)
    {
        Some(x) => {
            x.v = x.v.max(c.v);
            x.ts = x.ts.max(c.ts);
            x.gone = c.gone;
            if c.gone {
                x.parts.clear();
            } else {
                for p in c.parts {
                    if !x.parts.contains(&p) {
                        x.parts.push(p);
                    }
                }
                x.parts.sort();
            }
        }
        None => list.push(c),
    }
}

/// Whether `m`'s row exists with every value `m` names (ids are made by clients, so such a
/// row is `m`'s own), or exists in an entity merged here without its writes' mids. One read
/// of the row for both: every insert at the hub asks.
fn inserted_already(conn: &Connection, schema: &Schema, m: &Mutation) -> Result<bool> {
    let t = &schema.tables[&m.table];
    let id = text(&m.row, ID_FIELD).unwrap_or_default();
    let Some(stored) = select_by_id(conn, t, id)? else {
        return Ok(false);
    };
    if m.row
        .iter()
        .all(|(k, v)| stored.get(k).unwrap_or(&serde_json::Value::Null) == v)
    {
        return Ok(true);
    }
    // Changed since, but of an entity this node merged without the journal entries of the
    // writes that made it (`_unjournaled`).
    let (entity, entity_id) = match &t.role {
        TableRole::Entity { entity } => (entity.as_str(), id),
        TableRole::Child {
            entity,
            parent_field,
            ..
        } => (
            entity.as_str(),
            text(&m.row, parent_field).unwrap_or_default(),
        ),
    };
    crate::handover::is_unjournaled(conn, entity, entity_id)
}

fn record_mid(conn: &Connection, mid: &str, seq: i64) -> Result<()> {
    conn.prepare_cached("INSERT INTO _mutation(mid, seq, applied_at) VALUES (?1, ?2, ?3)")?
        .execute(params![mid, seq, now_ms()])?;
    Ok(())
}

/// Appends capsules to the stream log, in order, each at the next stream position.
pub(crate) fn log_capsules(
    conn: &Connection,
    capsules: Vec<Capsule>,
) -> Result<Vec<LoggedCapsule>> {
    if capsules.is_empty() {
        return Ok(Vec::new());
    }
    // The stream position is read and written once per list, not per capsule.
    let mut seq = sql::meta_i64(conn, meta::STREAM_SEQ)?;
    let mut out = Vec::with_capacity(capsules.len());
    let mut insert = conn.prepare_cached(
        "INSERT INTO _capsule_log(seq, entity, id, parts, v, ts, source, gone) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    )?;
    for capsule in capsules {
        seq = seq
            .checked_add(1)
            .ok_or_else(|| StoreError::Corrupt("stream position is exhausted".into()))?;
        let parts = serde_json::to_string(&capsule.parts).expect("strings serialise");
        insert.execute(params![
            seq,
            capsule.entity,
            capsule.id,
            parts,
            capsule.v,
            capsule.ts,
            capsule.source,
            capsule.gone
        ])?;
        out.push(LoggedCapsule { seq, capsule });
    }
    sql::set_meta(conn, meta::STREAM_SEQ, &seq.to_string())?;
    Ok(out)
}

/// The entity a mutation lands on: its own row, or the parent of a child row.
pub(crate) fn target_entity(
    conn: &Connection,
    schema: &Schema,
    m: &Mutation,
) -> Result<Option<(String, String)>> {
    let t = &schema.tables[&m.table];
    let id = text(&m.row, ID_FIELD).unwrap_or_default();
    Ok(match &t.role {
        TableRole::Entity { entity } => Some((entity.clone(), id.to_string())),
        TableRole::Child {
            entity,
            parent_field,
            ..
        } => {
            let parent = match text(&m.row, parent_field) {
                Some(p) => Some(p.to_string()),
                None => select_by_id(conn, t, id)?
                    .and_then(|r| text(&r, parent_field).map(str::to_string)),
            };
            parent.map(|p| (entity.clone(), p))
        }
    })
}

/// A full row for a new record: defaults, then the given values, then row-local derived values.
fn new_row(t: &TableDef, given: &Row) -> Result<Row> {
    let mut row = Row::new();
    row.insert(ID_FIELD.into(), given[ID_FIELD].clone());
    for c in &t.columns {
        let v = given
            .get(&c.name)
            .cloned()
            .unwrap_or_else(|| c.default_json());
        row.insert(c.name.clone(), v);
    }
    derive::row_local(t, &mut row)?;
    Ok(row)
}

/// Writes one mutation's row. `hub`: the source of the request when this node is the hub,
/// which hands out order numbers and settles stale edits ([`crate::rules`]); a till leaves
/// both to the hub. True when the rules kept only part of the write.
pub(crate) fn apply_row(
    conn: &Connection,
    schema: &Schema,
    m: &Mutation,
    changes: &mut Changes,
    hub: Option<&str>,
) -> Result<bool> {
    let t = &schema.tables[&m.table];
    let id = text(&m.row, ID_FIELD).expect("validated").to_string();
    derive::check_writable(t, &m.row)?;
    let existing = select_by_id(conn, t, &id)?;
    if t.immutable && existing.is_some() {
        return Err(StoreError::Conflict(format!(
            "{} '{id}' is immutable once written",
            t.name
        )));
    }
    // The hub settles stale edits first (a stale status change is dropped, the rest of the
    // write applies); then a closed day never moves, on every path that writes a row: the
    // hub's, a till's local write (refused there at once, offline too), a queued write
    // adopted by a claiming node.
    let settled = match (hub, &existing, m.action) {
        (Some(source), Some(old), Action::Save | Action::Merge) => {
            crate::rules::settle(conn, schema, m, old, source)?
        }
        _ => None,
    };
    derive::check_closed_day(
        conn,
        t,
        existing.as_ref(),
        settled.as_ref().unwrap_or(&m.row),
        m.action,
    )?;
    // Who may: on the same every path, against the row as stored.
    crate::permits::check(conn, t, existing.as_ref(), m)?;
    if m.action != Action::Delete {
        check_given_values(conn, schema, t, &id, &m.row, existing.as_ref())?;
    }
    // The hub stamps each child row it writes with the version of the write (already the
    // current version): pullers that hold the part get only rows changed since.
    let stamp = match (hub, &t.role) {
        (Some(_), TableRole::Child { .. }) => Some(sql::meta_i64(conn, meta::VERSION)?),
        _ => None,
    };
    match (m.action, existing) {
        (Action::Insert, Some(_)) => Err(StoreError::Conflict(format!(
            "{} '{id}' already exists",
            t.name
        ))),
        (Action::Insert | Action::Save, None) => {
            let mut row = new_row(t, &m.row)?;
            crate::permits::stamp_actor(t, m, &mut row);
            if hub.is_some() {
                derive::fill_on_insert(conn, t, &mut row)?;
            }
            check_parent(conn, schema, t, &row, None)?;
            if let Some(v) = stamp {
                row.insert(VERSION_COLUMN.into(), Value::from(v));
            }
            upsert_row(conn, t, &row)?;
            match &t.role {
                TableRole::Entity { entity } => {
                    for p in &schema.entities[entity].parts {
                        changes.touch(entity, &id, &p.name);
                    }
                }
                TableRole::Child {
                    entity,
                    part,
                    parent_field,
                } => {
                    changes.touch(entity, text(&row, parent_field).unwrap_or_default(), part);
                }
            }
            derive::note_related(t, None, Some(&row), changes);
            Ok(false)
        }
        (Action::Save, Some(old)) => {
            // A save replaces the whole row: columns it leaves out go back to their defaults,
            // except derived ones, which keep their values until the rules recompute them, and
            // a stale status the rules kept as it is.
            let mut new = new_row(t, settled.as_ref().unwrap_or(&m.row))?;
            if settled.is_some()
                && let TableRole::Entity { entity } = &t.role
                && let Some(part) = schema.entities[entity].part_of_column("status")
                && let capsule_protocol::PartKind::Columns(cols) = &part.kind
            {
                for c in cols {
                    if let Some(v) = old.get(c) {
                        new.insert(c.clone(), v.clone());
                    }
                }
            }
            for c in t.columns.iter().filter(|c| c.derived) {
                if let Some(v) = old.get(&c.name) {
                    new.insert(c.name.clone(), v.clone());
                }
            }
            crate::permits::keep_actor(t, &old, &mut new);
            derive::row_local(t, &mut new)?;
            for (k, v) in &old {
                if !new.contains_key(k) {
                    new.insert(k.clone(), v.clone());
                }
            }
            update_row(conn, schema, t, &old, new, stamp, changes)?;
            Ok(settled.is_some())
        }
        (Action::Merge, Some(old)) => {
            let mut new = old.clone();
            for (k, v) in settled.as_ref().unwrap_or(&m.row) {
                new.insert(k.clone(), v.clone());
            }
            update_row(conn, schema, t, &old, new, stamp, changes)?;
            Ok(settled.is_some())
        }
        (Action::Merge | Action::Delete, None) => Err(StoreError::NotFound(format!(
            "{} '{id}' does not exist",
            t.name
        ))),
        (Action::Delete, Some(old)) => {
            match &t.role {
                TableRole::Entity { entity } => {
                    for p in &schema.entities[entity].parts {
                        if let capsule_protocol::PartKind::Child {
                            table,
                            parent_field,
                        } = &p.kind
                        {
                            conn.execute(
                                &format!("DELETE FROM {} WHERE {} = ?1", q(table), q(parent_field)),
                                [&id],
                            )?;
                        }
                    }
                    changes.mark_gone(entity, &id);
                }
                TableRole::Child {
                    entity,
                    part,
                    parent_field,
                } => {
                    changes.touch(entity, text(&old, parent_field).unwrap_or_default(), part);
                }
            }
            conn.execute(&format!("DELETE FROM {} WHERE id = ?1", q(&t.name)), [&id])?;
            derive::note_related(t, Some(&old), None, changes);
            Ok(false)
        }
    }
}

/// Values a write gives that must agree with other rows: a `unique` column's value is not
/// another row's (two orders #101), a `references` column names a row that exists (an order
/// on a shift nobody opened). Checked on every path that writes a row from a request (the
/// hub's, a till's local write, an adopted one); a value the core fills in is not checked.
fn check_given_values(
    conn: &Connection,
    schema: &Schema,
    t: &TableDef,
    id: &str,
    given: &Row,
    old: Option<&Row>,
) -> Result<()> {
    for c in &t.columns {
        let Some(value) = given.get(&c.name).filter(|v| !v.is_null()) else {
            continue;
        };
        if old.is_some_and(|o| o.get(&c.name) == Some(value)) {
            continue;
        }
        if c.unique {
            let holder: Option<String> = conn
                .prepare_cached(&format!(
                    "SELECT id FROM {} WHERE {} = ?1 AND id != ?2 LIMIT 1",
                    q(&t.name),
                    q(&c.name)
                ))?
                .query_row(params![sql::to_sql(Some(c.ty), value), id], |r| r.get(0))
                .optional()?;
            if let Some(holder) = holder {
                return Err(StoreError::Conflict(format!(
                    "{}.{} {value} is already {} '{holder}''s",
                    t.name, c.name, t.name
                )));
            }
        }
        if let Some(target) = &c.references {
            let named = value.as_str().unwrap_or_default();
            let exists: bool = conn
                .prepare_cached(&format!(
                    "SELECT EXISTS(SELECT 1 FROM {} WHERE id = ?1)",
                    q(target)
                ))?
                .query_row([named], |r| r.get(0))?;
            if !exists {
                let message = format!(
                    "{}.{} names {target} '{named}', which does not exist",
                    t.name, c.name
                );
                let entity = match &schema.tables[target].role {
                    TableRole::Entity { entity } => entity.as_str(),
                    TableRole::Child { entity, .. } => entity.as_str(),
                };
                let deleted: bool = conn
                    .prepare_cached(
                        "SELECT EXISTS(SELECT 1 FROM _gone WHERE entity = ?1 AND id = ?2)",
                    )?
                    .query_row(params![entity, named], |r| r.get(0))?;
                // As with a missing parent: deleted is final, never seen may be on its way.
                return Err(if deleted {
                    StoreError::Conflict(message)
                } else {
                    StoreError::MissingParent(message)
                });
            }
        }
    }
    Ok(())
}

/// A child row must point at a parent that exists, or it would never reach any till, and a
/// parent holds at most the table's `max_per_parent` rows. `old` is the row before an update
/// (a row that stays with its parent does not count twice).
fn check_parent(
    conn: &Connection,
    schema: &Schema,
    t: &TableDef,
    row: &Row,
    old: Option<&Row>,
) -> Result<()> {
    if let TableRole::Child {
        entity,
        parent_field,
        ..
    } = &t.role
    {
        if old.is_some_and(|o| o.get(parent_field) == row.get(parent_field)) {
            return Ok(());
        }
        let parent_table = &schema.entities[entity].table;
        let parent = text(row, parent_field).unwrap_or_default();
        let exists: bool = conn.query_row(
            &format!(
                "SELECT EXISTS(SELECT 1 FROM {} WHERE id = ?1)",
                q(parent_table)
            ),
            [parent],
            |r| r.get(0),
        )?;
        if !exists {
            let message = format!(
                "{} '{}' names {parent_table} '{parent}', which does not exist",
                t.name, row[ID_FIELD]
            );
            // Deleted here: refused for good. Never seen: after a failover its write may still
            // be on its way from another node, so the sender retries.
            let deleted: bool = conn
                .prepare_cached("SELECT EXISTS(SELECT 1 FROM _gone WHERE entity = ?1 AND id = ?2)")?
                .query_row(params![entity, parent], |r| r.get(0))?;
            return Err(if deleted {
                StoreError::Conflict(message)
            } else {
                StoreError::MissingParent(message)
            });
        }
        if let Some(cap) = t.max_per_parent {
            let held: i64 = conn
                .prepare_cached(&format!(
                    "SELECT COUNT(*) FROM {} WHERE {} = ?1",
                    q(&t.name),
                    q(parent_field)
                ))?
                .query_row([parent], |r| r.get(0))?;
            if held >= cap as i64 {
                return Err(StoreError::Invalid(format!(
                    "{parent_table} '{parent}' already holds {held} {} rows, the most allowed",
                    t.name
                )));
            }
        }
    }
    Ok(())
}

fn update_row(
    conn: &Connection,
    schema: &Schema,
    t: &TableDef,
    old: &Row,
    mut new: Row,
    stamp: Option<i64>,
    changes: &mut Changes,
) -> Result<()> {
    derive::row_local(t, &mut new)?;
    let id = text(old, ID_FIELD).unwrap_or_default().to_string();
    let mut set: Vec<(String, Option<capsule_protocol::ColumnType>, Value)> = t
        .columns
        .iter()
        .filter(|c| old.get(&c.name) != new.get(&c.name))
        .map(|c| (c.name.clone(), Some(c.ty), new[&c.name].clone()))
        .collect();
    if set.is_empty() {
        return Ok(());
    }
    if let Some(v) = stamp {
        set.push((VERSION_COLUMN.into(), None, Value::from(v)));
    }
    check_parent(conn, schema, t, &new, Some(old))?;
    update_columns(conn, t, &id, &set)?;
    match &t.role {
        TableRole::Entity { entity } => {
            let e = &schema.entities[entity];
            for (col, _, _) in &set {
                let part = e
                    .part_of_column(col)
                    .expect("schema puts every column in a part");
                changes.touch(entity, &id, &part.name);
            }
        }
        TableRole::Child {
            entity,
            part,
            parent_field,
        } => {
            changes.touch(entity, text(&new, parent_field).unwrap_or_default(), part);
            if old.get(parent_field) != new.get(parent_field) {
                changes.touch(entity, text(old, parent_field).unwrap_or_default(), part);
            }
        }
    }
    derive::note_related(t, Some(old), Some(&new), changes);
    Ok(())
}

/// Turns changes into capsules; with a version, first stamps it on every changed part.
pub(crate) fn finalize(
    conn: &Connection,
    schema: &Schema,
    changes: &Changes,
    version: Option<i64>,
    source: &str,
) -> Result<Vec<Capsule>> {
    let ts = now_ms();
    let mut out = Vec::new();
    for ((entity, id), ch) in &changes.entities {
        let e = &schema.entities[entity];
        if ch.gone {
            if let Some(v) = version {
                crate::handover::note_gone(conn, entity, id, v)?;
            }
            out.push(Capsule {
                entity: entity.clone(),
                id: id.clone(),
                parts: vec![],
                v: version.unwrap_or(0),
                ts,
                source: source.to_string(),
                gone: true,
            });
            continue;
        }
        if ch.parts.is_empty() {
            continue;
        }
        let v = match version {
            Some(v) => {
                // Appended, not formatted: this runs for every entity every write touches
                // (names are the schema's checked identifiers).
                let mut sql = String::with_capacity(48 + 16 * ch.parts.len());
                sql.push_str("UPDATE \"");
                sql.push_str(&e.table);
                sql.push_str("\" SET _v = ?1");
                for p in &ch.parts {
                    sql.push_str(", \"");
                    sql.push_str(&e.part(p).expect("known part").version_column());
                    sql.push_str("\" = ?1");
                }
                sql.push_str(" WHERE id = ?2");
                let n = conn.prepare_cached(&sql)?.execute(params![v, id])?;
                if n == 0 {
                    // A child row written under a parent that is not there (only possible on a
                    // replica that is behind); nothing to signal.
                    continue;
                }
                // The stale-edit rules ask who last wrote an entity's status, nothing else.
                if let Some(status) = e.part_of_column("status")
                    && ch.parts.contains(&status.name)
                {
                    crate::rules::note_writer(
                        conn,
                        entity,
                        id,
                        std::slice::from_ref(&status.name),
                        source,
                    )?;
                }
                v
            }
            None => conn
                .query_row(
                    &format!("SELECT _v FROM {} WHERE id = ?1", q(&e.table)),
                    [id],
                    |r| r.get(0),
                )
                .optional()?
                .unwrap_or(0),
        };
        let parts = e
            .parts
            .iter()
            .filter(|p| ch.parts.contains(&p.name))
            .map(|p| p.name.clone())
            .collect();
        out.push(Capsule {
            entity: entity.clone(),
            id: id.clone(),
            parts,
            v,
            ts,
            source: source.to_string(),
            gone: false,
        });
    }
    Ok(out)
}
