//! Outbox section: a till's offline backlog drained to the hub (a small one and a big one in
//! the same run), and a cashier's sale on a till that four other clients flood.
//!
//! Real processes: a hub and a till following it. The hub is frozen (SIGSTOP) while the
//! backlog is written to the till from several client addresses (127.0.0.x), then thawed;
//! the drain is timed until the till's outbox is empty (every entry confirmed and merged back).

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::{Value, json};

use crate::run::{HubProcess, get_json};

const AT: &str = "2026-12-07T12:00:00.000Z";
/// Clients the backlog is written from (a device each: the till bounds what one may queue).
const BACKLOG_CLIENTS: u8 = 8;
/// Longest a drain is watched; a slower one is reported at the rate it reached.
const DRAIN_WATCH: Duration = Duration::from_secs(180);
/// Clients flooding the till in the fairness run, besides the cashier.
const FLOODERS: u8 = 4;
/// Sales the cashier rings in each phase of the fairness run.
const SALES: usize = 40;
/// A sale the hub has not seen after this long is reported as this long.
const SALE_GIVE_UP: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, Serialize)]
pub struct DrainRow {
    pub orders: usize,
    pub entries: u64,
    pub queue_secs: f64,
    pub drain_secs: f64,
    pub drained: u64,
    pub per_s: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Fairness {
    pub quiet_p50_ms: f64,
    pub quiet_p95_ms: f64,
    pub flood_p50_ms: f64,
    pub flood_p95_ms: f64,
    pub flood_accepted: u64,
    pub flood_refused: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct OutboxBench {
    pub drains: Vec<DrainRow>,
    pub fairness: Fairness,
}

fn client_from(last: u8) -> anyhow::Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .local_address(std::net::IpAddr::from([127, 0, 0, last]))
        .build()?)
}

fn mid() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// One order as a till rings it in one request: the order and a line.
fn order_request(shift: &str) -> (String, Value) {
    let order = mid();
    let body = json!({"mutations": [
        {"mid": mid(), "table": "order_header", "action": "insert",
         "row": {"id": order, "shift_id": shift, "opened_at": AT}},
        {"mid": mid(), "table": "order_line", "action": "insert",
         "row": {"id": mid(), "order_id": order, "name_en": "Dish", "qty": 1, "unit_price": 1000, "created_at": AT}},
    ]});
    (order, body)
}

/// A hub, a shift on it and a till following it with the shift merged.
async fn shop(tilld: &Path) -> anyhow::Result<(HubProcess, HubProcess, String)> {
    let dir = tempfile::tempdir()?;
    let hub_data = dir.path().join("hub");
    let till_data = dir.path().join("till");
    std::fs::create_dir_all(&hub_data)?;
    std::fs::create_dir_all(&till_data)?;
    let hub = HubProcess::start(tilld, &hub_data, &[], None)?;
    let till = HubProcess::spawn(
        tilld,
        &["--role", "till", "--hub", &hub.url],
        &till_data,
        &[],
        Some(dir),
    )?;
    let http = reqwest::Client::new();
    let shift = mid();
    http.post(format!("{}/api/mutations", hub.url))
        .json(
            &json!({"mutations": [{"mid": mid(), "table": "pos_shift", "action": "insert",
            "row": {"id": shift, "node_id": "bench", "cashier": "Bench", "opened_at": AT}}]}),
        )
        .send()
        .await?
        .error_for_status()?;
    wait_for(&http, &till.url, &format!("entity=shift&ids={shift}"), 60).await?;
    Ok((hub, till, shift))
}

