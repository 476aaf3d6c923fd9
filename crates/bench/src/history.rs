//! A shop with years behind it: the interactive paths (a screen opening, a till joining,
//! send to kitchen, a report, a search) measured on a real hub at demo size, a year
//! (100k orders) and ten years (1M), in the same run.
//!
//! The history is built the way `snapshot` builds a day: a day of the seeded rush written
//! through the real pipeline and counted by a Z report, then copied as past days (fresh ids,
//! each copy a day earlier, finished), then today's rush through the pipeline again.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use capsule_protocol::{MutationBatch, Schema};
use capsule_store::{ApplyMode, Store};
use serde::Serialize;
use serde_json::{Value, json};

use crate::run::HubProcess;

/// Orders in each day written through the pipeline.
const DAY: usize = 300;

#[derive(Debug, Clone, Serialize)]
pub struct HistoryRow {
    pub orders: usize,
    pub build_secs: f64,
    /// What a screen loads now (`GET /api/working-set`): bytes and ms.
    pub screen_bytes: usize,
    pub screen_ms: f64,
    /// What a screen loaded before (every row of every table, as `/api/snapshot` serves).
    pub old_screen_bytes: usize,
    pub old_screen_ms: f64,
    /// A till joining (the light snapshot): bytes and ms.
    pub join_bytes: usize,
    pub join_ms: f64,
    /// A real till process joining (`--role till`, fresh data): until it says "online" (it
    /// sells from then on), until it holds the whole history (copied in pages behind its day
    /// snapshot), and its peak memory once it has also served every screen; and the same
    /// with `--light` (which copies no history).
    pub till_join_ms: f64,
    pub till_history_ms: f64,
    pub till_join_rss_mib: f64,
    pub light_till_join_ms: f64,
    pub light_till_join_rss_mib: f64,
    pub send_to_kitchen_ms: f64,
    pub x_report_ms: f64,
    pub z_list_ms: f64,
    /// Median of the order searches (by number, table, amount, card reference, date).
    pub search_ms: f64,
    pub search_max_ms: f64,
    pub hub_peak_rss_mib: f64,
    pub disk_bytes_per_order: f64,
    /// Each screen opened in chromium (None: no chromium or node here, with the reason).
    pub screens: Result<Vec<ScreenLoad>, String>,
}

/// One screen opened in a real browser (`tests/browser/screen-load.mjs`).
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct ScreenLoad {
    pub screen: String,
    /// Until it is usable: its data loaded and a frame painted.
    pub ms: f64,
    /// API bytes as sent (compressed).
    pub api_bytes: f64,
    pub heap_mib: f64,
}

/// Opens every screen of the node at `url` in Debian's chromium (through the browser test's
/// playwright-core), one after the other.
fn screens_in_browser(url: &str) -> Result<Vec<ScreenLoad>, String> {
    let script = Path::new("tests/browser/screen-load.mjs");
    if !Path::new("tests/browser/node_modules/playwright-core").is_dir() {
        return Err("tests/browser has no node_modules (run scripts/deps)".into());
    }
    let out = std::process::Command::new("node")
        .arg(script)
        .arg(url)
        .output()
        .map_err(|e| format!("node: {e}"))?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr)
            .chars()
            .take(300)
            .collect());
    }
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).map_err(|e| format!("{e}: {l}")))
        .collect()
}

#[derive(Debug, Clone, Serialize)]
pub struct History {
    pub rows: Vec<HistoryRow>,
}

