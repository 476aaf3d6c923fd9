//! Idle-shop latency: one write at a time into a quiet hub, timed until another till (a real
//! `tilld --role till` process) has merged it and announced it on its own `/ws`, beside the
//! floor measured in the same run under the same idle conditions (the write's HTTP round trip,
//! which includes the hub's fsynced commit, plus a loopback WebSocket round trip after the
//! same quiet spell), with a breakdown by stage.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context;
use futures_util::{SinkExt, StreamExt};
use serde::Serialize;
use serde_json::{Value, json};
use tokio_tungstenite::MaybeTlsStream;
use tokio_tungstenite::tungstenite::Message;

use crate::floor::percentile;
use crate::run::{HubProcess, get_json};

type Ws = tokio_tungstenite::WebSocketStream<MaybeTlsStream<tokio::net::TcpStream>>;

#[derive(Debug, Clone, Serialize)]
pub struct Stage {
    pub name: String,
    pub p50_ms: f64,
    pub p99_ms: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Idle {
    /// The hub and the till paired (TLS 1.3 between them, signed gossip, the route guard).
    pub paired: bool,
    pub writes: usize,
    /// Quiet time between writes (longer than the hub's coalescing window and the till's
    /// pull window, so every write meets idle leading edges).
    pub gap_ms: u64,
    /// Cumulative times from sending the write, per stage.
    pub stages: Vec<Stage>,
    /// Loopback WebSocket echo after the same quiet spell.
    pub ws_rtt_p50_ms: f64,
    pub floor_p50_ms: f64,
    pub floor_p99_ms: f64,
    pub merged_p50_ms: f64,
    pub merged_p99_ms: f64,
}

/// Reads frames until one mentions `id`; returns when it arrived.
async fn until_mentioned(ws: &mut Ws, id: &str) -> anyhow::Result<Instant> {
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .context("no frame within 10 s")?
            .context("stream closed")??;
        if let Ok(text) = msg.to_text()
            && text.contains(id)
        {
            return Ok(Instant::now());
        }
    }
}

fn ws_url(base: &str) -> String {
    format!("{}/ws", base.replacen("http", "ws", 1))
}

/// A loopback WebSocket echo server; returns its URL.
async fn echo_server() -> anyhow::Result<(String, tokio::task::JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let task = tokio::spawn(async move {
        if let Ok((tcp, _)) = listener.accept().await {
            let _ = tcp.set_nodelay(true);
            if let Ok(mut ws) = tokio_tungstenite::accept_async(tcp).await {
                while let Some(Ok(m)) = ws.next().await {
                    if m.is_text() && ws.send(m).await.is_err() {
                        break;
                    }
                }
            }
        }
    });
    Ok((format!("ws://{addr}"), task))
}

/// A client that calls a node as this machine's own screens do (its launch key).
fn local_client(data: &Path) -> anyhow::Result<(reqwest::Client, String)> {
    let key = std::fs::read_to_string(data.join("local.key"))?;
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(
        reqwest::header::AUTHORIZATION,
        format!("Bearer {}", key.trim()).parse()?,
    );
    Ok((
        reqwest::Client::builder()
            .default_headers(headers)
            .build()?,
        key.trim().to_string(),
    ))
}

/// Opens `url`'s `/ws` with the node's launch key.
async fn open_ws(url: &str, key: &str) -> anyhow::Result<Ws> {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut request = ws_url(url).into_client_request()?;
    request
        .headers_mut()
        .insert("authorization", format!("Bearer {key}").parse()?);
    Ok(tokio_tungstenite::connect_async(request).await?.0)
}

