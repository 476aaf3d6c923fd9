//! A till's outbox: its own writes, committed locally together with the rows they change, and
//! kept until the hub's stream has brought them back.
//!
//! Local first: [`Store::apply_local`] writes the rows, their own-entity derived values and one
//! outbox entry per mutation in one transaction, so the cashier's sale is on disk before the
//! till answers. The drain sends entries to the hub in order, one request at a time, with the
//! same mids (a resend is a duplicate there). An entry the hub confirmed stays until the till
//! has merged the hub's stream up to that entry's version ([`Store::advance_position`]); only
//! then is it forgotten (its mid kept in `_mutation`). Until then every merge re-applies the
//! still-unseen entries of the entities it touched, so an incoming capsule never wipes a
//! pending change off the screen. A request the hub refuses is set aside, never blocking the
//! rest, until the manager retries or discards it.

use std::collections::BTreeSet;

use capsule_protocol::{
    Action, Capsule, Mutation, MutationBatch, MutationResult, MutationStatus, OutboxEntry, now_ms,
    schema::ID_FIELD,
};
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use serde_json::Value;

use crate::pipeline::{Changes, apply_row, finalize, target_entity};
use crate::sql::{self, text};
use crate::{Result, Store, StoreError, derive, meta};

const DDL: &str = "
CREATE TABLE IF NOT EXISTS _outbox (
    pos INTEGER PRIMARY KEY AUTOINCREMENT,
    mid TEXT NOT NULL UNIQUE,
    request TEXT NOT NULL,
    tbl TEXT NOT NULL,
    action TEXT NOT NULL,
    mutation TEXT NOT NULL,
    entity TEXT,
    entity_id TEXT,
    queued_at INTEGER NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    state TEXT NOT NULL DEFAULT 'pending',
    hub_seq INTEGER,
    error TEXT,
    client TEXT NOT NULL DEFAULT ''
);
";

/// Indexes, the per-client count and the triggers that keep it, after `client` exists (a
/// store made before it gets the column first). Every read the drain makes per request goes
/// through one of these, so its cost does not grow with the backlog.
const DDL_AFTER_CLIENT: &str = "
CREATE INDEX IF NOT EXISTS _outbox_request ON _outbox(request);
-- An entity's entries in queue order: what a merge re-applies, what must go before a write.
CREATE INDEX IF NOT EXISTS _outbox_entity_pos ON _outbox(entity, entity_id, pos);
DROP INDEX IF EXISTS _outbox_entity;
-- The refused entries, oldest first, without walking a backlog of pending ones.
CREATE INDEX IF NOT EXISTS _outbox_rejected ON _outbox(pos) WHERE state = 'rejected';
-- The waiting ones: oldest of all, and oldest of one client.
CREATE INDEX IF NOT EXISTS _outbox_pending ON _outbox(pos) WHERE state = 'pending';
CREATE INDEX IF NOT EXISTS _outbox_pending_client ON _outbox(client, pos) WHERE state = 'pending';
-- Confirmed, waiting to be seen back in the stream.
CREATE INDEX IF NOT EXISTS _outbox_sent ON _outbox(hub_seq) WHERE state = 'sent';
-- Entries waiting for the hub per client: the drain takes clients in turn, and a client with
-- MAX_WAITING_PER_CLIENT is refused more. Kept by triggers, so every path that queues, sends,
-- refuses, retries or drops an entry keeps it right.
CREATE TABLE IF NOT EXISTS _outbox_waiting (client TEXT PRIMARY KEY, n INTEGER NOT NULL) WITHOUT ROWID;
CREATE TRIGGER IF NOT EXISTS _outbox_waiting_insert AFTER INSERT ON _outbox
WHEN new.state = 'pending' BEGIN
    INSERT INTO _outbox_waiting(client, n) VALUES (new.client, 1)
        ON CONFLICT(client) DO UPDATE SET n = n + 1;
END;
CREATE TRIGGER IF NOT EXISTS _outbox_waiting_delete AFTER DELETE ON _outbox
WHEN old.state = 'pending' BEGIN
    UPDATE _outbox_waiting SET n = n - 1 WHERE client = old.client;
    DELETE FROM _outbox_waiting WHERE client = old.client AND n <= 0;
