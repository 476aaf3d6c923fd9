//! Following the hub: connect, catch up, then capsule -> plan -> pull -> merge, burst by burst.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use capsule_protocol::defaults::{IDS_PER_PULL, IDS_PER_REQUEST, MAX_PULL_WANTS};
use capsule_protocol::{
    BatchPull, Capsule, ChangedSince, Changes, ErrorBody, Frame, JournalPage, PullAnswer,
    PullRequest, PullWant, now_ms,
};
use capsule_store::{MERGE_CHUNK, Store, meta};
use futures_util::{FutureExt, StreamExt};
use rand::Rng;
use tokio_tungstenite::tungstenite::Message;

use crate::link::{Link, LinkState};
use crate::metrics::ReplicaMetrics;
use crate::{HubTarget, LocalChange, OnChange, ReplicaError, Result, ws_url};

/// Largest frame a till accepts from its hub's stream.
const HUB_FRAME_LIMIT: usize = 16 * 1024 * 1024;
/// Most frames gathered into one burst before it is processed.
const MAX_BURST: usize = 2000;

/// Entities remembered as received whole in rows frames (memory bound).
const MAX_ROWS_SEEN: usize = 100_000;
/// Failed sessions at one stream position before the next one starts from a snapshot.
const STUCK_SESSIONS: u32 = 3;
/// Attempts per REST request before the session is given up (and restarted with backoff).
const PULL_ATTEMPTS: u32 = 3;

#[derive(Debug, Clone)]
pub struct FollowConfig {
    /// Base URL of the hub, `http://host:port`.
    pub hub_url: String,
    /// This node's id, told to the hub so its dashboard can name us.
    pub node_id: String,
    /// Take light snapshots (open business only) instead of full ones.
    pub light: bool,
    /// Entities per page when copying the shop's history behind a day snapshot.
    pub history_page: usize,
    /// At most one pull per entity per window, however fast capsules come.
    pub pull_window: Duration,
    pub min_backoff: Duration,
    pub max_backoff: Duration,
    /// The hub pings every second; this much silence means the link is dead even if TCP has
    /// not noticed (Wi-Fi gone).
    pub silence_timeout: Duration,
    /// Copy the hub's journal (every node of an elected shop: one that may become hub needs it,
    /// so a write retried across a failover stays a duplicate; and any node whose rows another
    /// lineage's snapshot replaces replays from it what that lineage lacks).
    pub keep_mids: bool,
    /// How this node introduces itself on the hub's stream (`till`, `screen`).
    pub role: &'static str,
    /// Ask the hub for zstd-compressed frames (on by default; the benchmark turns it off to
    /// measure the old system's uncompressed push).
    pub compressed_frames: bool,
    /// How this node reaches the hub (TLS once paired).
    pub peers: crate::PeerClient,
}

impl FollowConfig {
    pub fn new(hub_url: impl Into<String>, node_id: impl Into<String>) -> FollowConfig {
        FollowConfig {
            hub_url: hub_url.into().trim_end_matches('/').to_string(),
            node_id: node_id.into(),
            light: false,
            history_page: crate::HISTORY_PAGE as usize,
            pull_window: capsule_protocol::defaults::PULL_WINDOW,
            min_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(3),
            silence_timeout: capsule_protocol::defaults::SILENCE,
            keep_mids: false,
            role: "till",
            peers: crate::PeerClient::plain(),
            compressed_frames: true,
        }
    }
}

/// Everything a following till shares with its session loop.
pub(crate) struct Ctx<'a> {
    pub(crate) store: &'a Arc<Store>,
    pub(crate) config: &'a FollowConfig,
    link: &'a Link,
    ui: &'a OnChange,
    http: &'a reqwest::Client,
    pub(crate) metrics: &'a ReplicaMetrics,
    /// Set once the hub turned out to have no `POST /api/pull` (older than this till): the
    /// rest of the session pulls entity by entity without asking again.
    old_hub: std::sync::atomic::AtomicBool,
    /// Told when the session has settled on the hub's data (after its first catch-up and
    /// after every snapshot): the history copy may take its next page from this hub.
    pub(crate) settled: tokio::sync::Notify,
}

