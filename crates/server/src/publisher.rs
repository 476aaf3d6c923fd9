//! Feeds the stream from the capsule log, so frames leave strictly after their commit and in
//! stream order, whichever request committed them. Coalesces with a leading edge: a change
//! after a quiet period goes out at once; what follows inside the window waits for its end
//! and leaves as one frame. Sends each entity as its rollout mode says.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use capsule_protocol::{BatchPull, Capsule, Frame, Mode, Schema};
use capsule_store::{LoggedCapsule, Store, meta};
use tokio::sync::Notify;

use crate::metrics::FrameKind;
use crate::stream::Stream;

/// Log entries read per step.
const READ_BATCH: usize = 1000;

#[derive(Debug, Clone, Copy)]
pub struct PublisherConfig {
    /// Coalescing window; zero sends every capsule as its own frame.
    pub coalesce: Duration,
    /// Capsule-log entries kept for replay.
    pub log_keep: i64,
    /// How often idle `/ws` subscribers are pinged.
    pub ping_every: Duration,
}

impl Default for PublisherConfig {
    fn default() -> Self {
        PublisherConfig {
            coalesce: capsule_protocol::defaults::COALESCE,
            log_keep: 100_000,
            ping_every: crate::stream::PING_EVERY,
        }
    }
}

/// Per-entity rollout modes, persisted in the store so a restart keeps them.
pub struct Modes {
    store: Arc<Store>,
    modes: RwLock<HashMap<String, Mode>>,
}

const MODE_KEY_PREFIX: &str = "mode.";

impl Modes {
    pub fn load(store: Arc<Store>) -> capsule_store::Result<Modes> {
        let mut modes = HashMap::new();
        for e in store.schema().entities.keys() {
            if let Some(m) = store.meta_text(&format!("{MODE_KEY_PREFIX}{e}"))?
                && let Ok(mode) = m.parse()
            {
                modes.insert(e.clone(), mode);
            }
        }
        Ok(Modes {
            store,
            modes: RwLock::new(modes),
        })
    }

    pub fn get(&self, entity: &str) -> Mode {
        self.modes
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(entity)
            .copied()
            .unwrap_or(Mode::Capsule)
    }

    pub fn all(&self) -> BTreeMap<String, Mode> {
        self.store
            .schema()
            .entities
            .keys()
            .map(|e| (e.clone(), self.get(e)))
            .collect()
    }

    pub fn set(&self, entity: &str, mode: Mode) -> capsule_store::Result<()> {
        if self.store.schema().entity(entity).is_none() {
            return Err(capsule_store::StoreError::NotFound(format!(
                "unknown entity '{entity}'"
            )));
        }
        self.store
            .set_meta(&format!("{MODE_KEY_PREFIX}{entity}"), mode.as_str())?;
        self.modes
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(entity.to_string(), mode);
        tracing::info!(entity, mode = mode.as_str(), "rollout mode changed");
        Ok(())
    }
}

/// Merges capsules per entity+id: union of parts (in schema order), highest version, newest
/// time and source. The newest capsule of a deleted entity says gone; an entity deleted and
/// re-created inside the window is sent with every part.
pub fn coalesce(capsules: Vec<Capsule>, schema: &Schema) -> Vec<Capsule> {
    let mut order: Vec<(String, String)> = Vec::new();
    let mut merged: HashMap<(String, String), (Capsule, bool)> = HashMap::new();
    for c in capsules {
        let key = (c.entity.clone(), c.id.clone());
        match merged.get_mut(&key) {
            None => {
                order.push(key.clone());
                let was_gone = c.gone;
                merged.insert(key, (c, was_gone));
            }
            Some((m, saw_gone)) => {
                *saw_gone |= c.gone;
                for p in c.parts {
                    if !m.parts.contains(&p) {
                        m.parts.push(p);
                    }
                }
                if c.v >= m.v {
                    m.v = c.v;
                    m.source = c.source;
                    m.gone = c.gone;
                }
                m.ts = m.ts.max(c.ts);
            }
        }
    }
    order
        .into_iter()
        .map(|key| {
            let (mut c, saw_gone) = merged.remove(&key).expect("key recorded");
            let e = schema.entity(&c.entity);
            if c.gone {
                c.parts.clear();
            } else if let Some(e) = e {
                if saw_gone {
                    c.parts = e.part_names();
                } else {
                    c.parts = e
                        .parts
                        .iter()
                        .filter(|p| c.parts.contains(&p.name))
                        .map(|p| p.name.clone())
                        .collect();
                }
            }
            c
        })
        .collect()
}

