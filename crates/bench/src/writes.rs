//! Durable write throughput: the hub at 1, 8 and 32 concurrent writers sending single-mutation
//! requests (unique mids) while 50 `/ws` subscribers read every frame, beside PostgreSQL's
//! `pgbench` inserting single rows with `synchronous_commit=on` at the same client counts.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use capsule_bench::workload::{throughput_order_insert, throughput_shift_insert};
use futures_util::StreamExt;
use serde::Serialize;
use serde_json::Value;

use crate::pg::Pg;
use crate::run::{HubProcess, get_json};

/// Concurrent writers per level, the same for the hub and for pgbench.
pub const LEVELS: [usize; 3] = [1, 8, 32];

#[derive(Debug, Clone, Serialize)]
pub struct WriteLevel {
    pub writers: usize,
    pub hub_requests_per_s: f64,
    /// Write round trip seen by one writer (HTTP request to answer, which is after the fsync).
    pub hub_write_p50_ms: f64,
    pub hub_write_p99_ms: f64,
    /// Every subscriber had read the frame of the last write within 10 s of the writers
    /// stopping.
    pub subscribers_caught_up: bool,
    /// The hub process's CPU over the level (100 = one core), beside the load generator
    /// and the subscribers on the same 2 cores.
    pub hub_cpu_percent: f64,
    pub pg_tps: Option<f64>,
    /// PostgreSQL writing the rows one hub write leaves behind ([`crate::pg::HUB_ROWS_DDL`]).
    pub pg_hub_rows_tps: Option<f64>,
    /// Write-ahead log each answered write put on disk (the hub's `wal_bytes_written` over
    /// the level, per request).
    pub hub_wal_bytes_per_write: f64,
    pub pg_wal_bytes_per_transaction: Option<f64>,
    pub pg_hub_rows_wal_bytes_per_transaction: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Writes {
    pub subscribers: usize,
    pub seconds_per_level: f64,
    pub levels: Vec<WriteLevel>,
    /// Why the PostgreSQL column is empty, when it is.
    pub pg_skipped: Option<String>,
    pub pg_version: Option<String>,
}

/// The stream position of a frame; every other field is skipped.
#[derive(serde::Deserialize)]
struct Position {
    seq: Option<i64>,
}

/// Raw `/ws` subscribers that read every frame and remember the highest stream position.
struct Subscribers {
    highest: Vec<Arc<AtomicI64>>,
    frames: Arc<AtomicU64>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for Subscribers {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl Subscribers {
    async fn start(hub: &str, n: usize) -> anyhow::Result<Subscribers> {
        let ws_url = format!("{}/ws", hub.replacen("http", "ws", 1));
        let frames = Arc::new(AtomicU64::new(0));
        let (mut highest, mut tasks) = (vec![], vec![]);
        for _ in 0..n {
            let (mut ws, _) = tokio_tungstenite::connect_async(&ws_url).await?;
            let seen = Arc::new(AtomicI64::new(0));
            let (seen2, frames2) = (seen.clone(), frames.clone());
            tasks.push(tokio::spawn(async move {
                while let Some(Ok(msg)) = ws.next().await {
                    let Ok(text) = msg.to_text() else { continue };
                    frames2.fetch_add(1, Ordering::Relaxed);
                    // Only the position: a frame's capsules are read past, not built into
                    // maps (the 50 subscribers stand for tills on their own machines; here
                    // they share the hub's two cores, so they should cost it little).
                    if let Ok(Position { seq: Some(seq) }) = serde_json::from_str(text) {
                        seen2.fetch_max(seq, Ordering::Relaxed);
                    }
                }
            }));
            highest.push(seen);
        }
        Ok(Subscribers {
            highest,
            frames,
            tasks,
        })
    }

    async fn caught_up(&self, seq: i64, limit: Duration) -> bool {
        let t = Instant::now();
        while t.elapsed() < limit {
            if self
                .highest
                .iter()
                .all(|h| h.load(Ordering::Relaxed) >= seq)
            {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        false
    }
}

pub async fn measure(tilld: &Path, subscribers: usize, secs: u64) -> anyhow::Result<Writes> {
    let dir = tempfile::tempdir()?;
    let hub = HubProcess::start(tilld, &dir.path().join("hub"), &[], Some(dir))?;
    // Keep-alive connections, one per writer, as a till keeps its own.
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(64)
        .build()?;
    http.post(format!("{}/api/mutations", hub.url))
        .json(&throughput_shift_insert())
        .send()
        .await?
        .error_for_status()?;
    let subs = Subscribers::start(&hub.url, subscribers).await?;
    let (pg, pg_skipped) = match Pg::start().await {
        Ok(pg) => (Some(pg), None),
        Err(why) => {
            eprintln!("writes: PostgreSQL column skipped: {why:#}");
            (None, Some(format!("{why:#}")))
        }
    };
    let mut levels = Vec::new();
    for writers in LEVELS {
        eprintln!("writes: hub, {writers} writer(s), {secs} s...");
        let stop = Instant::now() + Duration::from_secs(secs);
        let started = Instant::now();
        let cpu0 = hub.cpu_secs();
        let wal0 = wal_bytes(&get_json(&http, &format!("{}/api/metrics", hub.url)).await?)?;
        let mut tasks = Vec::new();
        for w in 0..writers {
            let (http, url) = (http.clone(), format!("{}/api/mutations", hub.url));
            tasks.push(tokio::spawn(async move {
                let mut times = Vec::new();
                let mut last_seq = 0i64;
                while Instant::now() < stop {
                    let t = Instant::now();
                    let r = http
                        .post(&url)
                        .json(&throughput_order_insert(w))
                        .send()
                        .await?;
                    let status = r.status();
                    let body: Value = r.json().await?;
                    anyhow::ensure!(status.is_success(), "write refused: {status} {body}");
                    times.push(t.elapsed().as_secs_f64() * 1000.0);
                    last_seq = last_seq.max(body["results"][0]["seq"].as_i64().unwrap_or(0));
                }
                Ok::<_, anyhow::Error>((times, last_seq))
            }));
        }
        let mut times = Vec::new();
        for t in tasks {
            let (t, _) = t.await??;
            times.extend(t);
        }
        let elapsed = started.elapsed().as_secs_f64();
        let hub_cpu_percent = (hub.cpu_secs() - cpu0) / elapsed * 100.0;
        let seq = get_json(&http, &format!("{}/api/metrics", hub.url)).await?;
        let wal = wal_bytes(&seq)? - wal0;
        let caught_up = subs
            .caught_up(seq["seq"].as_i64().unwrap_or(0), Duration::from_secs(10))
            .await;
        times.sort_by(f64::total_cmp);
        let (pg_insert, pg_hub_rows) = match &pg {
            Some(pg) => {
                eprintln!("writes: pgbench, {writers} client(s), {secs} s...");
                let insert = pg.insert_tps(writers, secs).await?;
                eprintln!("writes: pgbench, the hub's rows, {writers} client(s), {secs} s...");
                (Some(insert), Some(pg.hub_rows_tps(writers, secs).await?))
            }
            None => (None, None),
        };
        levels.push(WriteLevel {
            writers,
            hub_requests_per_s: times.len() as f64 / elapsed,
            hub_write_p50_ms: crate::floor::percentile(&times, 0.5),
            hub_write_p99_ms: crate::floor::percentile(&times, 0.99),
            subscribers_caught_up: caught_up,
            hub_cpu_percent,
            pg_tps: pg_insert.map(|r| r.tps),
            pg_hub_rows_tps: pg_hub_rows.map(|r| r.tps),
            hub_wal_bytes_per_write: wal / (times.len().max(1) as f64),
            pg_wal_bytes_per_transaction: pg_insert.map(|r| r.wal_bytes_per_transaction),
            pg_hub_rows_wal_bytes_per_transaction: pg_hub_rows.map(|r| r.wal_bytes_per_transaction),
        });
    }
    eprintln!(
        "writes: subscribers read {} frames in all",
        subs.frames.load(Ordering::Relaxed)
    );
    Ok(Writes {
        subscribers,
        seconds_per_level: secs as f64,
        levels,
        pg_skipped,
        pg_version: pg.as_ref().map(|p| p.version.clone()),
    })
}

/// What the hub's store had written to its write-ahead log, from its `/api/metrics`.
fn wal_bytes(metrics: &Value) -> anyhow::Result<f64> {
    metrics["wal_bytes_written"]
        .as_f64()
        .context("no wal_bytes_written in the hub's /api/metrics")
}

/// Bytes as KiB with one decimal, or "-".
fn kib(bytes: Option<f64>) -> String {
    bytes.map_or_else(|| "-".into(), |b| format!("{:.1}", b / 1024.0))
}

/// A PostgreSQL column's two cells: its tps and the hub's ratio to it ("skipped" and "-" when
/// it did not run).
fn peer_cells(hub_per_s: f64, peer_tps: Option<f64>) -> (String, String) {
    match peer_tps {
        Some(tps) => (format!("{tps:.0}"), format!("x{:.2}", hub_per_s / tps)),
        None => ("skipped".into(), "-".into()),
    }
}

impl Writes {
    pub fn table(&self) -> String {
        let mut out = format!(
            "| durable writes, single-mutation requests, {} subscribers | hub requests/s | hub write p50 / p99 ms | hub CPU % of a core | subscribers caught up | PostgreSQL pgbench tps | hub / PostgreSQL | PostgreSQL writing the hub's rows, tps | hub / that |\n|---|---|---|---|---|---|---|---|---|\n",
            self.subscribers
        );
        for l in &self.levels {
            let (pg, ratio) = peer_cells(l.hub_requests_per_s, l.pg_tps);
            let (rows, rows_ratio) = peer_cells(l.hub_requests_per_s, l.pg_hub_rows_tps);
            out += &format!(
                "| {} writer(s) | {:.0} | {:.2} / {:.2} | {:.0} | {} | {pg} | {ratio} | {rows} | {rows_ratio} |\n",
                l.writers,
                l.hub_requests_per_s,
                l.hub_write_p50_ms,
                l.hub_write_p99_ms,
                l.hub_cpu_percent,
                if l.subscribers_caught_up { "yes" } else { "NO" },
            );
        }
        match (&self.pg_version, &self.pg_skipped) {
            (Some(v), _) => {
                out += &format!(
                    "PostgreSQL: {v}, `pgbench -n -T {:.0}` over TCP on 127.0.0.1, one `INSERT` of a row with a unique uuid per transaction, `synchronous_commit=on`, `fsync=on`, in a fresh cluster in a temporary directory; the hub: one order inserted per request (unique mid), answered after its fsync (synchronous=FULL). \"The hub's rows\": per transaction one call of a PL/pgSQL function writing the 9 rows one such hub write leaves (the order, its mutation id, journal entry, part source and shift share, the shift's running totals, 2 capsules; crates/bench/src/pg.rs), no subscribers. The goal is the first ratio.\n",
                    self.seconds_per_level
                )
            }
            (None, Some(why)) => out += &format!("PostgreSQL column skipped: {why}\n"),
            (None, None) => {}
        }
        out += "\n| write-ahead log per write, KiB | hub (SQLite: whole 4 KiB pages) | PostgreSQL one-row insert | PostgreSQL writing the hub's rows |\n|---|---|---|---|\n";
        for l in &self.levels {
            out += &format!(
                "| {} writer(s) | {} | {} | {} |\n",
                l.writers,
                kib(Some(l.hub_wal_bytes_per_write)),
                kib(l.pg_wal_bytes_per_transaction),
                kib(l.pg_hub_rows_wal_bytes_per_transaction),
            );
        }
        out += "Each commit is one fsync of what it logged; a group commit shares its pages among the writes in it.\n";
        out
    }
}
