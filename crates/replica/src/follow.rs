//! Following the hub: connect, catch up, then capsule -> plan -> pull -> merge, burst by burst.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use capsule_protocol::{BatchPull, Capsule, ErrorBody, Frame, Snapshot};
use capsule_store::{Store, meta};
use futures_util::StreamExt;
use rand::Rng;
use tokio_tungstenite::tungstenite::Message;

use crate::link::{Link, LinkState};
use crate::{LocalChange, OnChange, ReplicaError, Result, ws_url};

/// Most capsules gathered into one burst before it is processed.
const MAX_BURST: usize = 2000;
/// How long a burst stays open for more frames once one has arrived.
const BURST_WINDOW: Duration = Duration::from_millis(3);
/// Ids per batch pull (the hub accepts up to 500).
const IDS_PER_PULL: usize = 200;
/// The hub pings every 10 s; this much silence means the link is dead even if TCP has not
/// noticed (Wi-Fi gone).
const SILENCE_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, Clone)]
pub struct FollowConfig {
    /// Base URL of the hub, `http://host:port`.
    pub hub_url: String,
    pub min_backoff: Duration,
    pub max_backoff: Duration,
}

impl FollowConfig {
    pub fn new(hub_url: impl Into<String>) -> FollowConfig {
        FollowConfig {
            hub_url: hub_url.into().trim_end_matches('/').to_string(),
            min_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(3),
        }
    }
}

/// Keeps `store` following the hub for ever: reconnects with capped, jittered backoff.
/// Local changes are announced through `ui` for the node's own screens.
pub async fn follow(store: Arc<Store>, config: FollowConfig, link: Link, ui: OnChange) {
    let http = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(3))
        .timeout(Duration::from_secs(60))
        .build()
        .expect("a plain HTTP client builds");
    let mut backoff = config.min_backoff;
    loop {
        match session(&store, &config, &link, &ui, &http).await {
            Ok(()) => backoff = config.min_backoff,
            Err(e) => {
                tracing::warn!(error = %e, hub = %config.hub_url, "link to hub lost");
                link.set_offline(e.to_string());
            }
        }
        let jitter = rand::rng().random_range(0..=backoff.as_millis() as u64 / 2);
        tokio::time::sleep(backoff + Duration::from_millis(jitter)).await;
        backoff = (backoff * 2).min(config.max_backoff);
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> capsule_store::Result<T> + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ReplicaError::Protocol(format!("task failed: {e}")))?
        .map_err(Into::into)
}

/// One connection's life. Returns Ok when the hub asked us to resynchronise.
async fn session(
    store: &Arc<Store>,
    config: &FollowConfig,
    link: &Link,
    ui: &OnChange,
    http: &reqwest::Client,
) -> Result<()> {
    let (mut ws, _) = tokio::time::timeout(
        Duration::from_secs(5),
        tokio_tungstenite::connect_async(ws_url(&config.hub_url)),
    )
    .await
    .map_err(|_| ReplicaError::Unreachable("connect timed out".into()))?
    .map_err(|e| ReplicaError::Unreachable(e.to_string()))?;
    let hello = match next_frame(&mut ws).await? {
        Some(Frame::Hello { node_id, seq, .. }) => (node_id, seq),
        other => {
            return Err(ReplicaError::Protocol(format!(
                "expected hello, got {other:?}"
            )));
        }
    };
    link.set_hub(&hello.0);
    link.set_state(LinkState::Syncing);

    let s = store.clone();
    let (local_seq, local_hub) = blocking(move || {
        Ok((
            s.meta_i64(meta::STREAM_SEQ)?,
            s.meta_text(meta::HUB_NODE_ID)?,
        ))
    })
    .await?;
    let mut applied = local_seq;
    // Nothing happened since we last merged: the local copy is current. Anything else gets a
    // fresh snapshot (incremental replay from the hub's change log is the next step).
    if local_hub.as_deref() != Some(hello.0.as_str()) || local_seq != hello.1 {
        let snap: Snapshot = get_json(http, &format!("{}/api/snapshot", config.hub_url)).await?;
        applied = snap.seq;
        let s = store.clone();
        blocking(move || s.load_snapshot(&snap)).await?;
        ui(LocalChange::Reset);
        tracing::info!(seq = applied, "loaded snapshot from hub");
    }
    link.set_seq(applied);
    link.set_state(LinkState::Online);

    loop {
        let Some(first) = tokio::time::timeout(SILENCE_TIMEOUT, next_frame(&mut ws))
            .await
            .map_err(|_| ReplicaError::Unreachable("hub silent for 30 s".into()))??
        else {
            return Err(ReplicaError::Unreachable("hub closed the stream".into()));
        };
        let mut burst = vec![first];
        while burst.len() < MAX_BURST {
            match tokio::time::timeout(BURST_WINDOW, next_frame(&mut ws)).await {
                Ok(Ok(Some(f))) => burst.push(f),
                Ok(Ok(None)) | Err(_) => break,
                Ok(Err(e)) => return Err(e),
            }
        }
        let mut capsules = Vec::new();
        let mut last = applied;
        for frame in burst {
            match frame {
                Frame::Capsule { seq, capsule } if seq > last => {
                    if seq != last + 1 {
                        return Err(ReplicaError::Protocol(format!(
                            "gap in stream: expected {}, got {seq}",
                            last + 1
                        )));
                    }
                    last = seq;
                    capsules.push(capsule);
                }
                Frame::Capsule { .. } => {} // already covered by the snapshot
                Frame::Lagged { missed } => {
                    tracing::warn!(missed, "fell behind the hub; resynchronising");
                    return Ok(());
                }
                Frame::Hello { .. } | Frame::Reset { .. } => {}
            }
        }
        if capsules.is_empty() {
            continue;
        }
        if capsules.len() > 50 {
            link.set_state(LinkState::Syncing);
        }
        apply_burst(store, config, ui, http, capsules).await?;
        let s = store.clone();
        blocking(move || s.set_meta(meta::STREAM_SEQ, &last.to_string())).await?;
        applied = last;
        link.set_seq(applied);
        link.set_state(LinkState::Online);
    }
}

