//! One benchmark run: a real hub process, in-process replicas over real sockets, the seeded
//! rush at a paced rate.

use std::fmt::Write as _;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use capsule_bench::workload::{Rush, RushConfig};
use capsule_protocol::metrics::HistogramSummary;
use capsule_protocol::{Schema, Snapshot};
use capsule_replica::{FollowConfig, Link, LinkState, OnChange, ReplicaMetrics};
use capsule_store::Store;
use serde::Serialize;
use serde_json::{Value, json};

use crate::Args;
use crate::floor::Floor;

/// Stream modes compared: mode, coalescing window in ms, and whether the tills ask for
/// compressed frames. The first is the baseline: the old system's push, whole rows as JSON
/// text (uncompressed, as it sent them); the second is the same push compressed as this
/// product's tills ask for it.
pub const MODES: &[(&str, u64, bool)] = &[
    ("legacy", 0, false),
    ("legacy", 0, true),
    ("legacy", 250, true),
    ("both", 0, true),
    ("both", 250, true),
    ("capsule", 0, true),
    ("capsule", 250, true),
];

/// A `tilld` process (a hub unless started otherwise); SIGKILLed on drop.
pub struct HubProcess {
    child: Child,
    pub url: String,
    _dir: Option<tempfile::TempDir>,
}

impl Drop for HubProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl HubProcess {
    pub fn start(
        tilld: &Path,
        data: &Path,
        extra: &[&str],
        dir: Option<tempfile::TempDir>,
    ) -> anyhow::Result<HubProcess> {
        HubProcess::spawn(tilld, &["--role", "hub"], data, extra, dir)
    }