/// Waits until `node` has the entity the query names.
async fn wait_for(
    http: &reqwest::Client,
    node: &str,
    query: &str,
    secs: u64,
) -> anyhow::Result<()> {
    let t = Instant::now();
    loop {
        if let Ok(v) = get_json(http, &format!("{node}/api/entities?{query}")).await
            && v["items"].as_array().is_some_and(|i| !i.is_empty())
        {
            return Ok(());
        }
        anyhow::ensure!(t.elapsed().as_secs() < secs, "{query} not at {node}");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

async fn outbox_total(http: &reqwest::Client, till: &str) -> anyhow::Result<u64> {
    let v = get_json(http, &format!("{till}/api/outbox?limit=1")).await?;
    Ok(v["pending_total"].as_u64().unwrap_or(0) + v["rejected_total"].as_u64().unwrap_or(0))
}

fn signal(pid: u32, sig: &str) -> anyhow::Result<()> {
    let ok = std::process::Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()?
        .success();
    anyhow::ensure!(ok, "kill {sig} {pid}");
    Ok(())
}

/// Writes `orders` to a till whose hub is frozen, thaws the hub and times the drain.
async fn drain(tilld: &Path, orders: usize) -> anyhow::Result<DrainRow> {
    let (hub, till, shift) = shop(tilld).await?;
    signal(hub.pid(), "-STOP")?;
    let t = Instant::now();
    let next = Arc::new(AtomicU64::new(0));
    let mut writers = Vec::new();
    for c in 0..BACKLOG_CLIENTS {
        let (http, next, url, shift) = (
            client_from(2 + c)?,
            next.clone(),
            till.url.clone(),
            shift.clone(),
        );
        writers.push(tokio::spawn(async move {
            while next.fetch_add(1, Ordering::Relaxed) < orders as u64 {
                let (_, body) = order_request(&shift);
                let r = http
                    .post(format!("{url}/api/mutations"))
                    .json(&body)
                    .send()
                    .await?;
                anyhow::ensure!(r.status().is_success(), "till refused: {}", r.status());
            }
            anyhow::Ok(())
        }));
    }
    for w in writers {
        w.await??;
    }
    let queue_secs = t.elapsed().as_secs_f64();
    let http = reqwest::Client::new();
    let entries = outbox_total(&http, &till.url).await?;
    signal(hub.pid(), "-CONT")?;
    let t = Instant::now();
    let mut left = entries;
    while left > 0 && t.elapsed() < DRAIN_WATCH {
        tokio::time::sleep(Duration::from_millis(200)).await;
        left = outbox_total(&http, &till.url).await?;
    }
    let drain_secs = t.elapsed().as_secs_f64();
    let drained = entries - left;
    Ok(DrainRow {
        orders,
        entries,
        queue_secs,
        drain_secs,
        drained,
        per_s: drained as f64 / drain_secs,
    })
}

/// Ms from a cashier's sale at the till until the hub has it, for `SALES` sales one at a time.
/// A sale not at the hub within [`SALE_GIVE_UP`] counts as that long and ends the phase.
async fn sales(
    http: &reqwest::Client,
    till: &str,
    hub: &str,
    shift: &str,
) -> anyhow::Result<Vec<f64>> {
    let mut ms = Vec::new();
    for _ in 0..SALES {
        let (order, body) = order_request(shift);
        let t = Instant::now();
        http.post(format!("{till}/api/mutations"))
            .json(&body)
            .send()
            .await?
            .error_for_status()?;
        let arrived = wait_for(
            http,
            hub,
            &format!("entity=order&ids={order}"),
            SALE_GIVE_UP.as_secs(),
        )
        .await;
        ms.push(t.elapsed().as_secs_f64() * 1000.0);
        if arrived.is_err() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    ms.sort_by(f64::total_cmp);
    Ok(ms)
}

fn pct(v: &[f64], p: f64) -> f64 {
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

async fn fairness(tilld: &Path) -> anyhow::Result<Fairness> {
    let (hub, till, shift) = shop(tilld).await?;
    let cashier = client_from(1)?;
    let quiet = sales(&cashier, &till.url, &hub.url, &shift).await?;
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (accepted, refused) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let mut flood = Vec::new();
    for c in 0..FLOODERS {
        let (http, url, shift) = (client_from(2 + c)?, till.url.clone(), shift.clone());
        let (stop, accepted, refused) = (stop.clone(), accepted.clone(), refused.clone());
        flood.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let (_, body) = order_request(&shift);
                match http
                    .post(format!("{url}/api/mutations"))
                    .json(&body)
                    .send()
                    .await
                {
                    Ok(r) if r.status().is_success() => accepted.fetch_add(1, Ordering::Relaxed),
                    _ => refused.fetch_add(1, Ordering::Relaxed),
                };
            }
        }));
    }
    // The flood builds a backlog first, as four looping clients do within seconds.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let flooded = sales(&cashier, &till.url, &hub.url, &shift).await;
    stop.store(true, Ordering::Relaxed);
    for f in flood {
        let _ = f.await;
    }
    let flooded = flooded?;
    Ok(Fairness {
        quiet_p50_ms: pct(&quiet, 0.5),
        quiet_p95_ms: pct(&quiet, 0.95),
        flood_p50_ms: pct(&flooded, 0.5),
        flood_p95_ms: pct(&flooded, 0.95),
        flood_accepted: accepted.load(Ordering::Relaxed),
        flood_refused: refused.load(Ordering::Relaxed),
    })
}

pub async fn measure(tilld: &Path, backlogs: &[usize]) -> anyhow::Result<OutboxBench> {
    eprintln!("outbox: a cashier's sale while {FLOODERS} clients flood the till...");
    let fairness = fairness(tilld).await?;
    let mut drains = Vec::new();
    for &orders in backlogs {
        eprintln!("outbox: a backlog of {orders} offline orders drained...");
        drains.push(drain(tilld, orders).await?);
    }
    Ok(OutboxBench { drains, fairness })
}

impl OutboxBench {
    pub fn table(&self) -> String {
        use std::fmt::Write as _;
        let f = &self.fairness;
        let mut out = String::new();
        let _ = writeln!(
            out,
            "\nA till's outbox (real hub and till; sale latency = POST at the till until the hub has the order)\n"
        );
        let _ = writeln!(out, "| sale at the till | p50 | p95 |\n|---|---|---|");
        let _ = writeln!(
            out,
            "| no other client (baseline) | {:.1} ms | {:.1} ms |",
            f.quiet_p50_ms, f.quiet_p95_ms
        );
        let _ = writeln!(
            out,
            "| {FLOODERS} clients flooding the same till ({} writes taken, {} refused) | {:.1} ms | {:.1} ms |",
            f.flood_accepted, f.flood_refused, f.flood_p50_ms, f.flood_p95_ms
        );
        let _ = writeln!(
            out,
            "\n| offline backlog | entries | written in | drained | in | mutations/s |\n|---|---|---|---|---|---|"
        );
        for d in &self.drains {
            let _ = writeln!(
                out,
                "| {} orders | {} | {:.0} s | {} | {:.1} s | {:.0} |",
                d.orders, d.entries, d.queue_secs, d.drained, d.drain_secs, d.per_s
            );
        }
        out
    }
}