/// Keeps `store` following the hub `target` points at, for ever: reconnects with capped,
/// jittered backoff, and at once when the target moves. Local changes are announced through
/// `ui` for the node's own screens.
pub async fn follow(
    store: Arc<Store>,
    config: FollowConfig,
    mut target: HubTarget,
    link: Link,
    ui: OnChange,
    metrics: Arc<ReplicaMetrics>,
) {
    store.set_keeps_journal(config.keep_mids);
    let mut backoff = config.min_backoff;
    // Sessions that failed in a row without the stored position moving. A capsule this till
    // cannot pull or merge (say, during a schema upgrade) would otherwise be replayed and fail
    // for ever; after a few tries a snapshot moves past it.
    let mut stuck: (i64, u32) = (-1, 0);
    loop {
        let Some(url) = target.get() else {
            link.set_offline("no hub is known yet".into());
            target.changed().await;
            continue;
        };
        let mut config = config.clone();
        // Each session looks again: a node paired since the last one speaks TLS from now on.
        config.hub_url = config.peers.base(&url);
        let http = config.peers.http().clone();
        let ctx = Ctx {
            store: &store,
            config: &config,
            link: &link,
            ui: &ui,
            http: &http,
            metrics: &metrics,
            old_hub: std::sync::atomic::AtomicBool::new(false),
            settled: tokio::sync::Notify::new(),
        };
        metrics.reconnects.inc();
        let force_snapshot = stuck.1 >= STUCK_SESSIONS;
        let mut moved = target.clone();
        // The history copy runs beside the session, from the same hub, and stops with it.
        let outcome = tokio::select! {
            r = session(&ctx, force_snapshot) => Some(r),
            _ = moved.changed() => None,
            never = crate::backfill::copy_history(&ctx) => match never {},
        };
        match outcome {
            // The hub moved: follow the new one now, not after a backoff.
            None => {
                backoff = config.min_backoff;
                continue;
            }
            Some(Ok(())) => backoff = config.min_backoff,
            Some(Err(e)) => {
                tracing::warn!(error = %e, hub = %config.hub_url, "link to hub lost");
                link.set_offline(e.to_string());
                let s = store.clone();
                let at = tokio::task::spawn_blocking(move || s.meta_i64(meta::STREAM_SEQ))
                    .await
                    .ok()
                    .and_then(|r| r.ok())
                    .unwrap_or(-1);
                // Only failures of the data itself count, not a hub that is away.
                let data_fault = !matches!(e, ReplicaError::Unreachable(_));
                stuck = match (data_fault, at == stuck.0 && !force_snapshot) {
                    (false, _) => (at, 0),
                    (true, true) => (at, stuck.1 + 1),
                    (true, false) => (at, 1),
                };
            }
        }
        let jitter = rand::rng().random_range(0..=backoff.as_millis() as u64 / 2);
        let mut moved = target.clone();
        tokio::select! {
            _ = tokio::time::sleep(backoff + Duration::from_millis(jitter)) => {}
            _ = moved.changed() => {}
        }
        backoff = (backoff * 2).min(config.max_backoff);
    }
}

/// Runs a store call off the async threads.
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> capsule_store::Result<T> + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ReplicaError::Protocol(format!("task failed: {e}")))?
        .map_err(Into::into)
}

/// For the short store calls on a frame's way to the screen (plan, merge): run on this worker
/// with `block_in_place` (its other tasks move elsewhere) instead of handing the call to a
/// blocking thread and back, two thread wake-ups that cost an idle till more than the call.
async fn inline<T: Send + 'static>(
    f: impl FnOnce() -> capsule_store::Result<T> + Send + 'static,
) -> Result<T> {
    match tokio::runtime::Handle::current().runtime_flavor() {
        tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(f).map_err(Into::into)
        }
        _ => blocking(f).await,
    }
}

/// Replaces local data with a snapshot and copies the hub's journal up to it; returns the
/// stream position it is consistent at. A node joining with nothing (`first_join`) that will
/// hold every row takes the day only and copies the history behind it
/// ([`crate::backfill::copy_history`]): it is selling in a second, not after the whole
/// history; a node that already holds data takes every row at once, so it never stops
/// holding its history.
async fn take_snapshot(ctx: &Ctx<'_>, first_join: bool) -> Result<i64> {
    let scope = match (ctx.config.light, first_join) {
        (true, _) => "?light=1",
        (false, true) => "?scope=day",
        (false, false) => "",
    };
    let url = format!("{}/api/snapshot{scope}", ctx.config.hub_url);
    let (seq, v) = load_streamed(ctx, &url).await?;
    // The journal before anything else: until it is here this node cannot lead, and what it
    // held before the snapshot waits to be compared with it.
    fetch_journal(ctx, v).await?;
    ctx.metrics.snapshots.inc();
    (ctx.ui)(LocalChange::Reset);
    ctx.settled.notify_one();
    tracing::info!(seq, scope, "loaded snapshot from hub");
    Ok(seq)
}

/// The hub's answer that was not a success, with its JSON `{"error"}` when it sent one.
fn hub_refused(status: reqwest::StatusCode, body: &[u8]) -> ReplicaError {
    let message = serde_json::from_slice::<ErrorBody>(body)
        .map(|b| b.error)
        .unwrap_or_default();
    ReplicaError::Hub {
        status: status.as_u16(),
        message,
    }
}

/// How long a snapshot's answer may stall between two chunks before the load is given up.
const SNAPSHOT_STALL: Duration = Duration::from_secs(30);