type WsStream =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// The next protocol frame; `None` when the hub closed the connection. Pings count as life.
async fn next_frame(ws: &mut WsStream) -> Result<Option<Frame>> {
    loop {
        match ws.next().await {
            None | Some(Ok(Message::Close(_))) => return Ok(None),
            Some(Err(e)) => return Err(ReplicaError::Unreachable(e.to_string())),
            Some(Ok(Message::Text(t))) => {
                return serde_json::from_str(t.as_str())
                    .map(Some)
                    .map_err(|e| ReplicaError::Protocol(format!("bad frame {t}: {e}")));
            }
            Some(Ok(_)) => continue,
        }
    }
}

/// What a burst of capsules asks this replica to do, given what it already holds.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct PullPlan {
    /// Entities deleted on the hub (newest capsule for them says gone).
    pub gone: Vec<Capsule>,
    /// Per entity: the ids to pull and the union of parts needed.
    pub pulls: BTreeMap<String, (Vec<String>, BTreeSet<String>)>,
}

/// Plans a burst: newest news per entity+id, dropping parts already as new here. `local`
/// gives the local part versions of an entity row (None when the row is not here, which
/// asks for every part); `all_parts` lists an entity's parts.
pub fn plan(
    capsules: Vec<Capsule>,
    mut local: impl FnMut(&str, &str) -> Option<BTreeMap<String, i64>>,
    all_parts: impl Fn(&str) -> Vec<String>,
) -> PullPlan {
    #[derive(Default)]
    struct News {
        parts: BTreeMap<String, i64>,
        gone_at: Option<i64>,
        newest: i64,
        capsule: Option<Capsule>,
    }
    let mut news: BTreeMap<(String, String), News> = BTreeMap::new();
    for c in capsules {
        let n = news.entry((c.entity.clone(), c.id.clone())).or_default();
        if c.gone {
            n.gone_at = Some(n.gone_at.map_or(c.v, |g| g.max(c.v)));
            n.parts.retain(|_, v| *v > c.v);
        } else {
            for p in &c.parts {
                let v = n.parts.entry(p.clone()).or_insert(c.v);
                *v = (*v).max(c.v);
            }
        }
        if c.v >= n.newest {
            n.newest = c.v;
            n.capsule = Some(c);
        }
    }
    let mut out = PullPlan::default();
    for ((entity, id), n) in news {
        let capsule = n.capsule.expect("every entry saw a capsule");
        if capsule.gone {
            out.gone.push(capsule);
            continue;
        }
        let needed: BTreeSet<String> = match local(&entity, &id) {
            // Not here (or deleted and re-created): the whole entity.
            None => all_parts(&entity).into_iter().collect(),
            Some(_) if n.gone_at.is_some() => all_parts(&entity).into_iter().collect(),
            Some(have) => n
                .parts
                .into_iter()
                .filter(|(p, v)| have.get(p).copied().unwrap_or(0) < *v)
                .map(|(p, _)| p)
                .collect(),
        };
        if needed.is_empty() {
            continue;
        }
        let entry = out.pulls.entry(entity).or_default();
        entry.0.push(id);
        entry.1.extend(needed);
    }
    out
}