/// Copies the rows of the day just counted `copies` times as earlier, finished days.
fn copy_days(db: &Path, copies: usize) -> anyhow::Result<()> {
    if copies == 0 {
        return Ok(());
    }
    let mut conn = capsule_store::configured_connection(db, capsule_store::Durability::Full)?;
    let tx = conn.transaction()?;
    // Shifts and Z reports stay as they are (a copied day would need its own numbers), and so
    // does the configuration.
    let tables: Vec<String> = Schema::builtin()
        .tables
        .keys()
        .filter(|t| {
            !matches!(
                t.as_str(),
                "pos_shift"
                    | "z_report"
                    | "shop_settings"
                    | "menu_category"
                    | "menu_item"
                    | "menu_modifier"
                    | "printer"
            )
        })
        .cloned()
        .collect();
    for table in &tables {
        // Each copy reads the counted day, not the copies before it: the cost stays linear.
        tx.execute_batch(&format!(
            "CREATE TEMP TABLE \"base_{table}\" AS SELECT * FROM \"{table}\";"
        ))?;
        let cols = crate::snapshot::table_columns(&tx, table)?;
        // Oldest first, as a shop writes them: ids and opening times grow at the end of
        // every table and index.
        for k in (1..=copies).rev() {
            crate::snapshot::insert_copy(&tx, table, &cols, &format!("\"base_{table}\""), k, true)?;
        }
        tx.execute_batch(&format!("DROP TABLE \"base_{table}\";"))?;
    }
    tx.commit()?;
    Ok(())
}