END;
CREATE TRIGGER IF NOT EXISTS _outbox_waiting_update AFTER UPDATE OF state, client ON _outbox
WHEN (old.state = 'pending') != (new.state = 'pending') OR old.client != new.client BEGIN
    UPDATE _outbox_waiting SET n = n - 1 WHERE client = old.client AND old.state = 'pending';
    DELETE FROM _outbox_waiting WHERE client = old.client AND n <= 0;
    INSERT INTO _outbox_waiting(client, n) SELECT new.client, 1 WHERE new.state = 'pending'
        ON CONFLICT(client) DO UPDATE SET n = n + 1;
END;
";

/// Creates the outbox (or brings one an older build made up to date).
pub(crate) fn create(conn: &Connection) -> Result<()> {
    conn.execute_batch(DDL)?;
    let has_client: bool = conn.query_row(
        "SELECT EXISTS(SELECT 1 FROM pragma_table_info('_outbox') WHERE name = 'client')",
        [],
        |r| r.get(0),
    )?;
    if !has_client {
        conn.execute_batch("ALTER TABLE _outbox ADD COLUMN client TEXT NOT NULL DEFAULT ''")?;
    }
    let counted: bool = conn.query_row(
        "SELECT EXISTS(SELECT 1 FROM sqlite_master WHERE name = '_outbox_waiting')",
        [],
        |r| r.get(0),
    )?;
    conn.execute_batch(DDL_AFTER_CLIENT)?;
    if !counted {
        conn.execute_batch(
            "INSERT INTO _outbox_waiting(client, n)
             SELECT client, COUNT(*) FROM _outbox WHERE state = 'pending' GROUP BY client",
        )?;
    }
    Ok(())
}

/// Mutations one client (a device, by its address) may have waiting for the hub at a till;
/// more are refused (429) until some have gone through. A cashier ringing a busy day with
/// the hub gone queues a few thousand.
pub const MAX_WAITING_PER_CLIENT: i64 = 50_000;

/// The client a till's own writes are queued under (its own screens, the tests' writes).
pub const OWN_CLIENT: &str = "";

/// Source named in the capsules a till's local writes show its own screens.
const LOCAL_SOURCE: &str = "local";

/// What a local write did: per mid applied or duplicate, and the local changes to show.
#[derive(Debug, Clone, Default)]
pub struct LocalApplied {
    pub results: Vec<MutationResult>,
    pub capsules: Vec<Capsule>,
    /// The outbox request the new mutations were queued under (None when all were repeats).
    pub request: Option<String>,
    /// Older writes were still waiting for the hub when this one was queued.
    pub behind: bool,
}

/// The next request to send to the hub.
#[derive(Debug, Clone)]
pub struct OutboxRequest {
    pub request: String,
    pub batch: MutationBatch,
    /// When its oldest entry was queued (ms since epoch).
    pub queued_at: i64,
    /// The client whose line it waited in.
    pub client: String,
    /// Nothing queued waits longer: a parent it needs cannot still be waiting here.
    pub oldest: bool,
}

impl Store {
    /// Applies a till's own write locally and queues it for the hub, in one transaction. An
    /// order opened here without a number gets a provisional one (`{prefix}-{n}`), which the
    /// hub keeps beside the real number it assigns.
    pub fn apply_local(&self, batch: &MutationBatch, prefix: &str) -> Result<LocalApplied> {
        self.apply_local_for(batch, prefix, OWN_CLIENT)
    }

    /// [`Store::apply_local`] for a write `client` sent (a device, named by its address): its
    /// entries wait in that client's line, taken in turn with the others', and a client with
    /// [`MAX_WAITING_PER_CLIENT`] waiting is refused more (Busy).
    pub fn apply_local_for(
        &self,
        batch: &MutationBatch,
        prefix: &str,
        client: &str,
    ) -> Result<LocalApplied> {
        let mut batch = batch.clone();
        self.check_request(&mut batch)?;
        let mut conn = self.writer();
        // The cashier's sale exists only here until the hub has it: this commit is fsynced
        // whatever the replica's usual durability (power lost after the answer loses nothing).
        conn.pragma_update(None, "synchronous", "FULL")?;
        let out = self.apply_local_in(&mut conn, batch, prefix, client);
        if self.durability == crate::Durability::Replica && !self.is_authority() {
            conn.pragma_update(None, "synchronous", "NORMAL")?;
        }
        out
    }