/// GETs a snapshot and loads it as it arrives (`Store::load_snapshot_from`): the answer is
/// never held whole, so joining a shop with years of history costs a row of memory, not the
/// history's. All or nothing: a cut or stalled answer leaves the data as it was.
async fn load_streamed(ctx: &Ctx<'_>, url: &str) -> Result<(i64, i64)> {
    ctx.metrics.rest_requests.inc();
    let fail = |e: ReplicaError| {
        ctx.metrics.rest_failures.inc();
        e
    };
    let mut resp = ctx
        .http
        .get(url)
        .send()
        .await
        .map_err(|e| fail(ReplicaError::Unreachable(e.to_string())))?;
    let status = resp.status();
    if !status.is_success() {
        let body = resp.bytes().await.unwrap_or_default();
        return Err(fail(hub_refused(status, &body)));
    }
    let (tx, rx) = tokio::sync::mpsc::channel::<std::io::Result<Vec<u8>>>(8);
    let s = ctx.store.clone();
    let load = tokio::task::spawn_blocking(move || {
        s.load_snapshot_from(ChunkReader {
            rx,
            chunk: Vec::new(),
            at: 0,
        })
    });
    loop {
        let chunk = match tokio::time::timeout(SNAPSHOT_STALL, resp.chunk()).await {
            Ok(Ok(None)) => break,
            Ok(Ok(Some(c))) => Ok(c.to_vec()),
            Ok(Err(e)) => Err(std::io::Error::other(e)),
            Err(_) => Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "the hub's snapshot stalled",
            )),
        };
        let cut = chunk.is_err();
        if let Ok(c) = &chunk {
            ctx.metrics.rest_bytes.add(c.len() as u64);
        }
        // The loader stops reading on a bad row: nothing more to hand it.
        let sent = tx.send(chunk).await;
        if sent.is_err() || cut {
            break;
        }
    }
    drop(tx);
    load.await
        .map_err(|e| ReplicaError::Protocol(format!("task failed: {e}")))?
        .map_err(|e| fail(e.into()))
}

/// The snapshot's chunks as a blocking `Read`, for the loader's thread.
struct ChunkReader {
    rx: tokio::sync::mpsc::Receiver<std::io::Result<Vec<u8>>>,
    chunk: Vec<u8>,
    /// How much of `chunk` was read.
    at: usize,
}