pub struct Publisher {
    notify: Arc<Notify>,
    task: tokio::task::JoinHandle<()>,
}

impl Publisher {
    pub fn start(
        store: Arc<Store>,
        stream: Stream,
        modes: Arc<Modes>,
        config: PublisherConfig,
    ) -> capsule_store::Result<Publisher> {
        let start = store.meta_i64(meta::STREAM_SEQ)?;
        stream.set_position(start, store.meta_i64(meta::VERSION)?);
        let notify = Arc::new(Notify::new());
        let wake = notify.clone();
        let task = tokio::spawn(async move {
            let mut last = start;
            let mut pruned_upto = 0;
            let mut last_flush: Option<Instant> = None;
            loop {
                wake.notified().await;
                if let Some(at) = last_flush {
                    let since = at.elapsed();
                    if since < config.coalesce {
                        tokio::time::sleep(config.coalesce - since).await;
                    }
                }
                loop {
                    let s = store.clone();
                    let batch = match crate::short_blocking(move || {
                        s.capsules_since(last, READ_BATCH)
                    })
                    .await
                    {
                        Ok(Ok(b)) => b,
                        Ok(Err(e)) => {
                            tracing::error!(error = %e, "reading the capsule log failed; retrying");
                            tokio::time::sleep(Duration::from_millis(200)).await;
                            continue;
                        }
                        Err(e) => {
                            tracing::error!(error = %e, "capsule log reader panicked");
                            break;
                        }
                    };
                    let Some(end) = batch.last().map(|c| c.seq) else {
                        break;
                    };
                    stream.metrics().capsules_logged.add(batch.len() as u64);
                    if config.coalesce.is_zero() {
                        for entry in batch {
                            publish_one(&store, &stream, &modes, entry).await;
                        }
                    } else {
                        publish_window(&store, &stream, &modes, batch).await;
                    }
                    last = end;
                }
                last_flush = Some(Instant::now());
                // Prune in steps of 1000 entries, not on every flush.
                let upto = last - config.log_keep;
                if upto > pruned_upto + 1000 {
                    let s = store.clone();
                    if let Ok(Ok(_)) = tokio::task::spawn_blocking(move || s.prune_log(upto)).await
                    {
                        pruned_upto = upto;
                    }
                }
            }
        });
        Ok(Publisher { notify, task })
    }

    /// Wakes the publisher after a commit.
    pub fn notifier(&self) -> Arc<Notify> {
        self.notify.clone()
    }
}

