//! What a node needs to take the hub over or give it up: terms, versions above everything
//! merged, tombstones, the journal of writes it accepted as hub, and the applied mids.
//!
//! Versions carry their term: a hub of term T issues versions from `T * VERSIONS_PER_TERM`,
//! so a promoted node's versions are above every version any earlier hub issued, whoever
//! merged what. A follower that was current under the old hub asks the new one what changed
//! after its version ([`Store::changed_since`]) instead of taking a snapshot.

use capsule_protocol::{
    Action, Capsule, ChangedSince, JournalEntry, JournalPage, Mutation, MutationBatch, now_ms,
};
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use std::time::{Duration, Instant, SystemTime};

use crate::pipeline::target_entity;
use crate::sql::{self, q};
use crate::{Result, Store, StoreError, meta};

/// Versions one term can issue. 2^32 keeps every version below 2^53, so browsers hold them
/// exactly, for two million terms.
pub const VERSIONS_PER_TERM: i64 = 1 << 32;

pub use capsule_protocol::defaults::MAX_TERM;

pub(crate) const DDL: &str = "
-- Entities deleted, with the version of the delete, so a follower catching up by version
-- learns what went away.
CREATE TABLE IF NOT EXISTS _gone (
    entity TEXT NOT NULL,
    id TEXT NOT NULL,
    v INTEGER NOT NULL,
    PRIMARY KEY (entity, id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS _gone_v ON _gone(v);
-- Every write this node's data holds (applied here as hub, or copied from the hub's journal),
-- as sent: replayed into the winner if this node steps down.
-- (A rowid table, unlike the other text-keyed ones: its rows hold whole mutations, too big to
-- sit in a primary-key tree, and same-version entries read back in the order written.)
CREATE TABLE IF NOT EXISTS _journal (
    mid TEXT PRIMARY KEY,
    v INTEGER NOT NULL,
    mutation TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS _journal_v ON _journal(v);
-- The journal this node held when it loaded another hub's snapshot, kept aside until the new
-- hub's journal is copied: what the new hub lacks (by mid) is then queued to be replayed into
-- it, so no write this node's data held is dropped, whatever lineages meet.
CREATE TABLE IF NOT EXISTS _journal_aside (
    mid TEXT PRIMARY KEY,
    v INTEGER NOT NULL,
    mutation TEXT NOT NULL
);
-- Entities a follower merged above its copy of the hub's journal: their rows are here, the
-- mids of the writes that made them not yet. If the hub dies in that moment and this node
-- takes over, a till's resend of such a write is a duplicate, not a new insert of a row that
-- exists. Emptied as the journal copy reaches each version (a burst's worth at most).
CREATE TABLE IF NOT EXISTS _unjournaled (
    entity TEXT NOT NULL,
    id TEXT NOT NULL,
    v INTEGER NOT NULL,
    PRIMARY KEY (entity, id)
) WITHOUT ROWID;
-- No query reads mids by version; an index on it only cost every write a B-tree insert.
DROP INDEX IF EXISTS _mutation_seq;
-- Entities whose rows here hold local writes (or values derived from them) that no hub
-- version describes; a node that claims the hub stamps them anew so followers pull them.
CREATE TABLE IF NOT EXISTS _dirty (
    entity TEXT NOT NULL,
    id TEXT NOT NULL,
    PRIMARY KEY (entity, id)
) WITHOUT ROWID;
";

pub(crate) fn note_dirty(conn: &Connection, changed: &[Capsule]) -> Result<()> {
    for c in changed.iter().filter(|c| !c.gone) {
        conn.prepare_cached("INSERT OR IGNORE INTO _dirty(entity, id) VALUES (?1, ?2)")?
            .execute(params![c.entity, c.id])?;
    }
    Ok(())
}

/// A successful claim of the hub.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    pub term: i64,
    /// The highest version this node held when it claimed: the old hub's writes above it
    /// never reached the new hub and are replayed into it by whoever holds them.
    pub from_version: i64,
    /// The hub and term this node's data followed when it claimed.
    pub prev_hub: Option<String>,
    pub prev_term: i64,
}

impl Claim {
    pub fn lineage(&self) -> capsule_protocol::Lineage {
        capsule_protocol::Lineage {
            term: self.term,
            prev_hub: self.prev_hub.clone(),
            prev_term: self.prev_term,
            from_v: self.from_version,
        }
    }
}

pub(crate) fn note_gone(conn: &Connection, entity: &str, id: &str, v: i64) -> Result<()> {
    conn.prepare_cached(
        "INSERT INTO _gone(entity, id, v) VALUES (?1, ?2, ?3)
         ON CONFLICT(entity, id) DO UPDATE SET v = MAX(v, excluded.v)",
    )?
    .execute(params![entity, id, v])?;
    Ok(())
}

/// The version at which `entity` `id` was deleted here, if it was (and its tombstone is
/// still kept).
pub(crate) fn gone_at(conn: &Connection, entity: &str, id: &str) -> Result<Option<i64>> {
    Ok(conn
        .prepare_cached("SELECT v FROM _gone WHERE entity = ?1 AND id = ?2")?
        .query_row(params![entity, id], |r| r.get(0))
        .optional()?)
}

/// Notes that `entity` `id` was merged at version `v`, above this node's journal copy.
pub(crate) fn note_unjournaled(conn: &Connection, entity: &str, id: &str, v: i64) -> Result<()> {
    conn.prepare_cached(
        "INSERT INTO _unjournaled(entity, id, v) VALUES (?1, ?2, ?3)
         ON CONFLICT(entity, id) DO UPDATE SET v = MAX(v, excluded.v)",
    )?
    .execute(params![entity, id, v])?;
    Ok(())
}

/// Whether `entity` `id` was merged here without the journal entries of the writes that made
/// it (the hub died before they were copied).
pub(crate) fn is_unjournaled(conn: &Connection, entity: &str, id: &str) -> Result<bool> {
    Ok(conn
        .prepare_cached("SELECT EXISTS(SELECT 1 FROM _unjournaled WHERE entity = ?1 AND id = ?2)")?
        .query_row(params![entity, id], |r| r.get(0))?)
}

/// Journals a write (and, made by a member of staff, its audit row: the one place both are
/// written, on the hub and on a node copying the hub's journal).
pub(crate) fn journal(conn: &Connection, m: &Mutation, v: i64) -> Result<()> {
    conn.prepare_cached("INSERT OR IGNORE INTO _journal(mid, v, mutation) VALUES (?1, ?2, ?3)")?
        .execute(params![
            m.mid,
            v,
            serde_json::to_string(m).expect("a mutation serialises")
        ])?;
    crate::audit::record(conn, m, v)
}

/// Where a store reads the time: the monotonic clock and the wall clock together, since on
/// Linux the monotonic clock stands still while the machine is suspended and the wall clock
/// does not.
pub type Clock = std::sync::Arc<dyn Fn() -> (Instant, SystemTime) + Send + Sync>;

pub(crate) fn system_clock() -> Clock {
    std::sync::Arc::new(|| (Instant::now(), SystemTime::now()))
}

/// Until when an elected hub may apply writes without its controller renewing it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Lease {
    until: Instant,
    wall_until: SystemTime,
}

impl Store {
    /// Whether this store applies writes as the hub: armed, and its lease (if it has one)
    /// not run out by either clock.
    pub fn is_authority(&self) -> bool {
        if !self.authority.load(std::sync::atomic::Ordering::SeqCst) {
            return false;
        }
        let lease = *self.lease.lock().unwrap_or_else(|p| p.into_inner());
        lease.is_none_or(|l| {
            let (now, wall) = (self.clock)();
            now < l.until && wall < l.wall_until
        })
    }

    /// Renews the hub's lease: writes are applied for `valid_for` more, then refused until the
    /// next renewal. Only an elected node's controller holds one.
    pub fn hold_authority_for(&self, valid_for: Duration) {
        let (now, wall) = (self.clock)();
        *self.lease.lock().unwrap_or_else(|p| p.into_inner()) = Some(Lease {
            until: now + valid_for,
            wall_until: wall + valid_for,
        });
    }

    /// Makes the next claim fail at its last step, before it commits (the simulation's fault:
    /// a node that cannot become hub after doing all of a claim's work).
    #[doc(hidden)]
    pub fn fail_next_claim(&self) {
        self.fail_next_claim
            .store(true, std::sync::atomic::Ordering::SeqCst);
    }

    /// Fences (false) or arms (true) hub writes. A node that is not hub keeps it false.
    pub fn set_authority(&self, on: bool) {
        self.authority
            .store(on, std::sync::atomic::Ordering::SeqCst);
    }

    /// Highest term this node has seen.
    pub fn term(&self) -> Result<i64> {
        self.meta_i64(meta::TERM)
    }

    /// Records a term seen elsewhere (only ever upwards, never past [`MAX_TERM`]); returns the
    /// highest known.
    pub fn note_term(&self, seen: i64) -> Result<i64> {
        let conn = self.writer();
        let term = sql::meta_i64(&conn, meta::TERM)?;
        if seen > term && seen <= MAX_TERM {
            sql::set_meta(&conn, meta::TERM, &seen.to_string())?;
            return Ok(seen);
        }
        Ok(term)
    }

    /// The highest hub version this node's data holds: how fresh a candidate it is.
    pub fn freshness(&self) -> Result<i64> {
        self.with_reader(|c| {
            Ok(sql::meta_i64(c, meta::VERSION)?.max(sql::meta_i64(c, meta::MERGED_VERSION)?))
        })
    }

    /// Makes this node the hub of term `max(seen, own) + 1`, all or nothing, in one
    /// transaction: the term on disk, versions above every earlier term's, the old stream log
    /// (positions of another hub) dropped, this node's own queued writes applied as the first
    /// writes of the term ([`Store::adopt_outbox`]) and its local values stamped
    /// ([`Store::restamp`]). Only after the commit does the store accept writes as hub; if any
    /// step fails, nothing of the claim remains (no term used, no write adopted).
    ///
    /// Refused while this node's journal is not whole ([`Store::claim_ready`]): a hub that
    /// lacks the mids of writes its data holds would apply their replays a second time; and
    /// while its history is still being copied ([`Store::history_complete`]).
    pub fn claim_hub(&self, seen: i64) -> Result<Claim> {
        if !self.claim_ready()? {
            return Err(StoreError::Conflict(
                "this node's journal is still being copied from the hub; it cannot lead yet".into(),
            ));
        }
        if !self.history_complete()? {
            return Err(StoreError::Conflict(
                "this node is still copying the shop's history from the hub; it cannot lead yet"
                    .into(),
            ));
        }
        let mut conn = self.writer();
        conn.pragma_update(None, "synchronous", "FULL")?;
        let claimed = (|| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let claim = self.claim_term(&tx, seen)?;
            self.adopt_in(&tx)?;
            self.restamp_in(&tx)?;
            if self
                .fail_next_claim
                .swap(false, std::sync::atomic::Ordering::SeqCst)
            {
                return Err(StoreError::Storage(
                    "the claim failed at its last step (injected)".into(),
                ));
            }
            tx.commit()?;
            Ok(claim)
        })();
        match claimed {
            Ok(claim) => {
                self.set_authority(true);
                Ok(claim)
            }
            Err(e) => {
                if self.durability == crate::Durability::Replica {
                    conn.pragma_update(None, "synchronous", "NORMAL")?;
                }
                Err(e)
            }
        }
    }

    /// The claim's first step, inside its transaction: the new term and where its versions
    /// and stream positions start.
    fn claim_term(&self, tx: &Connection, seen: i64) -> Result<Claim> {
        let exhausted = || StoreError::Corrupt("term counter is exhausted".into());
        // A term recorded past the last one (by a build that believed any gossip) is read as
        // the last claimable one, so the shop can still elect.
        let term = sql::meta_i64(tx, meta::TERM)?
            .min(MAX_TERM - 1)
            .max(seen.min(MAX_TERM - 1))
            .checked_add(1)
            .filter(|t| *t <= MAX_TERM)
            .ok_or_else(exhausted)?;
        let from = sql::meta_i64(tx, meta::VERSION)?.max(sql::meta_i64(tx, meta::MERGED_VERSION)?);
        let prev_hub = sql::meta_text(tx, meta::HUB_NODE_ID)?;
        let prev_term = sql::meta_i64(tx, meta::HUB_TERM)?;
        let base = term.checked_mul(VERSIONS_PER_TERM).ok_or_else(exhausted)?;
        sql::set_meta(tx, meta::TERM, &term.to_string())?;
        sql::set_meta(tx, meta::VERSION, &from.max(base).to_string())?;
        sql::set_meta(tx, meta::MERGED_VERSION, &from.max(base).to_string())?;
        sql::set_meta(tx, meta::HUB_NODE_ID, &self.node_id)?;
        sql::set_meta(tx, meta::HUB_TERM, &term.to_string())?;
        let top: i64 = tx.query_row("SELECT COALESCE(MAX(seq), 0) FROM _capsule_log", [], |r| {
            r.get(0)
        })?;
        let seq = sql::meta_i64(tx, meta::STREAM_SEQ)?.max(top);
        sql::set_meta(tx, meta::STREAM_SEQ, &seq.to_string())?;
        tx.execute("DELETE FROM _capsule_log", [])?;
        Ok(Claim {
            term,
            from_version: from,
            prev_hub,
            prev_term,
        })
    }

    /// Whether this node may claim the hub: its journal is whole (no journal set aside by a
    /// snapshot is still waiting for the new hub's journal to be compared with).
    pub fn claim_ready(&self) -> Result<bool> {
        self.with_reader(|c| {
            Ok(
                !c.query_row("SELECT EXISTS(SELECT 1 FROM _journal_aside)", [], |r| {
                    r.get::<_, bool>(0)
                })?,
            )
        })
    }

    /// Applies this node's own queued writes as hub, request by request, in queue order; a
    /// request the hub rules refuse stays set aside for the manager. The rows are already
    /// here (written locally), so an insert of a row that exists is applied as a save.
    /// Also for a write that reached the outbox while the node was becoming hub. Returns how
    /// many requests were applied.
    pub fn adopt_outbox(&self) -> Result<usize> {
        if !self.is_authority() {
            return Ok(0);
        }
        let mut conn = self.writer();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let adopted = self.adopt_in(&tx)?;
        tx.commit()?;
        Ok(adopted)
    }

    /// [`Store::adopt_outbox`] inside the caller's transaction, each request in a savepoint:
    /// one the rules refuse rolls back alone and is set aside.
    fn adopt_in(&self, tx: &Connection) -> Result<usize> {
        // Queued writes are judged against what the hub last said, not against rows that
        // already show them (a stale change would look like no change and stay).
        crate::shadow::restore_all(tx, self)?;
        // Confirmed by the old hub but never seen back: this hub may not have them.
        tx.execute(
            "UPDATE _outbox SET state = 'pending', hub_seq = NULL WHERE state = 'sent'",
            [],
        )?;
        let mut adopted = 0;
        while let Some(next) = crate::outbox::next_request(tx, &self.node_id)? {
            let mut batch: MutationBatch = next.batch.clone();
            if let Err(e) = self.check_request(&mut batch) {
                crate::outbox::mark_rejected(tx, &next.request, &e.to_string())?;
                continue;
            }
            tx.execute_batch("SAVEPOINT adopt")?;
            match self.adopt_one(tx, &batch) {
                Ok(()) => {
                    tx.execute_batch("RELEASE adopt")?;
                    adopted += 1;
                }
                Err(e) => {
                    tx.execute_batch("ROLLBACK TO adopt; RELEASE adopt")?;
                    match e {
                        // Its parent's write is still on its way from another node: next round.
                        StoreError::MissingParent(_) => break,
                        StoreError::Invalid(_)
                        | StoreError::NotFound(_)
                        | StoreError::Conflict(_)
                        | StoreError::Forbidden(_) => {
                            crate::outbox::mark_rejected(tx, &next.request, &e.to_string())?;
                        }
                        e => return Err(e),
                    }
                }
            }
        }
        Ok(adopted)
    }

    /// One queued request applied as hub (the caller holds a savepoint around it).
    fn adopt_one(&self, tx: &Connection, batch: &MutationBatch) -> Result<()> {
        // The rows are here already, written locally: take the inserted ones out so the hub
        // inserts them for real (numbering the order, deriving totals) rather than refusing
        // them as existing. A refusal rolls the savepoint back, which puts them back.
        for m in &batch.mutations {
            if m.action == Action::Insert {
                remove_local_insert(tx, m)?;
            }
        }
        let applied = self.apply_in(tx, batch, &self.node_id)?;
        for (r, m) in applied.results.iter().zip(&batch.mutations) {
            tx.execute("DELETE FROM _outbox WHERE mid = ?1", [&r.mid])?;
            // Applied before (its mid came back here): journaled (if it was not) at this
            // hub's current version, so this hub's journal holds every write its data does.
            if r.status == capsule_protocol::MutationStatus::Duplicate {
                journal(tx, m, sql::meta_i64(tx, meta::VERSION)?)?;
            }
        }
        Ok(())
    }

    /// Run when this node starts deciding as hub. Gives every part of each locally changed
    /// entity a version of this term, so followers pull what this node holds (its local
    /// values may equal what the hub computes now, which would otherwise leave an older
    /// version on them); and rebuilds the shift totals' per-order shares from the data (a
    /// follower does not keep them), versioning any total that was off.
    pub fn restamp(&self) -> Result<()> {
        let mut conn = self.writer();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        self.restamp_in(&tx)?;
        tx.commit()?;
        Ok(())
    }

    /// [`Store::restamp`] inside the caller's transaction.
    fn restamp_in(&self, tx: &Connection) -> Result<()> {
        let dirty: Vec<(String, String)> = tx
            .prepare("SELECT entity, id FROM _dirty")?
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<std::result::Result<_, _>>()?;
        let mut changes = crate::pipeline::Changes::default();
        for (entity, id) in &dirty {
            let Some(e) = self.schema.entity(entity) else {
                continue;
            };
            let exists: bool = tx
                .prepare_cached(&format!(
                    "SELECT EXISTS(SELECT 1 FROM {} WHERE id = ?1)",
                    q(&e.table)
                ))?
                .query_row([id], |r| r.get(0))?;
            if exists {
                for p in &e.parts {
                    changes.touch(entity, id, &p.name);
                }
            }
        }
        changes.absorb(crate::derive::rebuild_shift_totals(tx, &self.schema)?);
        if !changes.entities.is_empty() {
            let v = sql::meta_i64(tx, meta::VERSION)? + 1;
            sql::set_meta(tx, meta::VERSION, &v.to_string())?;
            // Child rows of re-stamped entities too: a follower pulling a child part as a
            // delta gets rows above the version it holds.
            for (entity, id) in &dirty {
                let Some(e) = self.schema.entity(entity) else {
                    continue;
                };
                for p in &e.parts {
                    if let capsule_protocol::PartKind::Child {
                        table,
                        parent_field,
                    } = &p.kind
                    {
                        tx.execute(
                            &format!(
                                "UPDATE {} SET _v = ?1 WHERE {} = ?2",
                                q(table),
                                q(parent_field)
                            ),
                            rusqlite::params![v, id],
                        )?;
                    }
                }
            }
            let capsules =
                crate::pipeline::finalize(tx, &self.schema, &changes, Some(v), &self.node_id)?;
            crate::pipeline::log_capsules(tx, capsules)?;
        }
        tx.execute("DELETE FROM _dirty", [])?;
        Ok(())
    }

    /// Stops being hub: hub writes are fenced at once and the node forgets which hub its
    /// data followed, so it next loads the winner's snapshot. Nothing is queued here: the
    /// snapshot sets this node's journal aside, and once the winner's journal is copied every
    /// write the winner lacks (by mid) is queued for it ([`Store::reconcile_aside`]). If this
    /// node claims again before that, its data and journal are as they were.
    pub fn step_down(&self) -> Result<()> {
        self.set_authority(false);
        let conn = self.writer();
        if self.durability == crate::Durability::Replica {
            conn.pragma_update(None, "synchronous", "NORMAL")?;
        }
        conn.execute(
            "DELETE FROM _meta WHERE key IN (?1, ?2)",
            params![meta::HUB_NODE_ID, meta::HUB_TERM],
        )?;
        Ok(())
    }

    /// After the journal of the hub whose snapshot this node loaded has been copied up to the
    /// snapshot: every write of the journal set aside that the hub lacks (its mid unknown
    /// there) is queued, one request each, in the order it was applied, to be replayed into
    /// the hub; then the aside journal goes. Returns how many writes were queued.
    pub fn reconcile_aside(&self) -> Result<usize> {
        if self.claim_ready()? {
            return Ok(0);
        }
        let mut conn = self.writer();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let missing: Vec<String> = tx
            .prepare(
                "SELECT a.mutation FROM _journal_aside a
                 WHERE NOT EXISTS (SELECT 1 FROM _journal j WHERE j.mid = a.mid)
                   AND NOT EXISTS (SELECT 1 FROM _outbox o WHERE o.mid = a.mid)
                 ORDER BY a.v, a.rowid",
            )?
            .query_map([], |r| r.get(0))?
            .collect::<std::result::Result<_, _>>()?;
        // They were applied at a hub before anything still queued here was (this till's own
        // writes since, writes an earlier snapshot queued): they go first, in their order, so
        // an order's insert is never queued behind its payment.
        let first: i64 = tx.query_row("SELECT COALESCE(MIN(pos), 1) FROM _outbox", [], |r| {
            r.get(0)
        })?;
        let start = first - missing.len() as i64;
        for (k, text) in missing.iter().enumerate() {
            let mut m: Mutation = serde_json::from_str(text)
                .map_err(|e| StoreError::Corrupt(format!("journal entry: {e}")))?;
            // A replay saw nothing of what the new hub did on its own (its versions, even of
            // the same term, count in another history): base 0, so the hub's stale-edit rules
            // never let it move a status back over the new hub's own writes.
            m.base = Some(0);
            let target = target_entity(&tx, &self.schema, &m)?;
            // One request per write: one the hub refuses is set aside alone.
            crate::outbox::enqueue_at(
                &tx,
                &m,
                &uuid::Uuid::new_v4().to_string(),
                target,
                Some(start + k as i64),
                crate::outbox::OWN_CLIENT,
            )?;
        }
        tx.execute("DELETE FROM _journal_aside", [])?;
        tx.commit()?;
        if !missing.is_empty() {
            tracing::warn!(
                queued = missing.len(),
                "writes this node held that the hub lacks are replayed into it"
            );
        }
        Ok(missing.len())
    }

    /// Confirmed writes not yet seen back go back in line: their hub is gone, and the next
    /// one either has them (a duplicate, by mid) or needs them.
    pub fn outbox_requeue_sent(&self) -> Result<usize> {
        let conn = self.writer();
        Ok(conn.execute(
            "UPDATE _outbox SET state = 'pending', hub_seq = NULL WHERE state = 'sent'",
            [],
        )?)
    }

    /// Entities changed or deleted after version `since_v` (at most `limit`), read in one
    /// transaction. `Gone` when this copy cannot tell (it lacks tombstones that old).
    pub fn changed_since(&self, since_v: i64, limit: usize) -> Result<ChangedSince> {
        self.with_reader(|c| {
            let tx = c.transaction()?;
            let gone_since = sql::meta_i64(&tx, meta::GONE_SINCE)?;
            if since_v < gone_since {
                return Err(StoreError::Gone(format!(
                    "this node knows deletions only after version {gone_since}; take a snapshot"
                )));
            }
            let v = sql::meta_i64(&tx, meta::VERSION)?;
            let mut items: Vec<Capsule> = Vec::new();
            let take = limit as i64 + 1;
            for e in self.schema.entities.values() {
                let mut stmt = tx.prepare_cached(&format!(
                    "SELECT id, _v FROM {} WHERE _v > ?1 ORDER BY _v LIMIT ?2",
                    q(&self.schema.tables[&e.table].name)
                ))?;
                let rows: Vec<(String, i64)> = stmt
                    .query_map(params![since_v, take], |r| Ok((r.get(0)?, r.get(1)?)))?
                    .collect::<std::result::Result<_, _>>()?;
                drop(stmt);
                for (id, rv) in rows {
                    items.push(changed(
                        &e.name,
                        id,
                        e.parts.iter().map(|p| p.name.clone()).collect(),
                        rv,
                        false,
                    ));
                }
            }
            let gone: Vec<(String, String, i64)> = tx
                .prepare_cached("SELECT entity, id, v FROM _gone WHERE v > ?1 ORDER BY v LIMIT ?2")?
                .query_map(params![since_v, take], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?))
                })?
                .collect::<std::result::Result<_, _>>()?;
            for (entity, id, gv) in gone {
                items.push(changed(&entity, id, Vec::new(), gv, true));
            }
            items.sort_by_key(|c| c.v);
            // Cut only between versions, so asking again from the last one misses nothing.
            let more = items.len() > limit;
            if more {
                let last = items[limit - 1].v;
                items.retain(|c| c.v <= last);
            }
            tx.finish()?;
            Ok(ChangedSince { v, items, more })
        })
    }

    /// The journal after version `after` up to `upto`, oldest first: the writes this node's
    /// data holds.
    pub fn journal_since(&self, after: i64, upto: i64, limit: usize) -> Result<JournalPage> {
        self.with_reader(|c| {
            let mut stmt = c.prepare_cached(
                "SELECT mid, v, mutation FROM _journal WHERE v > ?1 AND v <= ?2 ORDER BY v LIMIT ?3",
            )?;
            let rows: Vec<(String, i64, String)> = stmt
                .query_map(params![after, upto, limit as i64 + 1], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?))
                })?
                .collect::<std::result::Result<_, _>>()?;
            let more = rows.len() > limit;
            let entries = rows
                .into_iter()
                .take(limit)
                .map(|(mid, v, text)| {
                    Ok(JournalEntry {
                        mid,
                        v,
                        mutation: serde_json::from_str(&text)
                            .map_err(|e| StoreError::Corrupt(format!("journal entry: {e}")))?,
                    })
                })
                .collect::<Result<_>>()?;
            Ok(JournalPage { entries, more })
        })
    }

    /// Copies the hub's journal here (the writes its data holds, with their mids), so this
    /// replica answers "duplicate" as hub and can replay them if its side loses a partition.
    /// `upto`: the copy is now whole up to that version (the last page of a copy), recorded
    /// so the next copy starts there.
    pub fn record_journal(&self, entries: &[JournalEntry], upto: Option<i64>) -> Result<()> {
        let mut conn = self.writer();
        let tx = conn.transaction()?;
        let mut top = sql::meta_i64(&tx, meta::JOURNAL_VERSION)?;
        for e in entries {
            tx.prepare_cached(
                "INSERT OR IGNORE INTO _mutation(mid, seq, applied_at) VALUES (?1, ?2, ?3)",
            )?
            .execute(params![e.mid, e.v, now_ms()])?;
            journal(&tx, &e.mutation, e.v)?;
            top = top.max(e.v);
        }
        if let Some(upto) = upto {
            top = top.max(upto);
        }
        sql::set_meta(&tx, meta::JOURNAL_VERSION, &top.to_string())?;
        tx.execute("DELETE FROM _unjournaled WHERE v <= ?1", [top])?;
        tx.commit()?;
        Ok(())
    }

    /// Set by a follower that copies its hub's journal (see `_unjournaled`).
    pub fn set_keeps_journal(&self, keeps: bool) {
        self.keeps_journal
            .store(keeps, std::sync::atomic::Ordering::Relaxed);
    }

    pub(crate) fn keeps_journal(&self) -> bool {
        self.keeps_journal
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Whether this node was hub when it last stopped (crashed or shut down as hub): the
    /// writes it accepted then must be replayed into whoever is hub now.
    pub fn was_hub(&self) -> Result<bool> {
        Ok(!self.is_authority() && self.followed_hub()?.0.as_deref() == Some(self.node_id()))
    }

    /// The term of the hub this node's data and position came from, and that hub's id.
    pub fn followed_hub(&self) -> Result<(Option<String>, i64)> {
        self.with_reader(|c| {
            Ok((
                sql::meta_text(c, meta::HUB_NODE_ID)?,
                sql::meta_i64(c, meta::HUB_TERM)?,
            ))
        })
    }
}

/// Takes a locally inserted row out before the hub inserts it for real, unless the write was
/// applied before (its mid came back here): then the row is the hub's, kept.
fn remove_local_insert(tx: &Connection, m: &Mutation) -> Result<()> {
    let applied: bool = tx
        .prepare_cached("SELECT EXISTS(SELECT 1 FROM _mutation WHERE mid = ?1)")?
        .query_row([&m.mid], |r| r.get(0))?;
    if applied {
        return Ok(());
    }
    let id = sql::text(&m.row, capsule_protocol::schema::ID_FIELD).unwrap_or_default();
    tx.execute(&format!("DELETE FROM {} WHERE id = ?1", q(&m.table)), [id])?;
    Ok(())
}

fn changed(entity: &str, id: String, parts: Vec<String>, v: i64, gone: bool) -> Capsule {
    Capsule {
        entity: entity.to_string(),
        id,
        parts,
        v,
        ts: 0,
        source: String::new(),
        gone,
    }
}
