//! Keeps the store's bookkeeping bounded by time, not history: the journal, the mutation ids
//! and the tombstones of closed days are dropped once no node can still need them.
//!
//! When that is: a week after the day was closed. A journal entry (and a tombstone) is kept
//! while its hub version is above the `to_v` of the newest Z report taken at least
//! [`KEEP_DAYS`] ago; a mutation id is kept [`KEEP_DAYS`] after it was applied.
//! - The journal is what a node that steps down replays into the winner, and what a node
//!   copies from the hub. Every node online copies it within a second of a write, so after a
//!   week every node that followed the hub holds it; a node switched off for longer simply
//!   follows the hub it finds and copies its snapshot. What is given up: a lineage cut off
//!   from the shop's hub for more than a week (a partition, or a PC that served alone for a
//!   week) can no longer hand back its writes into days closed a week before.
//! - Mutation ids make a retried request change nothing. A till retries its outbox until the
//!   hub confirms; a retry more than a week after the first attempt is judged by its ids and
//!   bases instead (an insert of a row that exists is refused, not applied twice).
//! - Rows themselves (orders, shifts, Z reports) are never pruned: history stays searchable.
//!
//! Freed pages are reused by new writes, so the file stops growing by these tables; the
//! space is not handed back to the file system (no VACUUM, which would block the hub).

use rusqlite::params;

use crate::{Result, Store};

/// Days a closed day's journal, tombstones and mutation ids are kept.
pub const KEEP_DAYS: i64 = 7;

/// Rows deleted per transaction: the writer is never held for long.
const CHUNK: i64 = 2000;

/// What one prune removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pruned {
    pub journal: usize,
    pub tombstones: usize,
    pub mutation_ids: usize,
}

impl Store {
    /// Drops the journal entries, tombstones and mutation ids no node can still need (see the
    /// module's rules), as of `now_ms` (milliseconds since the epoch).
    pub fn prune_history(&self, now_ms: i64) -> Result<Pruned> {
        let keep_ms = KEEP_DAYS * 24 * 3600 * 1000;
        let cutoff_at = capsule_protocol::ms_to_rfc3339(now_ms - keep_ms);
        let cutoff_v: Option<i64> = self.with_reader(|c| {
            use rusqlite::OptionalExtension as _;
            Ok(c.query_row(
                "SELECT to_v FROM z_report WHERE taken_at <= ?1 ORDER BY number DESC LIMIT 1",
                [&cutoff_at],
                |r| r.get(0),
            )
            .optional()?)
        })?;
        let mut out = Pruned::default();
        if let Some(v) = cutoff_v {
            out.journal = self.delete_in_chunks(
                "DELETE FROM _journal WHERE rowid IN (SELECT rowid FROM _journal WHERE v <= ?1 LIMIT ?2)",
                v,
            )?;
            out.tombstones = self.delete_in_chunks(
                "DELETE FROM _gone WHERE (entity, id) IN (SELECT entity, id FROM _gone WHERE v <= ?1 LIMIT ?2)",
                v,
            )?;
        }
        out.mutation_ids = self.delete_in_chunks(
            "DELETE FROM _mutation WHERE mid IN (SELECT mid FROM _mutation WHERE applied_at <= ?1 LIMIT ?2)",
            now_ms - keep_ms,
        )?;
        Ok(out)
    }

    fn delete_in_chunks(&self, sql: &str, upto: i64) -> Result<usize> {
        let mut total = 0;
        loop {
            let n = {
                let conn = self.writer();
                conn.prepare_cached(sql)?.execute(params![upto, CHUNK])?
            };
            total += n;
            if n < CHUNK as usize {
                return Ok(total);
            }
        }
    }
}