    fn apply_local_in(
        &self,
        conn: &mut Connection,
        mut batch: MutationBatch,
        prefix: &str,
        client: &str,
    ) -> Result<LocalApplied> {
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let request = uuid::Uuid::new_v4().to_string();
        let waiting: i64 = tx
            .prepare_cached("SELECT COALESCE(MAX(n), 0) FROM _outbox_waiting WHERE client = ?1")?
            .query_row([client], |r| r.get(0))?;
        if waiting >= self.waiting_per_client() {
            return Err(StoreError::Busy(format!(
                "{waiting} writes from this device are waiting for the hub, the most one device may queue; try again when some have gone through"
            )));
        }
        let mut out = LocalApplied {
            behind: waiting > 0,
            ..LocalApplied::default()
        };
        let mut changes = Changes::default();
        // Another node's outbox reaching this one while it is not the hub (its hub target is a
        // moment behind a hub change): this node relays it.
        let forwarded = batch
            .source
            .as_deref()
            .is_some_and(|s| s != self.node_id.as_str());
        for (index, m) in batch.mutations.iter_mut().enumerate() {
            if let Some(seq) = known_mid(&tx, &m.mid)? {
                out.results.push(MutationResult {
                    mid: m.mid.clone(),
                    status: MutationStatus::Duplicate,
                    seq,
                    partial: false,
                });
                continue;
            }
            if forwarded && m.action == Action::Insert && reflects_insert(&tx, self, m)? {
                // The resend of an insert whose row is here already (merged from a hub): only
                // the hub can tell by its mid whether this is the write that made the row or a
                // new one, so it goes on untouched. Judged here, it was refused for good as
                // "already exists" and a till's paid sale was set aside (tests/month.rs, a
                // till still sending to the node that had just handed the hub back).
                let target = target_entity(&tx, &self.schema, m)?;
                enqueue_at(&tx, m, &request, target, None, client)?;
                out.results.push(queued(m));
                out.request = Some(request.clone());
                continue;
            }
            number_provisionally(&tx, m, prefix)?;
            let target = target_entity(&tx, &self.schema, m)?;
            // The hub tells stale edits from deliberate ones by the version this till saw:
            // the hub's version of its rows, or, while its own earlier writes to the entity
            // are still waiting, what the first of them saw (the screen showed those writes,
            // not the hub's newer state).
            if m.base.is_none()
                && let Some((entity, id)) = &target
            {
                let waiting: Option<i64> = tx
                    .prepare_cached(
                        "SELECT MIN(json_extract(mutation, '$.base')) FROM _outbox
                         WHERE entity = ?1 AND entity_id = ?2 AND state != 'rejected'",
                    )?
                    .query_row(params![entity, id], |r| r.get(0))?;
                let seen = entity_version(&tx, self, entity, id)?;
                m.base = Some(waiting.map_or(seen, |w| w.min(seen)));
            }
            if let Some((entity, id)) = &target {
                crate::shadow::keep(&tx, self, entity, id)?;
            }
            let mut one = Changes::default();
            apply_row(&tx, &self.schema, m, &mut one, None).map_err(|e| match e {
                StoreError::Invalid(s) => StoreError::Invalid(format!("mutation {index}: {s}")),
                StoreError::NotFound(s) => StoreError::NotFound(format!("mutation {index}: {s}")),
                StoreError::Conflict(s) => StoreError::Conflict(format!("mutation {index}: {s}")),
                other => other,
            })?;
            changes.absorb(one);
            enqueue_at(&tx, m, &request, target, None, client)?;
            out.results.push(queued(m));
            out.request = Some(request.clone());
        }
        let derived = derive::propagate(&tx, &self.schema, &changes, false)?;
        changes.absorb(derived);
        out.capsules = finalize(&tx, &self.schema, &changes, None, LOCAL_SOURCE)?;
        crate::handover::note_dirty(&tx, &out.capsules)?;
        tx.commit()?;
        Ok(out)
    }

    /// Writes one client may have waiting here before more are refused.
    fn waiting_per_client(&self) -> i64 {
        #[cfg(test)]
        if let Some(n) = *self.test_waiting_cap.lock().unwrap() {
            return n;
        }
        MAX_WAITING_PER_CLIENT
    }

    /// The oldest request still waiting for the hub, as one batch (all-or-nothing there too).
    pub fn outbox_next(&self, source: &str) -> Result<Option<OutboxRequest>> {
        self.with_reader(|c| next_request(c, source))
    }

