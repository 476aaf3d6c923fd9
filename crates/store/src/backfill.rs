//! Copying the shop's history in pages: a node that will hold every row opens for business
//! with a day snapshot (open business and the whole current day), then fills in the past one
//! page of entities at a time, each merged under the same version and tombstone rules as any
//! other merge ([`Store::merge_in`]). Until the last page is in, it may not lead
//! ([`Store::history_complete`]): a hub must reprint any receipt and serve any Z, and a full
//! node that followed a hub without the history would never get it back.

use capsule_protocol::{BackfillPage, BatchPull, PullWant, TableRole};
use rusqlite::{Connection, TransactionBehavior};

use crate::sql::{self, q};
use crate::{Result, Store, StoreError};

/// Where the copy of the history stands (`_meta`); absent when the history is whole.
const ENTITY: &str = "backfill_entity";
/// The id the next page starts after (empty: the entity's first page).
const AFTER: &str = "backfill_after";
/// Counts the snapshots that restarted the copy: a page asked for before the latest one
/// belongs to data that has since been replaced, and is dropped.
const GENERATION: &str = "backfill_generation";

/// Most entities one `GET /api/backfill` page carries.
pub const MAX_BACKFILL_PAGE: usize = 500;
/// Entities merged per transaction, by a follower's merges and the history copy alike: a
/// cashier's own write waits for one such merge at most, not for a whole pull or page. Each
/// entity's parts merge on their own versions, so a pull merged in pieces ends the same.
pub const MERGE_CHUNK: usize = 32;

/// The next page a node copying its history asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackfillAt {
    pub generation: i64,
    pub entity: String,
    /// None: the entity's first page.
    pub after: Option<String>,
}

/// After a snapshot: a whole one ends any copy in progress; any other starts it again from
/// the first entity.
pub(crate) fn restart(tx: &Connection, store: &Store, whole: bool) -> Result<()> {
    if whole {
        tx.execute(
            "DELETE FROM _meta WHERE key IN (?1, ?2)",
            rusqlite::params![ENTITY, AFTER],
        )?;
        return Ok(());
    }
    let generation = sql::meta_i64(tx, GENERATION)? + 1;
    sql::set_meta(tx, GENERATION, &generation.to_string())?;
    sql::set_meta(tx, ENTITY, &entity_order(store)[0])?;
    sql::set_meta(tx, AFTER, "")?;
    Ok(())
}

/// Entities in the order their tables are created (parents first).
fn entity_order(store: &Store) -> Vec<String> {
    store
        .schema
        .tables_parent_first()
        .into_iter()
        .filter_map(|t| match &t.role {
            TableRole::Entity { entity } => Some(entity.clone()),
            TableRole::Child { .. } => None,
        })
        .collect()
}

fn position(conn: &Connection) -> Result<Option<BackfillAt>> {
    let Some(entity) = sql::meta_text(conn, ENTITY)? else {
        return Ok(None);
    };
    let after = sql::meta_text(conn, AFTER)?.filter(|a| !a.is_empty());
    Ok(Some(BackfillAt {
        generation: sql::meta_i64(conn, GENERATION)?,
        entity,
        after,
    }))
}

impl Store {
    /// Whether this node holds the shop's whole history (it loaded a full snapshot, copied
    /// every page after a partial one, or never followed anyone). A node without it may not
    /// lead.
    pub fn history_complete(&self) -> Result<bool> {
        self.with_reader(|c| Ok(sql::meta_text(c, ENTITY)?.is_none()))
    }

    /// The page of history to copy next, or None when the history is whole.
    pub fn backfill_at(&self) -> Result<Option<BackfillAt>> {
        self.with_reader(|c| position(c))
    }

    /// Hub side of `GET /api/backfill`: up to `limit` entities after `after` in id order
    /// (the primary key's index: the same cost for the first page as for the millionth),
    /// every part, read in one transaction.
    pub fn backfill_page(
        &self,
        entity: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<BackfillPage> {
        let e = self
            .schema
            .entity(entity)
            .ok_or_else(|| StoreError::Invalid(format!("unknown entity '{entity}'")))?;
        let limit = limit.clamp(1, MAX_BACKFILL_PAGE);
        let ids: Vec<String> = self.with_reader(|c| {
            Ok(c.prepare_cached(&format!(
                "SELECT id FROM {} WHERE id > ?1 ORDER BY id LIMIT ?2",
                q(&e.table)
            ))?
            .query_map(rusqlite::params![after.unwrap_or(""), limit as i64], |r| {
                r.get(0)
            })?
            .collect::<std::result::Result<_, _>>()?)
        })?;
        let next = (ids.len() == limit).then(|| ids[ids.len() - 1].clone());
        let mut pull = self
            .pull_wants(&[PullWant {
                entity: entity.to_string(),
                ids,
                parts: Vec::new(),
                have: Vec::new(),
            }])?
            .pop()
            .expect("one answer per want");
        // An id deleted between the two reads is simply not history any more.
        pull.missing.clear();
        Ok(BackfillPage { pull, next })
    }

    /// Merges a page fetched for `at` and moves the copy past it. False (nothing merged) when
    /// the copy is no longer at `at`: a snapshot replaced the data since the page was asked
    /// for. Versions decide per part as in every merge, so a row that changed since the page
    /// was read keeps its newer state, and a deleted one stays deleted.
    pub fn merge_backfill(&self, at: &BackfillAt, page: &BackfillPage) -> Result<bool> {
        if page.pull.entity != at.entity {
            return Err(StoreError::Invalid(format!(
                "a page of '{}' answered a request for '{}'",
                page.pull.entity, at.entity
            )));
        }
        let chunks: Vec<&[capsule_protocol::PulledItem]> = if page.pull.items.is_empty() {
            vec![&[]]
        } else {
            page.pull.items.chunks(MERGE_CHUNK).collect()
        };
        let last = chunks.len() - 1;
        for (i, items) in chunks.into_iter().enumerate() {
            let mut conn = self.writer();
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            if position(&tx)?.as_ref() != Some(at) {
                return Ok(false);
            }
            let chunk = BatchPull {
                entity: page.pull.entity.clone(),
                parts: page.pull.parts.clone(),
                items: items.to_vec(),
                missing: Vec::new(),
            };
            self.merge_in(&tx, &chunk, false)?;
            if i == last {
                self.advance(&tx, at, page.next.as_deref())?;
            }
            tx.commit()?;
        }
        Ok(true)
    }

    /// The copy's next position: the entity's next page, else the next entity's first, else
    /// done (the history is whole).
    fn advance(&self, tx: &Connection, at: &BackfillAt, next: Option<&str>) -> Result<()> {
        if let Some(next) = next {
            return sql::set_meta(tx, AFTER, next);
        }
        let order = entity_order(self);
        let following = order
            .iter()
            .skip_while(|e| **e != at.entity)
            .nth(1)
            .cloned();
        match following {
            Some(entity) => {
                sql::set_meta(tx, ENTITY, &entity)?;
                sql::set_meta(tx, AFTER, "")
            }
            None => {
                tx.execute(
                    "DELETE FROM _meta WHERE key IN (?1, ?2)",
                    rusqlite::params![ENTITY, AFTER],
                )?;
                tracing::info!("the shop's history is copied whole; this node may lead");
                Ok(())
            }
        }
    }
}