impl std::io::Read for ChunkReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.at == self.chunk.len() {
            match self.rx.blocking_recv() {
                Some(Ok(c)) => (self.chunk, self.at) = (c, 0),
                Some(Err(e)) => return Err(e),
                // The sender is gone: the answer ended.
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.chunk.len() - self.at);
        buf[..n].copy_from_slice(&self.chunk[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

/// One connection's life. Returns Ok when the hub asked us to resynchronise.
async fn session(ctx: &Ctx<'_>, force_snapshot: bool) -> Result<()> {
    let s = ctx.store.clone();
    let (local_seq, (local_hub, local_term), held) = blocking(move || {
        Ok((
            s.meta_i64(meta::STREAM_SEQ)?,
            s.followed_hub()?,
            s.freshness()?,
        ))
    })
    .await?;
    // Resume from where we were: the hub replays what we missed from its change log (if it
    // is the hub and term that position was counted in).
    let mut url = format!(
        "{}?node={}&role={}",
        ws_url(&ctx.config.hub_url),
        ctx.config.node_id,
        ctx.config.role
    );
    // Frames come zstd-compressed when they are long enough to gain from it.
    if ctx.config.compressed_frames {
        url.push_str("&encoding=zstd");
    }
    if let Some(hub) = &local_hub {
        url.push_str(&format!("&since={local_seq}&hub={hub}&term={local_term}"));
    }
    // Frames from the hub are bounded (a replay chunk, a coalesced window of legacy rows);
    // anything far larger is a broken or hostile peer, not data to buffer.
    let limits = tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default()
        .max_message_size(Some(HUB_FRAME_LIMIT))
        .max_frame_size(Some(HUB_FRAME_LIMIT));
    let mut ws = tokio::time::timeout(
        Duration::from_secs(5),
        ctx.config.peers.connect_ws(&url, limits),
    )
    .await
    .map_err(|_| ReplicaError::Unreachable("connect timed out".into()))?
    .map_err(|e| ReplicaError::Unreachable(e.to_string()))?;
    let (hub_id, hub_seq, lineage) =
        match next_frame(&mut ws, ctx.metrics, ctx.config.silence_timeout).await? {
            Some(Frame::Hello {
                node_id,
                seq,
                lineage,
                ..
            }) => (node_id, seq, lineage),
            other => {
                return Err(ReplicaError::Protocol(format!(
                    "expected hello, got {other:?}"
                )));
            }
        };
    ctx.link.set_hub(&hub_id);
    ctx.link.set_state(LinkState::Syncing);
    ctx.metrics
        .hub_seq
        .fetch_max(hub_seq, std::sync::atomic::Ordering::Relaxed);

    let mut applied = local_seq;
    let same_hub = local_hub.as_deref() == Some(hub_id.as_str()) && local_term == lineage.term;
    if !same_hub && local_hub.is_some() {
        // Writes the old hub confirmed but this till never saw back go to the new hub again
        // (a duplicate there, by mid, if it has them).
        let s = ctx.store.clone();
        let requeued = blocking(move || s.outbox_requeue_sent()).await?;
        tracing::info!(hub = %hub_id, term = lineage.term, requeued, "following a new hub");
    }
    if local_hub.is_none() || force_snapshot {
        // New here, or following got stuck: start from a snapshot.
        applied = take_snapshot(ctx, local_hub.is_none() && held == 0).await?;
        record_hub(ctx, &hub_id, lineage.term).await?;
    } else if !same_hub {
        // A failover. This till's data is a prefix of the new hub's when the new hub took
        // over from the hub and term this till followed and held at least as much: then only
        // what changed after this till's version is fetched. Otherwise (another lineage, a
        // partition's other side) versions cannot be compared: snapshot.
        let s = ctx.store.clone();
        let fresh = blocking(move || s.freshness()).await?;
        let prefix = lineage.prev_hub == local_hub
            && lineage.prev_term == local_term
            && fresh <= lineage.from_v;
        applied = if prefix {
            catch_up(ctx, fresh, hub_seq).await?
        } else {
            take_snapshot(ctx, false).await?
        };
        record_hub(ctx, &hub_id, lineage.term).await?;
    }
    ctx.settled.notify_one();
    ctx.link.set_seq(applied);
    ctx.metrics.set_seq(applied);
    if applied >= hub_seq {
        ctx.link.set_state(LinkState::Online);
    }

    let mut last_pass: Option<Instant> = None;
    // Entities that arrived whole in a rows frame (legacy/both mode), with that frame's
    // position: a capsule for them from the same or an earlier range asks for nothing new.
    let mut rows_seen: HashMap<(String, String), i64> = HashMap::new();
    loop {
        let Some(first) = next_frame(&mut ws, ctx.metrics, ctx.config.silence_timeout).await?
        else {
            return Err(ReplicaError::Unreachable("hub closed the stream".into()));
        };
        // Leading edge: a frame after a quiet spell is handled at once, with whatever frames
        // have already arrived; during a rush, passes are at least a pull window apart, so
        // pulls do not grow with the mutation rate.
        let deadline = match last_pass {
            Some(prev) => prev + ctx.config.pull_window,
            None => Instant::now(),
        };
        let mut burst = vec![first];
        while burst.len() < MAX_BURST {
            let left = deadline.saturating_duration_since(Instant::now());
            let frame = next_frame(&mut ws, ctx.metrics, ctx.config.silence_timeout);
            let next = if left.is_zero() {
                // Past the deadline: only frames already here. (Not a zero timeout: tokio's
                // timers tick in milliseconds, so that would wait up to one.)
                match frame.now_or_never() {
                    Some(next) => next,
                    None => break,
                }
            } else {
                match tokio::time::timeout(left, frame).await {
                    Ok(next) => next,
                    Err(_) => break,
                }
            };
            match next {
                Ok(Some(f)) => burst.push(f),
                Ok(None) => break,
                Err(e) => return Err(e),
            }
        }
        last_pass = Some(Instant::now());

        let mut capsules = Vec::new();
        let mut rows = Vec::new();
        let mut last = applied;
        for frame in burst {
            let Some((from, seq)) = frame.range() else {
                match frame {
                    Frame::Lagged { missed } => {
                        tracing::warn!(missed, "fell behind the hub; reconnecting to replay");
                        flush(ctx, rows, capsules, last).await?;
                        return Ok(());
                    }
                    Frame::TooOld { oldest } => {
                        tracing::warn!(
                            oldest,
                            since = last,
                            "the hub's log no longer reaches back; taking a snapshot"
                        );
                        rows.clear();
                        capsules.clear();
                        last = take_snapshot(ctx, false).await?;
                    }
                    _ => {}
                }
                continue;
            };
            if seq < last {
                continue; // covered by the snapshot or an earlier frame
            }
            // seq == last may be the sibling of the frame just handled (a window in `both`
            // mode sends rows and capsules over the same range): handle it; merges are
            // idempotent.
            if from > last + 1 {
                // A gap: fetch what is missing from the hub's change log before going on.
                ctx.metrics.gap_repairs.inc();
                match repair_gap(ctx, last, from - 1).await? {
                    Some(missing) => capsules.extend(missing),
                    None => {
                        rows.clear();
                        capsules.clear();
                        last = take_snapshot(ctx, false).await?;
                        if seq < last {
                            continue;
                        }
                    }
                }
            }
            last = seq;
            let covered = |c: &Capsule| {
                rows_seen
                    .get(&(c.entity.clone(), c.id.clone()))
                    .is_some_and(|s| *s >= seq)
            };
            match frame {
                Frame::Capsule { capsule, .. } => {
                    capsules.extend(Some(capsule).filter(|c| !covered(c)))
                }
                Frame::Capsules { items, .. } => {
                    capsules.extend(items.into_iter().filter(|c| !covered(c)))
                }
                Frame::Rows { rows: r, ts, .. } => {
                    if rows_seen.len() > MAX_ROWS_SEEN {
                        rows_seen.clear();
                    }
                    for pull in &r {
                        for id in pull.items.iter().map(|i| &i.id).chain(&pull.missing) {
                            rows_seen.insert((pull.entity.clone(), id.clone()), seq);
                        }
                    }
                    rows.push((ts, r));
                }
                _ => {}
            }
        }
        if capsules.len() > 50 {
            ctx.link.set_state(LinkState::Syncing);
        }
        flush(ctx, rows, capsules, last).await?;
        applied = last;
        ctx.link.set_seq(applied);
        ctx.link.set_state(LinkState::Online);
    }
}

/// Catches up with a new hub by version: the entities changed after `since` (the version
/// this till holds) are pulled like a burst of capsules. Falls back to a snapshot when the
/// hub cannot say what went away that long ago. Returns the new hub's stream position (from
/// its hello: everything before it is in its tables now).
async fn catch_up(ctx: &Ctx<'_>, mut since: i64, seq: i64) -> Result<i64> {
    let mut top = since;
    loop {
        let url = format!("{}/api/changed?since_v={since}", ctx.config.hub_url);
        let changed: ChangedSince = match get_json(ctx, &url).await {
            Ok(c) => c,
            Err(ReplicaError::Hub { status: 410, .. }) => return take_snapshot(ctx, false).await,
            Err(e) => return Err(e),
        };
        top = top.max(changed.v);
        let last = changed.items.last().map(|c| c.v);
        if changed.items.len() > 50 {
            ctx.link.set_state(LinkState::Syncing);
        }
        apply_burst(ctx, changed.items).await?;
        match last {
            Some(v) if changed.more && v > since => since = v,
            _ => break,
        }
    }
    fetch_journal(ctx, top).await?;
    let s = ctx.store.clone();
    blocking(move || s.advance_position(seq, top)).await?;
    Ok(seq)
}

async fn record_hub(ctx: &Ctx<'_>, hub: &str, term: i64) -> Result<()> {
    let (s, hub) = (ctx.store.clone(), hub.to_string());
    blocking(move || {
        s.set_meta(meta::HUB_NODE_ID, &hub)?;
        s.set_meta(meta::HUB_TERM, &term.to_string())
    })
    .await
}

/// Copies the hub's journal since the last entry copied, up to `upto`, the version the data
/// merged here reaches (replicas that may become hub only). Never beyond it: a mid known here
/// for a write whose row is not would make the write's resend a "duplicate" that never lands.
/// Once the copy is whole, a journal set aside by a snapshot is compared with it and what the
/// hub lacks is queued for it ([`Store::reconcile_aside`]).
async fn fetch_journal(ctx: &Ctx<'_>, upto: i64) -> Result<()> {
    if !ctx.config.keep_mids {
        return Ok(());
    }
    loop {
        let s = ctx.store.clone();
        let after = blocking(move || s.meta_i64(meta::JOURNAL_VERSION)).await?;
        if after >= upto {
            break;
        }
        let url = format!(
            "{}/api/journal?after={after}&upto={upto}",
            ctx.config.hub_url
        );
        let page: JournalPage = get_json(ctx, &url).await?;
        let s = ctx.store.clone();
        let more = page.more;
        blocking(move || s.record_journal(&page.entries, (!more).then_some(upto))).await?;
        if !more {
            break;
        }
    }
    let s = ctx.store.clone();
    let queued = blocking(move || s.reconcile_aside()).await?;
    if queued > 0 {
        tracing::warn!(
            queued,
            "writes the hub lacked are queued to be replayed into it"
        );
    }
    Ok(())
}

/// Merges a burst's rows and pulls its capsules, then records the position reached.
async fn flush(
    ctx: &Ctx<'_>,
    rows: Vec<(i64, Vec<BatchPull>)>,
    capsules: Vec<Capsule>,
    last: i64,
) -> Result<()> {
    let top_version = capsules
        .iter()
        .map(|c| c.v)
        .chain(
            rows.iter()
                .flat_map(|(_, pulls)| pulls.iter().flat_map(|p| p.items.iter().map(|i| i.v))),
        )
        .max()
        .unwrap_or(0);
    for (ts, pulls) in rows {
        for pull in pulls {
            merge(ctx, pull).await?;
        }
        ctx.metrics.e2e_lag.observe_ms((now_ms() - ts) as f64);
    }
    ctx.metrics.capsules_received.add(capsules.len() as u64);
    let stamps: Vec<i64> = capsules.iter().map(|c| c.ts).collect();
    let any = !capsules.is_empty();
    apply_burst(ctx, capsules).await?;
    if any {
        fetch_journal(ctx, top_version).await?;
    }
    let done = now_ms();
    for ts in stamps {
        ctx.metrics.e2e_lag.observe_ms((done - ts) as f64);
    }
    // The position and the highest hub version covered commit together; the outbox forgets
    // the till's own writes the hub has now sent back.
    let s = ctx.store.clone();
    blocking(move || s.advance_position(last, top_version)).await?;
    ctx.metrics.set_seq(last);
    Ok(())
}

/// Capsules logged after `since` up to `upto`, from the hub's change log; None when the log
/// no longer reaches back that far.
async fn repair_gap(ctx: &Ctx<'_>, since: i64, upto: i64) -> Result<Option<Vec<Capsule>>> {
    let mut out = Vec::new();
    let mut at = since;
    while at < upto {
        let url = format!("{}/api/changes?since={at}", ctx.config.hub_url);
        let changes: Changes = match get_json(ctx, &url).await {
            Ok(c) => c,
            Err(ReplicaError::Hub { status: 410, .. }) => return Ok(None),
            Err(e) => return Err(e),
        };
        if changes.seq <= at {
            break;
        }
        at = changes.seq;
        out.extend(changes.items);
        if !changes.more {
            break;
        }
    }
    Ok(Some(out))
}

type WsStream =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// The next protocol frame; `None` when the hub closed the connection. Any message, pings
/// included, counts as life; `silence` without one means the link is dead.
async fn next_frame(
    ws: &mut WsStream,
    metrics: &ReplicaMetrics,
    silence: Duration,
) -> Result<Option<Frame>> {
    loop {
        let next = tokio::time::timeout(silence, ws.next())
            .await
            .map_err(|_| ReplicaError::Unreachable(format!("hub silent for {silence:?}")))?;
        match next {
            None | Some(Ok(Message::Close(_))) => return Ok(None),
            Some(Err(e)) => return Err(ReplicaError::Unreachable(e.to_string())),
            Some(Ok(message @ (Message::Text(_) | Message::Binary(_)))) => {
                let wire = message.len();
                let text = match message {
                    Message::Binary(packed) => {
                        // Bounded like a text frame: a hostile peer's tiny message cannot
                        // unpack into gigabytes.
                        let bytes =
                            zstd::bulk::decompress(&packed, HUB_FRAME_LIMIT).map_err(|e| {
                                ReplicaError::Protocol(format!("bad compressed frame: {e}"))
                            })?;
                        String::from_utf8(bytes).map_err(|e| {
                            ReplicaError::Protocol(format!("compressed frame is not UTF-8: {e}"))
                        })?
                    }
                    other => other
                        .into_text()
                        .map_err(|e| ReplicaError::Protocol(e.to_string()))?
                        .to_string(),
                };
                metrics.ws_frames_received.inc();
                metrics.ws_bytes_received.add(wire as u64);
                let frame: Frame = serde_json::from_str(&text)
                    .map_err(|e| ReplicaError::Protocol(format!("bad frame {text}: {e}")))?;
                if matches!(frame, Frame::Rows { .. }) {
                    metrics.ws_rows_bytes_received.add(wire as u64);
                }
                if let Some((_, seq)) = frame.range() {
                    metrics
                        .hub_seq
                        .fetch_max(seq, std::sync::atomic::Ordering::Relaxed);
                }
                return Ok(Some(frame));
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
    /// Per entity and id to pull: the lowest version held here of the parts needed (0 when
    /// the entity is not here), so the hub sends child parts as deltas above it.
    pub have: BTreeMap<(String, String), i64>,
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
        let (needed, held): (BTreeSet<String>, i64) = match local(&entity, &id) {
            // Not here (or deleted and re-created): the whole entity.
            None => (all_parts(&entity).into_iter().collect(), 0),
            Some(_) if n.gone_at.is_some() => (all_parts(&entity).into_iter().collect(), 0),
            Some(have) => {
                let needed: BTreeSet<String> = n
                    .parts
                    .into_iter()
                    .filter(|(p, v)| have.get(p).copied().unwrap_or(0) < *v)
                    .map(|(p, _)| p)
                    .collect();
                let held = needed
                    .iter()
                    .map(|p| have.get(p).copied().unwrap_or(0))
                    .min()
                    .unwrap_or(0);
                (needed, held)
            }
        };
        if needed.is_empty() {
            continue;
        }
        out.have.insert((entity.clone(), id.clone()), held);
        let entry = out.pulls.entry(entity).or_default();
        entry.0.push(id);
        entry.1.extend(needed);
    }
    out
}

/// Merges a pull, [`MERGE_CHUNK`] entities per transaction; returns the ids whose child delta
/// did not fit (to pull whole).
async fn merge(ctx: &Ctx<'_>, pull: BatchPull) -> Result<Vec<String>> {
    let BatchPull {
        entity,
        parts,
        mut items,
        missing,
    } = pull;
    let mut incomplete = Vec::new();
    let mut missing = Some(missing);
    while !items.is_empty() || missing.is_some() {
        let rest = items.split_off(MERGE_CHUNK.min(items.len()));
        let piece = std::mem::replace(&mut items, rest);
        let last = items.is_empty();
        let chunk = BatchPull {
            entity: entity.clone(),
            parts: parts.clone(),
            items: piece,
            // Deletes go with the last piece.
            missing: if last {
                missing.take().unwrap_or_default()
            } else {
                Vec::new()
            },
        };
        let s = ctx.store.clone();
        let started = Instant::now();
        let outcome = inline(move || s.merge_pulled(&chunk)).await?;
        ctx.metrics.merge_latency.observe(started.elapsed());
        for c in outcome.changed {
            (ctx.ui)(LocalChange::Changed(c));
        }
        incomplete.extend(outcome.incomplete);
    }
    Ok(incomplete)
}

async fn apply_burst(ctx: &Ctx<'_>, capsules: Vec<Capsule>) -> Result<()> {
    if capsules.is_empty() {
        return Ok(());
    }
    let s = ctx.store.clone();
    let plan = inline(move || {
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
        let s = ctx.store.clone();
        if let Some(local) = blocking(move || s.apply_gone(&capsule)).await? {
            (ctx.ui)(LocalChange::Changed(local));
        }
    }
    // The whole burst in as few requests as the limits allow (usually one): every entity's
    // ids in one compressed body, every answer in one compressed body.
    let mut wants: Vec<PullWant> = Vec::new();
    for (entity, (ids, parts)) in plan.pulls {
        let parts: Vec<String> = parts.into_iter().collect();
        for chunk in ids.chunks(IDS_PER_PULL) {
            let have: Vec<i64> = chunk
                .iter()
                .map(|id| {
                    plan.have
                        .get(&(entity.clone(), id.clone()))
                        .copied()
                        .unwrap_or(0)
                })
                .collect();
            wants.push(PullWant {
                entity: entity.clone(),
                ids: chunk.to_vec(),
                have: child_delta_versions(ctx, &entity, &parts, have),
                parts: parts.clone(),
            });
        }
    }
    for request in into_requests(wants) {
        let mut repull = Vec::new();
        for (want, incomplete) in request.iter().zip(pull_and_merge(ctx, &request).await?) {
            if !incomplete.is_empty() {
                // This copy was not what the delta assumed: the whole parts, once.
                ctx.metrics.full_repulls.add(incomplete.len() as u64);
                repull.push(PullWant {
                    entity: want.entity.clone(),
                    ids: incomplete,
                    parts: want.parts.clone(),
                    have: Vec::new(),
                });
            }
        }
        if !repull.is_empty() {
            pull_and_merge(ctx, &repull).await?;
        }
    }
    Ok(())
}

/// Groups wants into requests of at most [`IDS_PER_REQUEST`] ids and [`MAX_PULL_WANTS`]
/// entities each.
fn into_requests(wants: Vec<PullWant>) -> Vec<Vec<PullWant>> {
    let mut out: Vec<Vec<PullWant>> = Vec::new();
    let mut ids = 0;
    for w in wants {
        match out.last_mut() {
            Some(last) if ids + w.ids.len() <= IDS_PER_REQUEST && last.len() < MAX_PULL_WANTS => {
                ids += w.ids.len();
                last.push(w);
            }
            _ => {
                ids = w.ids.len();
                out.push(vec![w]);
            }
        }
    }
    out
}

/// The versions held, sent only when they matter: for child parts, when one is held
/// (otherwise the hub sends whole parts anyway, and no list of live child ids either).
fn child_delta_versions(ctx: &Ctx<'_>, entity: &str, parts: &[String], have: Vec<i64>) -> Vec<i64> {
    let child_parts = ctx.store.schema().entity(entity).is_some_and(|e| {
        parts.iter().any(|p| {
            e.part(p)
                .is_some_and(|p| matches!(p.kind, capsule_protocol::PartKind::Child { .. }))
        })
    });
    if child_parts && have.iter().any(|v| *v > 0) {
        have
    } else {
        Vec::new()
    }
}

/// One `POST /api/pull` (child parts as deltas above `have`) and the merge of each entity's
/// answer; returns, per want, the ids whose delta did not fit this replica's copy. A hub
/// without that route (an older version, during an upgrade) is asked entity by entity.
async fn pull_and_merge(ctx: &Ctx<'_>, wants: &[PullWant]) -> Result<Vec<Vec<String>>> {
    use std::sync::atomic::Ordering;
    if ctx.old_hub.load(Ordering::Relaxed) {
        return pull_entity_by_entity(ctx, wants).await;
    }
    let url = format!("{}/api/pull", ctx.config.hub_url);
    let body = serde_json::to_vec(&PullRequest {
        pulls: wants.to_vec(),
    })
    .expect("a pull request serialises");
    let started = Instant::now();
    let pulls = match send_json::<PullAnswer>(ctx, &url, Some(&body)).await {
        Ok(answer) => answer.pulls,
        // What a hub from before this route answers (its catch-all says "no such endpoint";
        // a current hub's 404 names an unknown entity and is an error like any other).
        Err(ReplicaError::Hub { status, message })
            if status == 405 || (status == 404 && message.starts_with("no such endpoint")) =>
        {
            tracing::info!(
                "the hub has no POST /api/pull (an older version): pulling entity by entity"
            );
            ctx.old_hub.store(true, Ordering::Relaxed);
            return pull_entity_by_entity(ctx, wants).await;
        }
        Err(e) => return Err(e),
    };
    let answered: Vec<&str> = pulls.iter().map(|p| p.entity.as_str()).collect();
    let asked: Vec<&str> = wants.iter().map(|w| w.entity.as_str()).collect();
    if answered != asked {
        return Err(ReplicaError::Protocol(format!(
            "the hub answered pulls of {answered:?} for {asked:?}"
        )));
    }
    ctx.metrics.pull_latency.observe(started.elapsed());
    let mut out = Vec::with_capacity(pulls.len());
    for pull in pulls {
        out.push(merge(ctx, pull).await?);
    }
    Ok(out)
}

/// Each want as its own `GET /api/entities`, as hubs before `POST /api/pull` serve them.
async fn pull_entity_by_entity(ctx: &Ctx<'_>, wants: &[PullWant]) -> Result<Vec<Vec<String>>> {
    let mut out = Vec::with_capacity(wants.len());
    for w in wants {
        out.push(pull_one_entity(ctx, w).await?);
    }
    Ok(out)
}

/// `GET /api/entities` for one entity.
async fn pull_one_entity(ctx: &Ctx<'_>, w: &PullWant) -> Result<Vec<String>> {
    let mut url = format!(
        "{}/api/entities?entity={}&ids={}&parts={}",
        ctx.config.hub_url,
        query_list(&[&w.entity]),
        query_list(&w.ids),
        query_list(&w.parts),
    );
    if !w.have.is_empty() {
        let have: Vec<String> = w.have.iter().map(i64::to_string).collect();
        url.push_str("&have=");
        url.push_str(&query_list(&have));
    }
    let started = Instant::now();
    let pull: BatchPull = get_json(ctx, url.as_str()).await?;
    ctx.metrics.pull_latency.observe(started.elapsed());
    merge(ctx, pull).await
}

/// A comma-separated query value, each element escaped but the commas kept as they are (a
/// pull names dozens of ids; `%2C` would add two bytes to each).
fn query_list<S: AsRef<str>>(items: &[S]) -> String {
    let escaped: Vec<String> = items
        .iter()
        .map(|s| form_urlencoded::byte_serialize(s.as_ref().as_bytes()).collect())
        .collect();
    escaped.join(",")
}

/// GET with retries and backoff; a 4xx answer is not retried.
pub(crate) async fn get_json<T: serde::de::DeserializeOwned>(
    ctx: &Ctx<'_>,
    url: &str,
) -> Result<T> {
    send_json(ctx, url, None).await
}

/// GET (no body) or POST of a JSON body, with retries and backoff; a 4xx answer is not
/// retried. Only reads go through here, so a retry is harmless.
async fn send_json<T: serde::de::DeserializeOwned>(
    ctx: &Ctx<'_>,
    url: &str,
    body: Option<&[u8]>,
) -> Result<T> {
    // A body worth compressing is compressed once, for every attempt.
    let body = body.map(|b| {
        if b.len() > COMPRESS_BODY_ABOVE
            && let Ok(packed) = zstd::bulk::compress(b, 1)
        {
            (packed, true)
        } else {
            (b.to_vec(), false)
        }
    });
    let mut wait = Duration::from_millis(100);
    let mut attempt = 1;
    loop {
        match send_once(ctx, url, body.clone()).await {
            Ok(v) => return Ok(v),
            Err(
                e @ ReplicaError::Hub {
                    status: 400..=499, ..
                },
            ) => return Err(e),
            Err(e) if attempt >= PULL_ATTEMPTS => return Err(e),
            Err(e) => {
                tracing::debug!(error = %e, attempt, "request to hub failed; retrying");
                tokio::time::sleep(wait).await;
                wait *= 2;
                attempt += 1;
            }
        }
    }
}

/// Request bodies up to this many bytes go as they are (as the hub does with answers).
const COMPRESS_BODY_ABOVE: usize = 256;

async fn send_once<T: serde::de::DeserializeOwned>(
    ctx: &Ctx<'_>,
    url: &str,
    body: Option<(Vec<u8>, bool)>,
) -> Result<T> {
    ctx.metrics.rest_requests.inc();
    // What the request carries: its path and query, and its body as sent.
    ctx.metrics.rest_request_bytes.add(
        (url.len().saturating_sub(ctx.config.hub_url.len())
            + body.as_ref().map_or(0, |(b, _)| b.len())) as u64,
    );
    let fail = |e: ReplicaError| {
        ctx.metrics.rest_failures.inc();
        e
    };
    let request = match body {
        None => ctx.http.get(url),
        Some((body, compressed)) => {
            let r = ctx
                .http
                .post(url)
                .header(reqwest::header::CONTENT_TYPE, "application/json");
            let r = if compressed {
                r.header(reqwest::header::CONTENT_ENCODING, "zstd")
            } else {
                r
            };
            r.body(body)
        }
    };
    let resp = request
        .timeout(Duration::from_secs(60))
        .send()
        .await
        .map_err(|e| fail(ReplicaError::Unreachable(e.to_string())))?;
    let status = resp.status();
    let body = resp
        .bytes()
        .await
        .map_err(|e| fail(ReplicaError::Unreachable(e.to_string())))?;
    ctx.metrics.rest_bytes.add(body.len() as u64);
    if !status.is_success() {
        return Err(fail(hub_refused(status, &body)));
    }
    serde_json::from_slice(&body).map_err(|e| {
        fail(ReplicaError::Protocol(format!(
            "bad answer from {url}: {e}"
        )))
    })
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