    /// The next requests to send, one round at a time with clients taking turns: from the
    /// first client after `after` (by name, wrapping round), each client with writes waiting
    /// gives its oldest request not yet taken, round after round, up to `max_mutations` (at
    /// least one request). A client with thousands queued thus delays another's sale by a
    /// share of one send, not by its backlog. A request that would overtake an older waiting
    /// write of another client to one of its entities is not taken: the send ends before it,
    /// and when it would be the first, the oldest request of all goes alone, so each entity's
    /// writes reach the hub in the order they were made. The send ends with the round in
    /// which a client's line empties: that client is most likely a cashier waiting for the
    /// answer to the one sale it sent, so it waits for a round, not for a full send of others'
    /// backlog. Empty: nothing waits.
    pub fn outbox_next_fair(
        &self,
        source: &str,
        after: &str,
        max_mutations: usize,
    ) -> Result<Vec<OutboxRequest>> {
        self.with_reader(|c| {
            let tx = c.transaction()?;
            let clients: Vec<String> = tx
                .prepare_cached("SELECT client FROM _outbox_waiting WHERE n > 0 ORDER BY client")?
                .query_map([], |r| r.get(0))?
                .collect::<std::result::Result<_, _>>()?;
            let split = clients.iter().position(|c| c.as_str() > after).unwrap_or(0);
            // Each client in turn, with the queue position it has been taken up to.
            let mut turns: Vec<(String, i64)> = clients[split..]
                .iter()
                .chain(&clients[..split])
                .map(|c| (c.clone(), 0))
                .collect();
            let oldest: Option<i64> = tx
                .prepare_cached("SELECT MIN(pos) FROM _outbox WHERE state = 'pending'")?
                .query_row([], |r| r.get(0))?;
            let mut out: Vec<OutboxRequest> = Vec::new();
            let mut total = 0;
            let mut last_round = false;
            'rounds: while !turns.is_empty() && !last_round {
                let mut k = 0;
                while k < turns.len() {
                    let (client, taken) = turns[k].clone();
                    let next: Option<(String, i64)> = tx
                        .prepare_cached(
                            "SELECT request, pos FROM _outbox
                             WHERE client = ?1 AND state = 'pending' AND pos > ?2
                             ORDER BY pos LIMIT 1",
                        )?
                        .query_row(params![client, taken], |r| Ok((r.get(0)?, r.get(1)?)))
                        .optional()?;
                    let Some((request, pos)) = next else {
                        turns.remove(k);
                        continue;
                    };
                    if overtakes(&tx, &request, pos)? {
                        if out.is_empty() {
                            return Ok(next_request(&tx, source)?.into_iter().collect());
                        }
                        break 'rounds;
                    }
                    let req = request_batch(&tx, request, source, client, oldest == Some(pos))?;
                    let n = req.batch.mutations.len();
                    if !out.is_empty() && total + n > max_mutations {
                        break 'rounds;
                    }
                    turns[k].1 = tx
                        .prepare_cached("SELECT MAX(pos) FROM _outbox WHERE request = ?1")?
                        .query_row([&req.request], |r| r.get(0))?;
                    let more: bool = tx
                        .prepare_cached(
                            "SELECT EXISTS(SELECT 1 FROM _outbox
                             WHERE client = ?1 AND state = 'pending' AND pos > ?2)",
                        )?
                        .query_row(params![req.client, turns[k].1], |r| r.get(0))?;
                    last_round |= !more;
                    total += n;
                    out.push(req);
                    k += 1;
                }
            }
            if out.is_empty() {
                return Ok(next_request(&tx, source)?.into_iter().collect());
            }
            Ok(out)
        })
    }

    /// The hub confirmed a request: its entries wait for the stream to bring them back.
    /// Returns the entities the hub took a write to only in part, or had taken it already (a
    /// duplicate: perhaps in part, from another node replaying it): the caller re-reads them
    /// from the hub ([`Store::merge_pulled_over_local`]); those writes are not re-applied over
    /// merges any more (the hub's version of them is what counts).
    pub fn outbox_confirmed(
        &self,
        request: &str,
        results: &[MutationResult],
    ) -> Result<Vec<(String, String)>> {
        self.outbox_confirmed_all(&[(request.to_string(), results.to_vec())])
    }

    /// [`Store::outbox_confirmed`] for the requests of one send, in one transaction.
    pub fn outbox_confirmed_all(
        &self,
        answers: &[(String, Vec<MutationResult>)],
    ) -> Result<Vec<(String, String)>> {
        let mut conn = self.writer();
        let tx = conn.transaction()?;
        let mut reread = Vec::new();
        for (request, results) in answers {
            for r in results {
                tx.prepare_cached(
                    "UPDATE _outbox SET state = 'sent', hub_seq = ?2, attempts = attempts + 1, error = NULL
                     WHERE mid = ?1 AND request = ?3",
                )?
                .execute(params![r.mid, r.seq, request])?;
                if r.partial || r.status == MutationStatus::Duplicate {
                    tx.prepare_cached(
                        "INSERT OR IGNORE INTO _mutation(mid, seq, applied_at) VALUES (?1, ?2, ?3)",
                    )?
                    .execute(params![r.mid, r.seq, now_ms()])?;
                    let target: Option<(String, String)> = tx
                        .prepare_cached(
                            "SELECT entity, entity_id FROM _outbox WHERE mid = ?1 AND entity IS NOT NULL",
                        )?
                        .query_row([&r.mid], |row| Ok((row.get(0)?, row.get(1)?)))
                        .optional()?;
                    reread.extend(target);
                }
            }
        }
        prune(&tx)?;
        tx.commit()?;
        Ok(reread)
    }

    /// A send that failed for a reason that may pass (hub unreachable, busy, 5xx).
    pub fn outbox_attempt_failed(&self, request: &str, error: &str) -> Result<()> {
        let conn = self.writer();
        conn.execute(
            "UPDATE _outbox SET attempts = attempts + 1, error = ?2 WHERE request = ?1 AND state = 'pending'",
            params![request, error],
        )?;
        Ok(())
    }

    /// The hub refused a request: set it aside with the hub's reason and take its local effect
    /// back out of the rows. Returns the entities it touched, which the caller re-reads from
    /// the hub ([`Store::merge_pulled_over_local`]).
    pub fn outbox_rejected(&self, request: &str, error: &str) -> Result<Vec<(String, String)>> {
        let conn = self.writer();
        mark_rejected(&conn, request, error)?;
        let mut stmt = conn.prepare_cached(
            "SELECT DISTINCT entity, entity_id FROM _outbox WHERE request = ?1 AND entity IS NOT NULL",
        )?;
        let touched = stmt
            .query_map([request], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<std::result::Result<_, _>>()?;
        Ok(touched)
    }

    /// Puts a rejected request (named by any of its mids) back in line, at its old place.
    pub fn outbox_retry(&self, mid: &str) -> Result<usize> {
        let conn = self.writer();
        let n = conn.execute(
            "UPDATE _outbox SET state = 'pending', error = NULL
             WHERE request = (SELECT request FROM _outbox WHERE mid = ?1) AND state = 'rejected'",
            [mid],
        )?;
        if n == 0 {
            return Err(StoreError::NotFound(format!(
                "no rejected outbox entry has mid '{mid}'"
            )));
        }
        Ok(n)
    }

    /// Drops a rejected request (named by any of its mids) for good.
    pub fn outbox_discard(&self, mid: &str) -> Result<usize> {
        let conn = self.writer();
        let n = conn.execute(
            "DELETE FROM _outbox WHERE request = (SELECT request FROM _outbox WHERE mid = ?1) AND state = 'rejected'",
            [mid],
        )?;
        if n == 0 {
            return Err(StoreError::NotFound(format!(
                "no rejected outbox entry has mid '{mid}'"
            )));
        }
        Ok(n)
    }

    /// Entries not yet seen back from the hub (`pending` or `sent`) and set-aside ones.
    pub fn outbox_list(&self) -> Result<Vec<OutboxEntry>> {
        let (mut pending, rejected) = self.outbox_page(usize::MAX)?;
        pending.extend(rejected);
        Ok(pending)
    }

    /// The oldest `limit` entries waiting for the hub and the oldest `limit` it refused: what
    /// a screen shows of a backlog of any size.
    pub fn outbox_page(&self, limit: usize) -> Result<(Vec<OutboxEntry>, Vec<OutboxEntry>)> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.with_reader(|c| {
            let read = |state_sql: &str| -> Result<Vec<OutboxEntry>> {
                let mut stmt = c.prepare_cached(&format!(
                    "SELECT mid, tbl, action, queued_at, attempts, state, hub_seq, error FROM _outbox
                     WHERE {state_sql} ORDER BY pos LIMIT ?1"
                ))?;
                let rows = stmt.query_map([limit], |r| {
                    Ok(OutboxEntry {
                        mid: r.get(0)?,
                        table: r.get(1)?,
                        action: r.get(2)?,
                        queued_at: capsule_protocol::ms_to_rfc3339(r.get(3)?),
                        attempts: r.get(4)?,
                        state: r.get(5)?,
                        hub_seq: r.get(6)?,
                        error: r.get(7)?,
                    })
                })?;
                Ok(rows.collect::<std::result::Result<_, _>>()?)
            };
            Ok((read("state != 'rejected'")?, read("state = 'rejected'")?))
        })
    }

    /// Counts of entries waiting for the hub (pending or sent, not yet seen) and set aside.
    pub fn outbox_counts(&self) -> Result<(u64, u64)> {
        self.with_reader(|c| {
            Ok(c.query_row(
                // (The refused ones through their partial index; the rest is all but them.)
                "SELECT (SELECT COUNT(*) FROM _outbox) - n, n
                 FROM (SELECT COUNT(*) AS n FROM _outbox WHERE state = 'rejected')",
                [],
                |r| Ok((r.get::<_, i64>(0)? as u64, r.get::<_, i64>(1)? as u64)),
            )?)
        })
    }

    /// Records the stream position merged up to and the highest hub version it carried;
    /// confirmed outbox entries at or below that version are now in the replica and go.
    pub fn advance_position(&self, seq: i64, version: i64) -> Result<()> {
        let mut conn = self.writer();
        let tx = conn.transaction()?;
        sql::set_meta(&tx, meta::STREAM_SEQ, &seq.to_string())?;
        let merged = sql::meta_i64(&tx, meta::MERGED_VERSION)?;
        if version > merged {
            sql::set_meta(&tx, meta::MERGED_VERSION, &version.to_string())?;
        }
        prune(&tx)?;
        tx.commit()?;
        Ok(())
    }
}