    /// A `tilld` of any role (`role` are its role arguments).
    pub fn spawn(
        tilld: &Path,
        role: &[&str],
        data: &Path,
        extra: &[&str],
        dir: Option<tempfile::TempDir>,
    ) -> anyhow::Result<HubProcess> {
        let mut child = Command::new(tilld)
            .args(role)
            .args(["--listen", "127.0.0.1:0", "--data"])
            .arg(data)
            // Every simulated till and subscriber shares 127.0.0.1; measure the protocol,
            // not the per-address connection cap meant for one device.
            .args(["--max-connections-per-ip", "1024"])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .context("start tilld")?;
        let mut line = String::new();
        BufReader::new(child.stdout.take().context("stdout")?).read_line(&mut line)?;
        let url = line
            .trim()
            .strip_prefix("listening on ")
            .context("tilld's first line")?
            .to_string();
        Ok(HubProcess {
            child,
            url,
            _dir: dir,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// CPU seconds used so far (user + system).
    pub fn cpu_secs(&self) -> f64 {
        let stat =
            std::fs::read_to_string(format!("/proc/{}/stat", self.pid())).unwrap_or_default();
        // Fields after the command name (which may contain spaces) are space-separated.
        let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
        let f: Vec<&str> = rest.split_whitespace().collect();
        let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
        (ticks(11) + ticks(12)) / 100.0
    }

    /// Peak resident memory in MiB (VmHWM).
    pub fn peak_rss_mib(&self) -> f64 {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap_or_default();
        status
            .lines()
            .find(|l| l.starts_with("VmHWM:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kb| kb.parse::<f64>().ok())
            .map_or(0.0, |kb| kb / 1024.0)
    }
}

pub struct Replicas {
    pub stores: Vec<Arc<Store>>,
    pub links: Vec<Link>,
    pub metrics: Arc<ReplicaMetrics>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    _dir: tempfile::TempDir,
}

impl Drop for Replicas {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl Replicas {
    /// `n` replicas, each with its own SQLite file, following `hub` over real sockets. They
    /// share one metrics registry, so its counters are totals and its histograms cover all.
    pub async fn start(hub: &str, n: usize, compressed: bool) -> anyhow::Result<Replicas> {
        let dir = tempfile::tempdir()?;
        let schema = Arc::new(Schema::builtin());
        let metrics = Arc::new(ReplicaMetrics::default());
        let on_change: OnChange = Arc::new(|_| {});
        let (mut stores, mut links, mut tasks) = (vec![], vec![], vec![]);
        for i in 0..n {
            let store = Arc::new(Store::open_with(
                dir.path().join(format!("replica-{i}.sqlite3")),
                schema.clone(),
                capsule_store::Durability::Replica,
            )?);
            let link = Link::default();
            let mut config = FollowConfig::new(hub, store.node_id());
            config.compressed_frames = compressed;
            tasks.push(tokio::spawn(capsule_replica::follow(
                store.clone(),
                config,
                capsule_replica::HubTarget::fixed(hub),
                link.clone(),
                on_change.clone(),
                metrics.clone(),
            )));
            stores.push(store);
            links.push(link);
        }
        let r = Replicas {
            stores,
            links,
            metrics,
            tasks,
            _dir: dir,
        };
        let t = Instant::now();
        while r.links.iter().any(|l| l.get().state != LinkState::Online) {
            anyhow::ensure!(
                t.elapsed() < Duration::from_secs(30),
                "replicas did not come online"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(r)
    }

    /// Waits until every replica has merged up to `seq`; returns how long that took.
    pub async fn drain(&self, seq: i64, limit: Duration) -> Option<Duration> {
        let t = Instant::now();
        loop {
            if self.links.iter().all(|l| l.get().seq >= seq) {
                return Some(t.elapsed());
            }
            if t.elapsed() > limit {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

pub(crate) async fn get_json(http: &reqwest::Client, url: &str) -> anyhow::Result<Value> {
    Ok(http
        .get(url)
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?)
}

async fn set_modes(http: &reqwest::Client, hub: &str, mode: &str) -> anyhow::Result<()> {
    for entity in Schema::builtin().entities.keys() {
        http.post(format!("{hub}/api/admin/modes"))
            .json(&json!({"entity": entity, "mode": mode}))
            .send()
            .await?
            .error_for_status()?;
    }
    Ok(())
}

/// Sends one rush step; returns its mutation count.
async fn send(
    http: &reqwest::Client,
    hub: &str,
    step: &capsule_bench::workload::Step,
) -> anyhow::Result<usize> {
    let r = http
        .post(format!("{hub}/api/mutations"))
        .json(&step.batch)
        .send()
        .await?;
    let status = r.status();
    anyhow::ensure!(
        status.is_success(),
        "{} refused: {status} {}",
        step.what,
        r.text().await.unwrap_or_default()
    );
    Ok(step.batch.mutations.len())
}

#[derive(Debug, Clone, Serialize)]
pub struct RunResult {
    pub mode: String,
    pub coalesce_ms: u64,
    /// The tills asked for zstd frames.
    pub compressed: bool,
    pub clients: usize,
    pub seconds: f64,
    pub requests: usize,
    pub mutations: usize,
    pub ws_bytes_per_s_per_client: f64,
    pub ws_frames_per_s_per_client: f64,
    pub capsules_per_s: f64,
    pub rows_per_s: f64,
    pub rest_requests_per_s_per_client: f64,
    /// The pulls' paths and queries, which name the ids pulled.
    pub rest_request_bytes_per_s_per_client: f64,
    pub rest_bytes_per_s_per_client: f64,
    pub pull_latency: HistogramSummary,
    pub merge_latency: HistogramSummary,
    pub e2e_lag: HistogramSummary,
    pub hub_cpu_percent: f64,
    pub hub_peak_rss_mib: f64,
    pub converged: bool,
}

/// The hub's data as a digest, taken through its own snapshot endpoint.
async fn hub_digest(http: &reqwest::Client, hub: &str) -> anyhow::Result<String> {
    let snap: Snapshot = http
        .get(format!("{hub}/api/snapshot"))
        .send()
        .await?
        .json()
        .await?;
    tokio::task::spawn_blocking(move || -> anyhow::Result<String> {
        let dir = tempfile::tempdir()?;
        let s = Store::open(
            dir.path().join("digest.sqlite3"),
            Arc::new(Schema::builtin()),
        )?;
        s.load_snapshot(&snap)?;
        Ok(s.digest()?)
    })
    .await?
}

pub async fn rush(
    args: &Args,
    tilld: &Path,
    mode: &str,
    coalesce: u64,
    compressed: bool,
) -> anyhow::Result<RunResult> {
    let http = reqwest::Client::new();
    let dir = tempfile::tempdir()?;
    let hub = HubProcess::start(
        tilld,
        &dir.path().join("hub"),
        &["--coalesce-ms", &coalesce.to_string()],
        Some(dir),
    )?;
    set_modes(&http, &hub.url, mode).await?;
    let clients = args.tills + args.screens;
    let replicas = Replicas::start(&hub.url, clients, compressed).await?;
    let m = &replicas.metrics;
    let base = (
        m.ws_bytes_received.get(),
        m.ws_frames_received.get(),
        m.rest_requests.get(),
        m.rest_request_bytes.get(),
    );
    let hub_base: Value = get_json(&http, &format!("{}/api/metrics", hub.url)).await?;
    let cpu0 = hub.cpu_secs();

    let peak = args.peak_rate * args.peak_secs;
    let burst = args.peak_rate * 10 * args.burst_secs;
    let orders = ((peak + burst) / 8 + 50) as usize;
    let mut steps = Rush::new(RushConfig {
        seed: args.seed,
        orders,
        concurrent: 40,
        tills: args.tills.max(1),
    });
    let started = Instant::now();
    let (mut requests, mut mutations) = (0usize, 0usize);
    for (rate, secs) in [
        (args.peak_rate, args.peak_secs),
        (args.peak_rate * 10, args.burst_secs),
    ] {
        let phase = Instant::now();
        let total = rate * secs;
        for i in 0..total {
            let due = phase + Duration::from_secs_f64(i as f64 / rate as f64);
            tokio::time::sleep_until(due.into()).await;
            let Some(step) = steps.next() else { break };
            mutations += send(&http, &hub.url, &step).await?;
            requests += 1;
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    let cpu = hub.cpu_secs() - cpu0;
    // The last window may still be open at the hub: let it close before reading its position.
    tokio::time::sleep(Duration::from_millis(coalesce + 200)).await;
    let hub_now: Value = get_json(&http, &format!("{}/api/metrics", hub.url)).await?;
    let seq = hub_now["seq"].as_i64().unwrap_or(0);
    let drained = replicas.drain(seq, Duration::from_secs(60)).await;
    // Let the last merges' metrics land.
    tokio::time::sleep(Duration::from_millis(50)).await;

    let want = hub_digest(&http, &hub.url).await?;
    let mut converged = drained.is_some();
    for s in &replicas.stores {
        let s = s.clone();
        let d = tokio::task::spawn_blocking(move || s.digest()).await??;
        converged &= d == want;
    }
    let n = clients as f64;
    let per_client = |now: u64, before: u64| (now - before) as f64 / seconds / n;
    let delta = |k: &str| hub_now[k].as_f64().unwrap_or(0.0) - hub_base[k].as_f64().unwrap_or(0.0);
    Ok(RunResult {
        mode: mode.into(),
        coalesce_ms: coalesce,
        compressed,
        clients,
        seconds,
        requests,
        mutations,
        ws_bytes_per_s_per_client: per_client(m.ws_bytes_received.get(), base.0),
        ws_frames_per_s_per_client: per_client(m.ws_frames_received.get(), base.1),
        capsules_per_s: delta("capsules_sent") / seconds,
        rows_per_s: delta("rows_sent") / seconds,
        rest_requests_per_s_per_client: per_client(m.rest_requests.get(), base.2),
        rest_request_bytes_per_s_per_client: per_client(m.rest_request_bytes.get(), base.3),
        // On the wire (gzip where the hub compressed), as the hub sent them: the replicas'
        // client sees bodies already decoded.
        rest_bytes_per_s_per_client: delta("rest_bytes_sent") / seconds / n,
        pull_latency: m.pull_latency.summary(),
        merge_latency: m.merge_latency.summary(),
        e2e_lag: m.e2e_lag.summary(),
        hub_cpu_percent: cpu / seconds * 100.0,
        hub_peak_rss_mib: hub.peak_rss_mib(),
        converged,
    })
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub args: String,
    pub floor: Floor,
    pub idle: Option<crate::idle::Idle>,
    /// The same, between a paired hub and till.
    pub idle_paired: Option<crate::idle::Idle>,
    pub runs: Vec<RunResult>,
    pub writes: Option<crate::writes::Writes>,
    pub snapshots: Option<crate::snapshot::Snapshots>,
    pub history: Option<crate::history::History>,
    pub outbox: Option<crate::outbox::OutboxBench>,
    pub seconds: f64,
}

fn human_bytes(b: f64) -> String {
    if b >= 1_048_576.0 {
        format!("{:.1} MiB", b / 1_048_576.0)
    } else if b >= 1024.0 {
        format!("{:.1} KiB", b / 1024.0)
    } else {
        format!("{b:.0} B")
    }
}

impl Report {
    /// The results as a Markdown table, every row with its ratio to the legacy baseline.
    pub fn table(&self) -> String {
        let mut out = String::new();
        if let Some(base) = self.runs.first() {
            self.rush_table(base, &mut out);
        }
        let f = &self.floor;
        let _ = writeln!(
            out,
            "Floor (same run): loopback WebSocket round trip p50 {:.3} ms / p99 {:.3} ms; one SQLite commit on the hub (WAL, synchronous=FULL) p50 {:.3} ms / p99 {:.3} ms, on a till replica (synchronous=NORMAL) p50 {:.3} ms / p99 {:.3} ms.",
            f.ws_rtt_p50_ms,
            f.ws_rtt_p99_ms,
            f.sqlite_commit_p50_ms,
            f.sqlite_commit_p99_ms,
            f.replica_commit_p50_ms,
            f.replica_commit_p99_ms
        );
        let _ = writeln!(
            out,
            "A commit as wide as a hub write (8 rows, 16 B-trees, synchronous=FULL), taking turns: through the store's WAL VFS p50 {:.3} ms / p99 {:.3} ms, through SQLite's own VFS p50 {:.3} ms / p99 {:.3} ms (x{:.2}).",
            f.wide_commit_p50_ms,
            f.wide_commit_p99_ms,
            f.wide_commit_sqlite_vfs_p50_ms,
            f.wide_commit_sqlite_vfs_p99_ms,
            f.wide_commit_p50_ms / f.wide_commit_sqlite_vfs_p50_ms,
        );
        for i in [&self.idle, &self.idle_paired].into_iter().flatten() {
            out.push('\n');
            out += &i.table();
        }
        if let Some(w) = &self.writes {
            out.push('\n');
            out += &w.table();
        }
        if let Some(h) = &self.history {
            out.push('\n');
            out += &h.table();
        }
        if let Some(o) = &self.outbox {
            out += &o.table();
        }
        if let Some(s) = &self.snapshots {
            let _ = writeln!(
                out,
                "\n| snapshot, a day of {} orders | JSON size | on the wire (zstd) | build + encode + send ms (received compressed) | received and decoded by a client on the same 2 cores ms |",
                s.orders
            );
            let _ = writeln!(out, "|---|---|---|---|---|");
            for (name, bytes, wire, ms, decoded_ms) in [
                (
                    "full",
                    s.full_bytes,
                    s.full_wire_bytes,
                    s.full_ms,
                    s.full_decoded_ms,
                ),
                (
                    "light (open business)",
                    s.light_bytes,
                    s.light_wire_bytes,
                    s.light_ms,
                    s.light_decoded_ms,
                ),
            ] {
                let _ = writeln!(
                    out,
                    "| {name} | {} | {} | {ms:.0} | {decoded_ms:.0} |",
                    human_bytes(bytes as f64),
                    human_bytes(wire as f64),
                );
            }
            let _ = writeln!(
                out,
                "(the hub's peak memory after serving them: {:.0} MiB; the day took {:.0} s to build: {} mutations through the pipeline for its first tenth, the rest copied as finished orders with fresh ids)",
                s.hub_peak_rss_mib, s.build_secs, s.mutations
            );
        }
        out
    }

    /// The per-mode rush table, every row with its ratio to `base` (legacy, no coalescing).
    fn rush_table(&self, base: &RunResult, out: &mut String) {
        let heads: Vec<String> = self
            .runs
            .iter()
            .map(|r| {
                format!(
                    "{} {} ms{}",
                    r.mode,
                    r.coalesce_ms,
                    if r.compressed { "" } else { ", plain" }
                )
            })
            .collect();
        let _ = writeln!(
            out,
            "| per mode ({} clients) | {} |",
            base.clients,
            heads.join(" | ")
        );
        let _ = writeln!(out, "|---|{}", "---|".repeat(self.runs.len()));
        type Get = fn(&RunResult) -> f64;
        type Show = fn(f64) -> String;
        let rows: Vec<(&str, Get, Show)> = vec![
            (
                "WS bytes/s per client",
                |r| r.ws_bytes_per_s_per_client,
                human_bytes,
            ),
            (
                "WS frames/s per client",
                |r| r.ws_frames_per_s_per_client,
                |v| format!("{v:.1}"),
            ),
            (
                "capsules/s (hub)",
                |r| r.capsules_per_s,
                |v| format!("{v:.1}"),
            ),
            ("full rows/s (hub)", |r| r.rows_per_s, |v| format!("{v:.1}")),
            (
                "REST requests/s per client",
                |r| r.rest_requests_per_s_per_client,
                |v| format!("{v:.2}"),
            ),
            (
                "REST bytes/s per client (on the wire)",
                |r| r.rest_bytes_per_s_per_client,
                human_bytes,
            ),
            (
                "REST requests (paths, queries and bodies as sent), bytes/s per client",
                |r| r.rest_request_bytes_per_s_per_client,
                human_bytes,
            ),
            (
                "WS + REST bytes/s per client (answers and requests)",
                |r| {
                    r.ws_bytes_per_s_per_client
                        + r.rest_bytes_per_s_per_client
                        + r.rest_request_bytes_per_s_per_client
                },
                human_bytes,
            ),
            (
                "pull latency p50 ms",
                |r| r.pull_latency.p50_ms,
                |v| format!("{v:.2}"),
            ),
            (
                "pull latency p99 ms",
                |r| r.pull_latency.p99_ms,
                |v| format!("{v:.2}"),
            ),
            (
                "merge latency p50 ms",
                |r| r.merge_latency.p50_ms,
                |v| format!("{v:.2}"),
            ),
            (
                "merge latency p99 ms",
                |r| r.merge_latency.p99_ms,
                |v| format!("{v:.2}"),
            ),
            (
                "e2e lag p50 ms",
                |r| r.e2e_lag.p50_ms,
                |v| format!("{v:.1}"),
            ),
            (
                "e2e lag p99 ms",
                |r| r.e2e_lag.p99_ms,
                |v| format!("{v:.1}"),
            ),
            (
                "e2e lag max ms",
                |r| r.e2e_lag.max_ms,
                |v| format!("{v:.1}"),
            ),
            (
                "hub CPU % of a core",
                |r| r.hub_cpu_percent,
                |v| format!("{v:.1}"),
            ),
            (
                "hub peak RSS MiB",
                |r| r.hub_peak_rss_mib,
                |v| format!("{v:.1}"),
            ),
        ];
        for (name, get, fmt) in rows {
            let cells: Vec<String> = self
                .runs
                .iter()
                .map(|r| {
                    let (v, b) = (get(r), get(base));
                    if b > 0.0 {
                        format!("{} (x{:.2})", fmt(v), v / b)
                    } else {
                        fmt(v)
                    }
                })
                .collect();
            let _ = writeln!(out, "| {name} | {} |", cells.join(" | "));
        }
        let cells: Vec<&str> = self
            .runs
            .iter()
            .map(|r| if r.converged { "yes" } else { "NO" })
            .collect();
        let _ = writeln!(out, "| converged (digests equal) | {} |", cells.join(" | "));
        let _ = writeln!(
            out,
            "\nWorkload: {} requests / {} mutations in {:.1} s per mode (peak, then a 10x burst).",
            base.requests, base.mutations, base.seconds
        );
    }
}