async fn apply_burst(
    store: &Arc<Store>,
    config: &FollowConfig,
    ui: &OnChange,
    http: &reqwest::Client,
    capsules: Vec<Capsule>,
) -> Result<()> {
    let s = store.clone();
    let plan = blocking(move || {
        let schema = s.schema().clone();
        let mut err = None;
        let p = plan(
            capsules,
            |e, id| match s.part_versions(e, id) {
                Ok(v) => v,
                Err(e) => {
                    err = Some(e);
                    None
                }
            },
            |e| schema.entity(e).map(|e| e.part_names()).unwrap_or_default(),
        );
        match err {
            Some(e) => Err(e),
            None => Ok(p),
        }
    })
    .await?;

    for capsule in plan.gone {
        let s = store.clone();
        if let Some(local) = blocking(move || s.apply_gone(&capsule)).await? {
            ui(LocalChange::Changed(local));
        }
    }
    for (entity, (ids, parts)) in plan.pulls {
        let parts: Vec<String> = parts.into_iter().collect();
        for chunk in ids.chunks(IDS_PER_PULL) {
            let url = format!(
                "{}/api/entities?entity={entity}&ids={}&parts={}",
                config.hub_url,
                chunk.join(","),
                parts.join(",")
            );
            let pull: BatchPull = get_json(http, &url).await?;
            let s = store.clone();
            let outcome = blocking(move || s.merge_pulled(&pull)).await?;
            for c in outcome.changed {
                ui(LocalChange::Changed(c));
            }
        }
    }
    Ok(())
}

pub(crate) async fn get_json<T: serde::de::DeserializeOwned>(
    http: &reqwest::Client,
    url: &str,
) -> Result<T> {
    let resp = http
        .get(url)
        .send()
        .await
        .map_err(|e| ReplicaError::Unreachable(e.to_string()))?;
    let status = resp.status();
    if !status.is_success() {
        let message = resp
            .json::<ErrorBody>()
            .await
            .map(|b| b.error)
            .unwrap_or_default();
        return Err(ReplicaError::Hub {
            status: status.as_u16(),
            message,
        });
    }
    resp.json()
        .await
        .map_err(|e| ReplicaError::Protocol(format!("bad answer from {url}: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cap(entity: &str, id: &str, parts: &[&str], v: i64) -> Capsule {
        Capsule {
            entity: entity.into(),
            id: id.into(),
            parts: parts.iter().map(|p| p.to_string()).collect(),
            v,
            ts: 0,
            source: "t".into(),
            gone: false,
        }
    }

    fn all(_: &str) -> Vec<String> {
        vec!["header".into(), "status".into(), "totals".into()]
    }

    #[test]
    fn a_burst_is_deduplicated_and_batched_per_entity() {
        let local = |_: &str, id: &str| {
            (id != "new").then(|| BTreeMap::from([("status".into(), 5), ("totals".into(), 5)]))
        };
        let p = plan(
            vec![
                cap("order", "a", &["status"], 6),
                cap("order", "a", &["status", "totals"], 7),
                cap("order", "b", &["totals"], 4),
                cap("order", "new", &["status"], 8),
                cap("job", "j", &["status"], 9),
            ],
            local,
            all,
        );
        // b's capsule is older than what is here: nothing to pull for it.
        assert_eq!(p.pulls["order"].0, ["a", "new"]);
        assert_eq!(
            p.pulls["order"].1,
            BTreeSet::from(["header".into(), "status".into(), "totals".into()])
        );
        assert_eq!(p.pulls["job"].0, ["j"]);
        assert!(p.gone.is_empty());
    }

    #[test]
    fn capsules_already_reflected_locally_plan_nothing() {
        let local = |_: &str, _: &str| Some(BTreeMap::from([("status".into(), 10)]));
        let p = plan(
            vec![
                cap("order", "a", &["status"], 9),
                cap("order", "a", &["status"], 10),
            ],
            local,
            all,
        );
        assert_eq!(p, PullPlan::default());
    }

    #[test]
    fn the_newest_capsule_decides_between_gone_and_pull() {
        let local = |_: &str, _: &str| Some(BTreeMap::from([("status".into(), 1)]));
        let mut gone = cap("order", "a", &[], 5);
        gone.gone = true;
        let p = plan(
            vec![cap("order", "a", &["status"], 4), gone.clone()],
            local,
            all,
        );
        assert_eq!(p.gone, [gone.clone()]);
        assert!(p.pulls.is_empty());
        // Re-created after the delete: pull everything.
        let p = plan(vec![gone, cap("order", "a", &["status"], 6)], local, all);
        assert!(p.gone.is_empty());
        assert_eq!(p.pulls["order"].1.len(), 3);
    }
}