impl Drop for Publisher {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Full rows of `ids` (every part), as the legacy stream pushed them.
async fn rows_of(store: &Arc<Store>, entity: &str, ids: Vec<String>) -> Option<BatchPull> {
    let s = store.clone();
    let entity = entity.to_string();
    match tokio::task::spawn_blocking(move || s.pull_many(&entity, &ids, None)).await {
        Ok(Ok(p)) => Some(p),
        other => {
            tracing::error!(?other, "reading rows for the legacy stream failed");
            None
        }
    }
}

async fn publish_one(store: &Arc<Store>, stream: &Stream, modes: &Modes, entry: LoggedCapsule) {
    let mode = modes.get(&entry.capsule.entity);
    let mut rows_sent = false;
    if mode.sends_rows()
        && let Some(pull) =
            rows_of(store, &entry.capsule.entity, vec![entry.capsule.id.clone()]).await
    {
        stream.metrics().rows_sent.add(pull.items.len() as u64);
        let frame = Frame::Rows {
            seq: entry.seq,
            from: entry.seq,
            ts: entry.capsule.ts,
            rows: vec![pull],
        };
        stream.publish_frame(&frame, FrameKind::Rows);
        rows_sent = true;
    }
    // A legacy entity whose rows could not be read goes out as a capsule instead: the range
    // must never pass without it.
    if mode.sends_capsules() || !rows_sent {
        stream.metrics().capsules_sent.inc();
        stream.publish(entry.seq, entry.capsule);
    }
}

async fn publish_window(
    store: &Arc<Store>,
    stream: &Stream,
    modes: &Modes,
    batch: Vec<LoggedCapsule>,
) {
    let from = batch.first().map_or(0, |c| c.seq);
    let seq = batch.last().map_or(0, |c| c.seq);
    let ts = batch.iter().map(|c| c.capsule.ts).max().unwrap_or(0);
    let items = coalesce(
        batch.into_iter().map(|c| c.capsule).collect(),
        store.schema(),
    );
    let mut row_items: BTreeMap<String, Vec<Capsule>> = BTreeMap::new();
    let mut capsules = Vec::new();
    for c in items {
        stream.note_version(c.v);
        let mode = modes.get(&c.entity);
        if mode.sends_rows() {
            row_items
                .entry(c.entity.clone())
                .or_default()
                .push(c.clone());
        }
        if mode.sends_capsules() {
            capsules.push(c);
        }
    }
    let mut rows = Vec::new();
    for (entity, items) in row_items {
        let ids = items.iter().map(|c| c.id.clone()).collect();
        match rows_of(store, &entity, ids).await {
            Some(pull) => {
                stream.metrics().rows_sent.add(pull.items.len() as u64);
                rows.push(pull);
            }
            // The rows could not be read: signal these entities as capsules instead, so tills
            // pull them; the range must never pass without them.
            None => {
                for c in items {
                    if !capsules.contains(&c) {
                        capsules.push(c);
                    }
                }
            }
        }
    }
    if !rows.is_empty() {
        stream.publish_frame(
            &Frame::Rows {
                seq,
                from,
                ts,
                rows,
            },
            FrameKind::Rows,
        );
    }
    if !capsules.is_empty() {
        stream.metrics().capsules_sent.add(capsules.len() as u64);
        stream.publish_frame(
            &Frame::Capsules {
                seq,
                from,
                items: capsules,
            },
            FrameKind::Capsule,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cap(id: &str, parts: &[&str], v: i64, gone: bool) -> Capsule {
        Capsule {
            entity: "order".into(),
            id: id.into(),
            parts: parts.iter().map(|p| p.to_string()).collect(),
            v,
            ts: v * 10,
            source: format!("s{v}"),
            gone,
        }
    }

    #[test]
    fn coalescing_unions_parts_and_keeps_the_newest_version() {
        let schema = Schema::builtin();
        let out = coalesce(
            vec![
                cap("a", &["totals"], 1, false),
                cap("b", &["status"], 2, false),
                cap("a", &["lines", "status"], 3, false),
            ],
            &schema,
        );
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].id, "a");
        assert_eq!(out[0].parts, ["lines", "status", "totals"]);
        assert_eq!((out[0].v, out[0].ts, out[0].source.as_str()), (3, 30, "s3"));
        assert_eq!(out[1].id, "b");
    }

    #[test]
    fn a_delete_wins_unless_the_entity_comes_back() {
        let schema = Schema::builtin();
        let out = coalesce(
            vec![cap("a", &["status"], 1, false), cap("a", &[], 2, true)],
            &schema,
        );
        assert!(out[0].gone && out[0].parts.is_empty());
        let out = coalesce(
            vec![cap("a", &[], 2, true), cap("a", &["status"], 3, false)],
            &schema,
        );
        assert!(!out[0].gone);
        assert_eq!(out[0].parts, schema.entity("order").unwrap().part_names());
    }
}