/// Pairs the device at `data` with `hub` (a code from its "Add a device", then `tilld pair`).
pub(crate) async fn pair_with_hub(
    tilld: &Path,
    hub: &HubProcess,
    hub_data: &Path,
    data: &Path,
    role: &str,
) -> anyhow::Result<()> {
    let (http, _) = local_client(hub_data)?;
    let offer: Value = http
        .post(format!("{}/api/pair/offer", hub.url))
        .json(&json!({}))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let code = offer["code"].as_str().context("a pairing code")?;
    let out = std::process::Command::new(tilld)
        .args(["pair", "--code", code, "--peer", &hub.url, "--role", role])
        .arg("--data")
        .arg(data)
        .output()?;
    anyhow::ensure!(out.status.success(), "tilld pair: {out:?}");
    Ok(())
}

pub async fn measure(tilld: &Path, writes: usize, paired: bool) -> anyhow::Result<Idle> {
    let dir = tempfile::tempdir()?;
    let (hub_data, till_data) = (dir.path().join("hub"), dir.path().join("till"));
    let hub = HubProcess::start(tilld, &hub_data, &[], None)?;
    if paired {
        pair_with_hub(tilld, &hub, &hub_data, &till_data, "till").await?;
    }
    let till = HubProcess::spawn(
        tilld,
        &["--role", "till", "--hub", &hub.url],
        &till_data,
        &[],
        None,
    )?;
    let (http, hub_key) = local_client(&hub_data)?;
    let (till_http, till_key) = local_client(&till_data)?;
    let post = |body: Value| {
        http.post(format!("{}/api/mutations", hub.url))
            .json(&body)
            .send()
    };
    post(
        json!({"mutations": [{"mid": uuid::Uuid::new_v4().to_string(), "table": "pos_shift",
        "action": "insert", "row": {"id": "idle-shift", "node_id": "bench", "cashier": "Bench",
        "opened_at": "2026-11-25T08:00:00Z"}}]}),
    )
    .await?
    .error_for_status()?;
    // The till is online once its status says so.
    let t = Instant::now();
    loop {
        let s = get_json(&till_http, &format!("{}/api/status", till.url)).await?;
        if s["state"] == "online" {
            break;
        }
        anyhow::ensure!(
            t.elapsed() < Duration::from_secs(30),
            "till not online: {s}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut hub_ws = open_ws(&hub.url, &hub_key).await?;
    let mut till_ws = open_ws(&till.url, &till_key).await?;
    let (echo_url, echo_task) = echo_server().await?;
    let (mut echo, _) = tokio_tungstenite::connect_async(&echo_url).await?;
    let gap = Duration::from_millis(300);
    let warmup = 20;
    let (mut answered, mut published, mut merged, mut rtt) = (vec![], vec![], vec![], vec![]);
    for i in 0..writes + warmup {
        // The floor's WebSocket round trip, taken after the same quiet spell as a write (on
        // an idle machine every wake-up costs more than in a hot loop).
        tokio::time::sleep(gap).await;
        let t = Instant::now();
        echo.send(Message::text(r#"{"type":"capsule","seq":1}"#))
            .await?;
        echo.next().await.context("echo closed")??;
        if i >= warmup {
            rtt.push(t.elapsed().as_secs_f64() * 1000.0);
        }
        tokio::time::sleep(gap).await;
        let id = uuid::Uuid::new_v4().to_string();
        let t0 = Instant::now();
        let r = post(
            json!({"source": "bench-idle", "mutations": [{"mid": uuid::Uuid::new_v4().to_string(),
            "table": "order_header", "action": "insert", "row": {"id": id, "shift_id": "idle-shift",
            "opened_at": "2026-11-25T12:00:00Z", "table_label": "T9"}}]}),
        )
        .await?;
        anyhow::ensure!(r.status().is_success(), "write refused: {}", r.status());
        let t_answer = Instant::now();
        let (t_pub, t_merged) = tokio::try_join!(
            until_mentioned(&mut hub_ws, &id),
            until_mentioned(&mut till_ws, &id)
        )?;
        if i >= warmup {
            let ms = |t: Instant| t.duration_since(t0).as_secs_f64() * 1000.0;
            answered.push(ms(t_answer));
            published.push(ms(t_pub));
            merged.push(ms(t_merged));
        }
    }
    // A sale rung up at the till: its local commit, sent on to the hub (over TLS when paired)
    // and answered once the hub confirmed it.
    let mut at_till = Vec::with_capacity(writes);
    for i in 0..writes + warmup {
        tokio::time::sleep(gap).await;
        let t0 = Instant::now();
        let r = till_http
            .post(format!("{}/api/mutations", till.url))
            .json(&json!({"mutations": [{"mid": uuid::Uuid::new_v4().to_string(),
            "table": "order_header", "action": "insert", "row": {"id": uuid::Uuid::new_v4().to_string(),
            "shift_id": "idle-shift", "opened_at": "2026-11-25T12:00:00Z", "table_label": "T8"}}]}))
            .send()
            .await?;
        anyhow::ensure!(r.status() == 200, "the hub did not confirm: {}", r.status());
        if i >= warmup {
            at_till.push(t0.elapsed().as_secs_f64() * 1000.0);
        }
    }
    at_till.sort_by(f64::total_cmp);
    let till_metrics = get_json(&till_http, &format!("{}/api/metrics", till.url)).await?;
    echo_task.abort();
    for v in [&mut answered, &mut published, &mut merged, &mut rtt] {
        v.sort_by(f64::total_cmp);
    }
    let stage = |name: &str, v: &[f64]| Stage {
        name: name.into(),
        p50_ms: percentile(v, 0.5),
        p99_ms: percentile(v, 0.99),
    };
    let replica = &till_metrics["replica"];
    let from_till = |name: &str, key: &str| Stage {
        name: name.into(),
        p50_ms: replica[key]["p50_ms"].as_f64().unwrap_or(0.0),
        p99_ms: replica[key]["p99_ms"].as_f64().unwrap_or(0.0),
    };
    Ok(Idle {
        paired,
        writes,
        gap_ms: gap.as_millis() as u64,
        stages: vec![
            stage(
                "write answered (HTTP round trip, hub commit fsynced)",
                &answered,
            ),
            stage("capsule read by a subscriber of the hub's /ws", &published),
            stage("merged and announced on the till's own /ws", &merged),
            from_till(
                "(the till's pull: one POST /api/pull, alone)",
                "pull_latency",
            ),
            from_till(
                "(the till's merge: one SQLite commit, alone)",
                "merge_latency",
            ),
            stage(
                "a write at the till, confirmed by the hub (its own round)",
                &at_till,
            ),
        ],
        ws_rtt_p50_ms: percentile(&rtt, 0.5),
        floor_p50_ms: percentile(&answered, 0.5) + percentile(&rtt, 0.5),
        floor_p99_ms: percentile(&answered, 0.99) + percentile(&rtt, 0.99),
        merged_p50_ms: percentile(&merged, 0.5),
        merged_p99_ms: percentile(&merged, 0.99),
    })
}

impl Idle {
    pub fn table(&self) -> String {
        let mut out = format!(
            "| idle shop{}: {} writes, {} ms apart (times from sending the write) | p50 ms | p99 ms |\n|---|---|---|\n",
            if self.paired {
                ", paired (TLS 1.3 hub <-> till)"
            } else {
                ", unpaired (plain HTTP)"
            },
            self.writes,
            self.gap_ms
        );
        for s in &self.stages {
            out += &format!("| {} | {:.2} | {:.2} |\n", s.name, s.p50_ms, s.p99_ms);
        }
        out += &format!(
            "| floor: write round trip + loopback WS round trip (idle: {:.2} ms) | {:.2} | {:.2} |\n| merged on the till, over the floor | +{:.2} | +{:.2} |\n",
            self.ws_rtt_p50_ms,
            self.floor_p50_ms,
            self.floor_p99_ms,
            self.merged_p50_ms - self.floor_p50_ms,
            self.merged_p99_ms - self.floor_p99_ms,
        );
        out
    }
}