/// The oldest request still waiting for the hub, read on `c` (inside a caller's transaction
/// when the caller is taking requests out as it goes).
pub(crate) fn next_request(c: &Connection, source: &str) -> Result<Option<OutboxRequest>> {
    let head: Option<(String, String)> = c
        .prepare_cached(
            "SELECT request, client FROM _outbox WHERE state = 'pending' ORDER BY pos LIMIT 1",
        )?
        .query_row([], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    match head {
        Some((request, client)) => request_batch(c, request, source, client, true).map(Some),
        None => Ok(None),
    }
}

/// Whether `request` (first queued at `pos`) would reach the hub before an older waiting
/// write of another client to one of its entities (its own client's older ones go first).
fn overtakes(c: &Connection, request: &str, pos: i64) -> Result<bool> {
    Ok(c.prepare_cached(
        "SELECT EXISTS(SELECT 1 FROM _outbox a JOIN _outbox b
             ON b.entity = a.entity AND b.entity_id = a.entity_id AND b.pos < ?2
         WHERE a.request = ?1 AND b.client != a.client AND b.state = 'pending')",
    )?
    .query_row(params![request, pos], |r| r.get(0))?)
}

/// A queued request's waiting entries as the batch sent to the hub.
fn request_batch(
    c: &Connection,
    request: String,
    source: &str,
    client: String,
    oldest: bool,
) -> Result<OutboxRequest> {
    let queued_at: i64 = c
        .prepare_cached("SELECT MIN(queued_at) FROM _outbox WHERE request = ?1")?
        .query_row([&request], |r| r.get(0))?;
    let mut stmt = c.prepare_cached(
        "SELECT mutation FROM _outbox WHERE request = ?1 AND state = 'pending' ORDER BY pos",
    )?;
    let mutations = stmt
        .query_map([&request], |r| r.get::<_, String>(0))?
        .map(|t| {
            let t = t?;
            serde_json::from_str::<Mutation>(&t)
                .map_err(|e| StoreError::Corrupt(format!("outbox entry: {e}")))
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(OutboxRequest {
        queued_at,
        request,
        client,
        oldest,
        batch: MutationBatch {
            mutations,
            source: Some(source.to_string()),
        },
    })
}

/// Sets a request aside with the hub's reason, on `conn` (the caller's transaction).
pub(crate) fn mark_rejected(conn: &Connection, request: &str, error: &str) -> Result<()> {
    conn.prepare_cached(
        "UPDATE _outbox SET state = 'rejected', attempts = attempts + 1, error = ?2 WHERE request = ?1",
    )?
    .execute(params![request, error])?;
    Ok(())
}

/// Queues one mutation under `request` in `client`'s line, at queue position `pos` (None:
/// the next one at the end).
pub(crate) fn enqueue_at(
    conn: &Connection,
    m: &Mutation,
    request: &str,
    target: Option<(String, String)>,
    pos: Option<i64>,
    client: &str,
) -> Result<()> {
    conn.prepare_cached(
        "INSERT INTO _outbox(mid, request, tbl, action, mutation, entity, entity_id, queued_at, pos, client)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
    )?
    .execute(params![
        m.mid,
        request,
        m.table,
        action_name(m.action),
        serde_json::to_string(m).expect("a mutation serialises"),
        target.as_ref().map(|t| t.0.clone()),
        target.as_ref().map(|t| t.1.clone()),
        now_ms(),
        pos,
        client
    ])?;
    Ok(())
}

/// Forgets confirmed entries the replica has merged back (their mids go to `_mutation`), and
/// the shadows of entities no entry touches any more.
/// An entry confirmed in an earlier term than the hub followed now (a confirmation that
/// arrived from the old hub after the switch) cannot be told apart from the new hub's
/// versions: it goes back in line, to be confirmed (or found a duplicate) by the new hub.
pub(crate) fn prune(conn: &Connection) -> Result<()> {
    let term = sql::meta_i64(conn, meta::HUB_TERM)?;
    if term > 0 {
        conn.prepare_cached(
            "UPDATE _outbox SET state = 'pending', hub_seq = NULL
             WHERE state = 'sent' AND hub_seq < ?1",
        )?
        .execute([term.saturating_mul(crate::VERSIONS_PER_TERM)])?;
    }
    let merged = sql::meta_i64(conn, meta::MERGED_VERSION)?;
    let mut stmt = conn.prepare_cached(
        "SELECT mid, hub_seq FROM _outbox WHERE state = 'sent' AND hub_seq <= ?1",
    )?;
    let done: Vec<(String, i64)> = stmt
        .query_map([merged], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<std::result::Result<_, _>>()?;
    for (mid, seq) in done {
        conn.prepare_cached(
            "INSERT OR IGNORE INTO _mutation(mid, seq, applied_at) VALUES (?1, ?2, ?3)",
        )?
        .execute(params![mid, seq, now_ms()])?;
        conn.prepare_cached("DELETE FROM _outbox WHERE mid = ?1")?
            .execute([&mid])?;
    }
    Ok(())
}

/// Re-applies, in queue order, the entries not yet seen back from the hub that touch
/// `entities`, after a merge replaced their rows. Each goes in its own savepoint: one that no
/// longer fits (its row deleted at the hub) is skipped, the hub will say what became of it.
pub(crate) fn reapply_pending(
    conn: &Connection,
    store: &Store,
    entities: &BTreeSet<(String, String)>,
) -> Result<Vec<Capsule>> {
    if entities.is_empty() {
        return Ok(Vec::new());
    }
    // Each entity's entries through its index, then all of them in queue order: the cost is
    // what these entities have queued, not the whole backlog.
    let mut stmt = conn.prepare_cached(
        "SELECT pos, mutation, hub_seq FROM _outbox
         WHERE entity = ?1 AND entity_id = ?2 AND state != 'rejected'",
    )?;
    /// Queue position, the mutation, its entity, the hub version it was confirmed at.
    type Queued = (i64, String, (String, String), Option<i64>);
    let mut queued: Vec<Queued> = Vec::new();
    for (entity, id) in entities {
        let rows = stmt.query_map(params![entity, id], |r| {
            Ok((
                r.get(0)?,
                r.get(1)?,
                (entity.clone(), id.clone()),
                r.get(2)?,
            ))
        })?;
        for row in rows {
            queued.push(row?);
        }
    }
    queued.sort_by_key(|q| q.0);
    let mut changes = Changes::default();
    for (_, text, key, hub_seq) in queued {
        // Rows pulled at a hub version at or past the entry's already hold it, and perhaps a
        // later change on top that re-applying would hide.
        if let Some(seq) = hub_seq
            && entity_version(conn, store, &key.0, &key.1)? >= seq
        {
            continue;
        }
        let m: Mutation = serde_json::from_str(&text)
            .map_err(|e| StoreError::Corrupt(format!("outbox entry: {e}")))?;
        // Applied at the hub already (its mid came back with the hub's journal): the merged
        // rows hold what the hub made of it, which may not be what the till wrote (a stale
        // status change dropped); re-applying the till's version would put it back.
        let applied: bool = conn
            .prepare_cached("SELECT EXISTS(SELECT 1 FROM _mutation WHERE mid = ?1)")?
            .query_row([&m.mid], |r| r.get(0))?;
        if applied {
            continue;
        }
        crate::shadow::keep(conn, store, &key.0, &key.1)?;
        conn.execute_batch("SAVEPOINT reapply")?;
        let mut one = Changes::default();
        let r = match (m.action, reflects_insert(conn, store, &m)?) {
            // An insert the merged rows already hold needs nothing.
            (Action::Insert, true) => Ok(()),
            _ => apply_row(conn, &store.schema, &m, &mut one, None).map(|_| ()),
        };
        match r {
            Ok(()) => {
                conn.execute_batch("RELEASE reapply")?;
                changes.absorb(one);
            }
            Err(e) => {
                tracing::debug!(mid = %m.mid, error = %e, "pending write does not fit the merged rows");
                conn.execute_batch("ROLLBACK TO reapply; RELEASE reapply")?;
            }
        }
    }
    let derived = derive::propagate(conn, &store.schema, &changes, false)?;
    changes.absorb(derived);
    let capsules = finalize(conn, &store.schema, &changes, None, LOCAL_SOURCE)?;
    crate::handover::note_dirty(conn, &capsules)?;
    Ok(capsules)
}

/// The hub version a replica's copy of an entity was read at (its `_v`; 0 when absent).
fn entity_version(conn: &Connection, store: &Store, entity: &str, id: &str) -> Result<i64> {
    let table = &store.schema.entities[entity].table;
    Ok(conn
        .prepare_cached(&format!(
            "SELECT _v FROM {} WHERE id = ?1",
            crate::sql::q(table)
        ))?
        .query_row([id], |r| r.get(0))
        .optional()?
        .unwrap_or(0))
}

/// The answer for a write committed here and queued for the hub (no hub version yet).
fn queued(m: &Mutation) -> MutationResult {
    MutationResult {
        mid: m.mid.clone(),
        status: MutationStatus::Applied,
        seq: 0,
        partial: false,
    }
}

/// Whether an insert's row already exists (a merge brought it, or it was never taken out).
fn reflects_insert(conn: &Connection, store: &Store, m: &Mutation) -> Result<bool> {
    let t = &store.schema.tables[&m.table];
    let id = text(&m.row, ID_FIELD).unwrap_or_default();
    Ok(crate::sql::select_by_id(conn, t, id)?.is_some())
}

/// Whether this node has seen `mid` before: queued here, or applied (its hub version).
fn known_mid(conn: &Connection, mid: &str) -> Result<Option<i64>> {
    let queued: Option<Option<i64>> = conn
        .prepare_cached("SELECT hub_seq FROM _outbox WHERE mid = ?1")?
        .query_row([mid], |r| r.get(0))
        .optional()?;
    if let Some(seq) = queued {
        return Ok(Some(seq.unwrap_or(0)));
    }
    Ok(conn
        .prepare_cached("SELECT seq FROM _mutation WHERE mid = ?1")?
        .query_row([mid], |r| r.get(0))
        .optional()?)
}

/// An order opened on a till without a number gets `{prefix}-{n}` to call out meanwhile.
fn number_provisionally(conn: &Connection, m: &mut Mutation, prefix: &str) -> Result<()> {
    let wants = m.table == "order_header"
        && matches!(m.action, Action::Insert | Action::Save)
        && m.row.get("order_no").is_none_or(Value::is_null)
        && m.row.get("provisional_no").is_none_or(Value::is_null);
    if !wants {
        return Ok(());
    }
    let n = sql::meta_i64(conn, meta::PROVISIONAL_NEXT)?.max(0) + 1;
    sql::set_meta(conn, meta::PROVISIONAL_NEXT, &n.to_string())?;
    m.row.insert(
        "provisional_no".into(),
        Value::String(format!("{prefix}-{n}")),
    );
    Ok(())
}

fn action_name(a: Action) -> &'static str {
    match a {
        Action::Insert => "insert",
        Action::Merge => "merge",
        Action::Save => "save",
        Action::Delete => "delete",
    }
}
