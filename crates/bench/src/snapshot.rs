//! Snapshot size and build time, light vs full, for a day of orders written through the real
//! pipeline and served by a real hub over HTTP.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use capsule_bench::workload::{Rush, RushConfig};
use capsule_protocol::{Action, MutationBatch, Schema};
use capsule_store::{ApplyMode, Store};
use serde::Serialize;

use crate::Args;
use crate::run::HubProcess;

#[derive(Debug, Clone, Serialize)]
pub struct Snapshots {
    pub orders: usize,
    /// Mutations written through the pipeline (the first tenth of the day).
    pub mutations: usize,
    pub build_secs: f64,
    pub full_bytes: usize,
    pub full_wire_bytes: u64,
    /// Until the last compressed byte arrived.
    pub full_ms: f64,
    /// Until the last byte was decoded by a client on the same machine.
    pub full_decoded_ms: f64,
    pub light_bytes: usize,
    pub light_wire_bytes: u64,
    pub light_ms: f64,
    pub light_decoded_ms: f64,
    /// The hub's peak resident memory after serving them (streamed, so not the day's size).
    pub hub_peak_rss_mib: f64,
}

/// Writes the day: the rush until `orders` orders have been opened (the last few are still in
/// progress at closing time, as in a real day), batched into large transactions.
pub(crate) fn build_day(path: &Path, orders: usize, seed: u64) -> anyhow::Result<usize> {
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
        // Whole steps, at most the 200 mutations a request may carry.
        if pending.len() + step.batch.mutations.len() > 200 {
            total += pending.len();
            store.apply(
                &MutationBatch {
                    mutations: std::mem::take(&mut pending),
                    source: None,
                },
                &mode,
            )?;
        }
        // The hub numbers the orders (as it does a till's): a day written after earlier days
        // continues their numbers instead of taking #1 again (refused: the number is taken).
        pending.extend(step.batch.mutations.into_iter().map(|mut m| {
            if m.table == "order_header" && m.action == Action::Insert {
                m.row.remove("order_no");
            }
            m
        }));
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

/// How many times the pipeline-written part of the day is repeated.
const COPIES: usize = 10;

/// Copies every synced row `copies` times with fresh ids (`z<k>…`, references renamed
/// alike), as finished business: orders closed, jobs ready, rounds served. Derived values
/// are carried over, so the copies are as large as real rows.
fn copy_as_history(db: &Path, copies: usize) -> anyhow::Result<()> {
    let mut conn = capsule_store::configured_connection(db, capsule_store::Durability::Full)?;
    let tx = conn.transaction()?;
    // The day's shifts stay as they are; the copied orders belong to them.
    for table in Schema::builtin()
        .tables
        .keys()
        .filter(|t| *t != "pos_shift")
    {
        let cols = table_columns(&tx, table)?;
        for k in 1..=copies {
            let source = format!("\"{table}\" WHERE id NOT LIKE 'z%'");
            insert_copy(&tx, table, &cols, &source, k, false)?;
        }
    }
    tx.commit()?;
    Ok(())
}

/// The columns `table` has in the file, in order.
pub(crate) fn table_columns(
    conn: &capsule_store::rusqlite::Connection,
    table: &str,
) -> anyhow::Result<Vec<String>> {
    Ok(conn
        .prepare(&format!("PRAGMA table_info(\"{table}\")"))?
        .query_map([], |r| r.get::<_, String>(1))?
        .collect::<Result<_, _>>()?)
}

/// The highest copy number a 3-digit base-36 prefix holds.
pub(crate) const LAST_COPY: usize = 36 * 36 * 36 - 1;

/// What copy `k`'s ids start with instead of their first 4 characters: `z` and `k` in base 36
/// (3 digits), so copies sort after every real id and after the copies before them.
fn copy_prefix(k: usize) -> String {
    const DIGITS: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    assert!(k <= LAST_COPY, "copy {k} has no 3-digit number");
    let d = |n: usize| DIGITS[n % 36] as char;
    format!("z{}{}{}", d(k / 1296), d(k / 36), d(k))
}

/// Inserts into `table` copy number `k` of the rows `SELECT * FROM {source}` reads, as
/// finished business: ids and references renamed (`copy_prefix`), orders closed, jobs ready,
/// rounds served, derived values carried over. With `days_earlier`, orders open `k` days
/// earlier and card references are made unique (a past day's, for the order search).
pub(crate) fn insert_copy(
    conn: &capsule_store::rusqlite::Connection,
    table: &str,
    cols: &[String],
    source: &str,
    k: usize,
    days_earlier: bool,
) -> anyhow::Result<()> {
    let renamed = ["id", "order_id", "batch_id", "job_id", "order_line_id"];
    let finished = [
        ("order_header", "closed"),
        ("job_order_header", "ready"),
        ("job_order_batch", "served"),
    ];
    let exprs: Vec<String> = cols
        .iter()
        .map(|c| {
            if renamed.contains(&c.as_str()) {
                // Each copy's ids sort after every row before it, as a real shop's UUIDv7
                // ids do (a day's rows go at the end of each table and its key index); a
                // suffix would put every copy among the original's rows, a pattern no shop
                // writes, which leaves half-empty pages behind.
                // (Same length as a real id, and in the same order within the copy: its first
                // 4 characters, the top bits of a timestamp that change every 49 days, give
                // way to `z` and the copy's number in base 36.)
                format!(
                    "CASE WHEN \"{c}\" IS NULL THEN NULL ELSE '{}' || substr(\"{c}\", 5) END",
                    // Earlier days (written first) get the smaller numbers.
                    copy_prefix(if days_earlier { LAST_COPY - k } else { k })
                )
            } else if days_earlier && c == "reference" {
                // (a card payment's: a cash one has none)
                format!("CASE WHEN \"reference\" IS NULL THEN NULL ELSE \"id\" || '-{k}' END")
            } else if days_earlier && c == "opened_at" {
                format!("strftime('%Y-%m-%dT%H:%M:%fZ', \"opened_at\", '-{k} days')")
            } else if let Some((_, status)) = finished
                .iter()
                .find(|(t, _)| *t == table)
                .filter(|_| c == "status")
            {
                format!("'{status}'")
            } else {
                format!("\"{c}\"")
            }
        })
        .collect();
    let list: Vec<String> = cols.iter().map(|c| format!("\"{c}\"")).collect();
    conn.execute(
        &format!(
            "INSERT INTO \"{table}\" ({}) SELECT {} FROM {source}",
            list.join(", "),
            exprs.join(", ")
        ),
        [],
    )?;
    Ok(())
}

/// One snapshot GET, best of three: its size decoded and on the wire (from the hub's own count
/// of bytes sent), and the time until the last compressed byte arrived (what the hub's build,
/// encoding and sending cost; a till decodes on its own CPU, here it would share the hub's two
/// cores), plus, as a second column, the time when the client also decodes as it receives.
pub(crate) async fn timed_get(hub: &str, path: &str) -> anyhow::Result<Timed> {
    // Asks for zstd itself and keeps the body as it arrives.
    let raw = reqwest::Client::builder().no_zstd().no_gzip().build()?;
    // Asks for zstd and decodes as it receives, as a till's client does.
    let decoding = reqwest::Client::new();
    let sent = || async {
        let m = crate::run::get_json(&raw, &format!("{hub}/api/metrics")).await?;
        anyhow::Ok(m["rest_bytes_sent"].as_u64().unwrap_or(0))
    };
    let mut best = Timed {
        bytes: 0,
        wire: 0,
        ms: f64::MAX,
        decoded_ms: f64::MAX,
    };
    for _ in 0..3 {
        let before = sent().await?;
        let t = Instant::now();
        let packed = raw
            .get(format!("{hub}{path}"))
            .header(reqwest::header::ACCEPT_ENCODING, "zstd")
            .send()
            .await?
            .error_for_status()?
            .bytes()
            .await?;
        let ms = t.elapsed().as_secs_f64() * 1000.0;
        let wire = sent().await? - before;
        if ms < best.ms {
            // Small answers come uncompressed.
            let bytes = match zstd::decode_all(&packed[..]) {
                Ok(json) => json.len(),
                Err(_) => packed.len(),
            };
            (best.bytes, best.wire, best.ms) = (bytes, wire, ms);
        }
        let t = Instant::now();
        decoding
            .get(format!("{hub}{path}"))
            .send()
            .await?
            .error_for_status()?
            .bytes()
            .await?;
        best.decoded_ms = best.decoded_ms.min(t.elapsed().as_secs_f64() * 1000.0);
    }
    Ok(best)
}

pub(crate) struct Timed {
    pub bytes: usize,
    pub wire: u64,
    pub ms: f64,
    pub decoded_ms: f64,
}

pub async fn measure(args: &Args, tilld: &Path) -> anyhow::Result<Snapshots> {
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("hub");
    std::fs::create_dir_all(&data)?;
    let db = data.join("node.sqlite3");
    let (orders, seed) = (args.day_orders, args.seed);
    // The pipeline writes about 2,000 mutations a second on this machine, so a whole day
    // through it would take longer than the benchmark may. Write a tenth of it through the
    // pipeline, then copy it as finished history with fresh ids.
    let base = orders.div_ceil(COPIES);
    let t = Instant::now();
    let mutations = tokio::task::spawn_blocking(move || -> anyhow::Result<usize> {
        let n = build_day(&db, base, seed)?;
        copy_as_history(&db, COPIES - 1)?;
        Ok(n)
    })
    .await??;
    let build_secs = t.elapsed().as_secs_f64();
    let orders = base * COPIES;
    let hub = HubProcess::start(tilld, &data, &[], Some(dir))?;
    let full = timed_get(&hub.url, "/api/snapshot").await?;
    let light = timed_get(&hub.url, "/api/snapshot?light=1").await?;
    let hub_peak_rss_mib = hub.peak_rss_mib();
    Ok(Snapshots {
        orders,
        mutations,
        build_secs,
        full_bytes: full.bytes,
        full_wire_bytes: full.wire,
        full_ms: full.ms,
        full_decoded_ms: full.decoded_ms,
        light_bytes: light.bytes,
        light_wire_bytes: light.wire,
        light_ms: light.ms,
        light_decoded_ms: light.decoded_ms,
        hub_peak_rss_mib,
    })
}