/// Builds the shop: a day counted by Z #1, `orders / DAY - 1` copies of it as earlier days,
/// then today's rush (part paid, part open). Returns the orders it holds.
fn build(db: &Path, orders: usize, seed: u64) -> anyhow::Result<usize> {
    let past_days = (orders / DAY).max(1);
    // (The rush is still going when each day's writing stops: tables busy at closing time.)
    crate::snapshot::build_day(db, DAY, seed)?;
    {
        let store = Store::open(db, Arc::new(Schema::builtin()))?;
        let (_, z) = store.plan_z_report(Some("bench"))?;
        store.apply(
            &MutationBatch {
                mutations: vec![z],
                source: None,
            },
            &ApplyMode::Authoritative {
                source: "bench".into(),
            },
        )?;
    }
    copy_days(db, past_days - 1)?;
    crate::snapshot::build_day(db, DAY, seed + 1)?;
    Ok(past_days * DAY + DAY)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

async fn timed(http: &reqwest::Client, url: &str) -> anyhow::Result<(f64, Value)> {
    let t = Instant::now();
    let v = crate::run::get_json(http, url).await?;
    Ok((t.elapsed().as_secs_f64() * 1000.0, v))
}

async fn post(http: &reqwest::Client, url: &str, body: Value) -> anyhow::Result<Value> {
    Ok(http
        .post(url)
        .json(&body)
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?)
}

/// Median ms of `n` sends to the kitchen of a new order with three lines.
async fn send_to_kitchen(http: &reqwest::Client, hub: &str, n: usize) -> anyhow::Result<f64> {
    let shift = uuid::Uuid::new_v4().to_string();
    let at = "2026-12-07T12:00:00.000Z";
    post(
        http,
        &format!("{hub}/api/mutations"),
        json!({"mutations": [{"mid": uuid::Uuid::new_v4().to_string(), "table": "pos_shift", "action": "insert",
                "row": {"id": shift, "node_id": "bench", "cashier": "Bench", "opened_at": at}}]}),
    )
    .await?;
    let mut ms = Vec::new();
    for _ in 0..n {
        let order = uuid::Uuid::new_v4().to_string();
        let mut muts = vec![
            json!({"mid": uuid::Uuid::new_v4().to_string(), "table": "order_header", "action": "insert",
                "row": {"id": order, "shift_id": shift, "opened_at": at}}),
        ];
        for (i, station) in ["grill", "cold", "bar"].iter().enumerate() {
            muts.push(json!({"mid": uuid::Uuid::new_v4().to_string(), "table": "order_line", "action": "insert",
                "row": {"id": uuid::Uuid::new_v4().to_string(), "order_id": order, "line_no": i, "name_en": "Dish",
                        "qty": 1, "unit_price": 1000, "station": station, "created_at": at}}));
        }
        post(
            http,
            &format!("{hub}/api/mutations"),
            json!({ "mutations": muts }),
        )
        .await?;
        let t = Instant::now();
        post(
            http,
            &format!("{hub}/api/orders/{order}/send-to-kitchen"),
            json!({}),
        )
        .await?;
        ms.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    Ok(median(ms))
}

/// Polls the node's `/api/status` at `url` until `done` says so, at most `limit_s` seconds
/// after `since`.
async fn wait_status(
    http: &reqwest::Client,
    url: &str,
    since: Instant,
    limit_s: u64,
    what: &str,
    done: impl Fn(&serde_json::Value) -> bool,
) -> anyhow::Result<()> {
    loop {
        if let Ok(s) = crate::run::get_json(http, url).await
            && done(&s)
        {
            return Ok(());
        }
        anyhow::ensure!(
            since.elapsed().as_secs() < limit_s,
            "the till did not {what} in {limit_s} s"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// Starts a till following `hub` on fresh data; returns ms until it is online, ms until it
/// holds what it keeps of the history, and its peak resident memory after it has also served
/// every screen to a browser.
async fn till_joins(tilld: &Path, hub: &str, extra: &[&str]) -> anyhow::Result<(f64, f64, f64)> {
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("till");
    std::fs::create_dir_all(&data)?;
    let t = Instant::now();
    let till = HubProcess::spawn(
        tilld,
        &["--role", "till", "--hub", hub],
        &data,
        extra,
        Some(dir),
    )?;
    let http = reqwest::Client::new();
    let status = format!("{}/api/status", till.url);
    wait_status(&http, &status, t, 900, "come online", |s| {
        s["state"] == "online"
    })
    .await?;
    let ms = t.elapsed().as_secs_f64() * 1000.0;
    wait_status(&http, &status, t, 3600, "copy the history", |s| {
        s["history_copying"].is_null()
    })
    .await?;
    let history_ms = t.elapsed().as_secs_f64() * 1000.0;
    // Then the till serves its own screens (as the desktop app's do): its memory after that.
    let url = till.url.clone();
    let _ = tokio::task::spawn_blocking(move || screens_in_browser(&url)).await?;
    Ok((ms, history_ms, till.peak_rss_mib()))
}

async fn measure_one(tilld: &Path, orders: usize, seed: u64) -> anyhow::Result<HistoryRow> {
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("hub");
    std::fs::create_dir_all(&data)?;
    let db = data.join("node.sqlite3");
    let t = Instant::now();
    let db2 = db.clone();
    let orders = tokio::task::spawn_blocking(move || build(&db2, orders, seed)).await??;
    let build_secs = t.elapsed().as_secs_f64();
    let disk: u64 = std::fs::read_dir(&data)?
        .filter_map(|e| e.ok()?.metadata().ok())
        .map(|m| m.len())
        .sum();
    let hub = HubProcess::start(tilld, &data, &[], Some(dir))?;
    let http = reqwest::Client::new();
    let screen = crate::snapshot::timed_get(&hub.url, "/api/working-set").await?;
    let join = crate::snapshot::timed_get(&hub.url, "/api/snapshot?light=1").await?;
    let old = crate::snapshot::timed_get(&hub.url, "/api/snapshot").await?;
    let send = send_to_kitchen(&http, &hub.url, 15).await?;
    let (till_join_ms, till_history_ms, till_join_rss_mib) =
        till_joins(tilld, &hub.url, &[]).await?;
    let (light_till_join_ms, _, light_till_join_rss_mib) =
        till_joins(tilld, &hub.url, &["--light"]).await?;
    let mut x = Vec::new();
    let mut zl = Vec::new();
    for _ in 0..5 {
        x.push(timed(&http, &format!("{}/api/reports/x", hub.url)).await?.0);
        zl.push(timed(&http, &format!("{}/api/reports/z", hub.url)).await?.0);
    }
    // Searches a manager makes: a number, a table on a day, an amount, a card reference,
    // a day's orders, and the newest orders (no condition).
    let (_, newest) = timed(&http, &format!("{}/api/orders?limit=1", hub.url)).await?;
    let total = newest["orders"][0]["total"].as_i64().unwrap_or(0);
    let searches = [
        "number=150".to_string(),
        "table=T3&from=2026-06-01T00:00:00Z&to=2026-06-02T00:00:00Z".to_string(),
        format!("amount={total}"),
        "reference=nobody-has-this".to_string(),
        "from=2026-06-01T00:00:00Z&to=2026-06-02T00:00:00Z".to_string(),
        "table=T3".to_string(),
        String::new(),
    ];
    let mut search = Vec::new();
    for q in &searches {
        for _ in 0..5 {
            search.push(
                timed(&http, &format!("{}/api/orders?{q}", hub.url))
                    .await?
                    .0,
            );
        }
    }
    let search_max_ms = search.iter().copied().fold(0.0, f64::max);
    let url = hub.url.clone();
    let screens = tokio::task::spawn_blocking(move || screens_in_browser(&url)).await?;
    Ok(HistoryRow {
        orders,
        build_secs,
        screen_bytes: screen.bytes,
        screen_ms: screen.ms,
        old_screen_bytes: old.bytes,
        old_screen_ms: old.ms,
        join_bytes: join.bytes,
        join_ms: join.ms,
        till_join_ms,
        till_history_ms,
        till_join_rss_mib,
        light_till_join_ms,
        light_till_join_rss_mib,
        send_to_kitchen_ms: send,
        x_report_ms: median(x),
        z_list_ms: median(zl),
        search_ms: median(search),
        search_max_ms,
        hub_peak_rss_mib: hub.peak_rss_mib(),
        disk_bytes_per_order: disk as f64 / orders as f64,
        screens,
    })
}

pub async fn measure(sizes: &[usize], tilld: &Path, seed: u64) -> anyhow::Result<History> {
    let mut rows = Vec::new();
    for &orders in sizes {
        eprintln!("history: a shop with {orders} orders behind it...");
        rows.push(measure_one(tilld, orders, seed).await?);
    }
    Ok(History { rows })
}

impl History {
    pub fn table(&self) -> String {
        use std::fmt::Write as _;
        let mut out = String::new();
        let _ = writeln!(
            out,
            "| history (orders) | screen data now | screen ms | screen data before (whole tables) | before ms | light snapshot | ms | till joins (full): online s / whole history s, peak MiB after its screens | light till joins: s, peak MiB after its screens | send to kitchen ms | X ms | Z list ms | search median / max ms | hub peak RSS MiB | disk per order | built in s |"
        );
        let _ = writeln!(
            out,
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
        );
        for r in &self.rows {
            let _ = writeln!(
                out,
                "| {} | {} | {:.0} | {} | {:.0} | {} | {:.0} | {:.2} s / {:.1} s, {:.0} | {:.2} s, {:.0} | {:.1} | {:.1} | {:.1} | {:.1} / {:.1} | {:.0} | {:.1} KB | {:.0} |",
                r.orders,
                kb(r.screen_bytes),
                r.screen_ms,
                kb(r.old_screen_bytes),
                r.old_screen_ms,
                kb(r.join_bytes),
                r.join_ms,
                r.till_join_ms / 1000.0,
                r.till_history_ms / 1000.0,
                r.till_join_rss_mib,
                r.light_till_join_ms / 1000.0,
                r.light_till_join_rss_mib,
                r.send_to_kitchen_ms,
                r.x_report_ms,
                r.z_list_ms,
                r.search_ms,
                r.search_max_ms,
                r.hub_peak_rss_mib,
                r.disk_bytes_per_order / 1000.0,
                r.build_secs
            );
        }
        let _ = writeln!(
            out,
            "\n| history (orders) | screen in chromium | usable ms | API data (compressed) | JS heap MiB |\n|---|---|---|---|---|"
        );
        for r in &self.rows {
            match &r.screens {
                Ok(screens) => {
                    for sc in screens {
                        let _ = writeln!(
                            out,
                            "| {} | {} | {:.0} | {} | {:.1} |",
                            r.orders,
                            sc.screen,
                            sc.ms,
                            kb(sc.api_bytes as usize),
                            sc.heap_mib
                        );
                    }
                }
                Err(why) => {
                    let _ = writeln!(out, "| {} | not measured: {why} | | | |", r.orders);
                }
            }
        }
        out
    }
}

fn kb(b: usize) -> String {
    if b >= 1_000_000 {
        format!("{:.1} MB", b as f64 / 1e6)
    } else {
        format!("{:.0} KB", b as f64 / 1e3)
    }
}
