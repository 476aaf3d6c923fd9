//! Snapshot size and build time, light vs full, for a day of orders written through the real
//! pipeline and served by a real hub over HTTP.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use capsule_bench::workload::{Rush, RushConfig};
use capsule_protocol::{MutationBatch, Schema};
use capsule_store::{ApplyMode, Store};
use serde::Serialize;

use crate::Args;
use crate::run::HubProcess;

#[derive(Debug, Clone, Serialize)]
pub struct Snapshots {
    pub orders: usize,
    pub mutations: usize,
    pub build_secs: f64,
    pub full_bytes: usize,
    pub full_ms: f64,
    pub light_bytes: usize,
    pub light_ms: f64,
}

/// Writes the day: the rush until `orders` orders have been opened (the last few are still in
/// progress at closing time, as in a real day), batched into large transactions.
fn build_day(path: &Path, orders: usize, seed: u64) -> anyhow::Result<usize> {
    let store = Store::open(path, Arc::new(Schema::builtin()))?;
    let mode = ApplyMode::Authoritative {
        source: "bench".into(),
    };
    let mut opened = 0;
    let mut pending = Vec::new();
    let mut total = 0;
    for step in Rush::new(RushConfig {
        seed,
        orders,
        concurrent: 40,
        tills: 20,
    }) {
        if step.what == "open order" {
            opened += 1;
            if opened > orders {
                break;
            }
        }
        pending.extend(step.batch.mutations);
        if pending.len() >= 500 {
            total += pending.len();
            store.apply(
                &MutationBatch {
                    mutations: std::mem::take(&mut pending),
                    source: None,
                },
                &mode,
            )?;
        }
        if opened == orders && step.what == "open order" {
            // Stop shortly after the last order opens, leaving the rush in progress.
            break;
        }
    }
    total += pending.len();
    if !pending.is_empty() {
        store.apply(
            &MutationBatch {
                mutations: pending,
                source: None,
            },
            &mode,
        )?;
    }
    Ok(total)
}

async fn timed_get(http: &reqwest::Client, url: &str) -> anyhow::Result<(usize, f64)> {
    let mut best = (0, f64::MAX);
    for _ in 0..3 {
        let t = Instant::now();
        let body = http
            .get(url)
            .send()
            .await?
            .error_for_status()?
            .bytes()
            .await?;
        let ms = t.elapsed().as_secs_f64() * 1000.0;
        if ms < best.1 {
            best = (body.len(), ms);
        }
    }
    Ok(best)
}

pub async fn measure(args: &Args, tilld: &Path) -> anyhow::Result<Snapshots> {
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("hub");
    std::fs::create_dir_all(&data)?;
    let db = data.join("node.sqlite3");
    let (orders, seed) = (args.day_orders, args.seed);
    let t = Instant::now();
    let mutations = tokio::task::spawn_blocking(move || build_day(&db, orders, seed)).await??;
    let build_secs = t.elapsed().as_secs_f64();
    let hub = HubProcess::start(tilld, &data, &[], Some(dir))?;
    let http = reqwest::Client::new();
    let (full_bytes, full_ms) = timed_get(&http, &format!("{}/api/snapshot", hub.url)).await?;
    let (light_bytes, light_ms) =
        timed_get(&http, &format!("{}/api/snapshot?light=1", hub.url)).await?;
    Ok(Snapshots {
        orders,
        mutations,
        build_secs,
        full_bytes,
        full_ms,
        light_bytes,
        light_ms,
    })
}
