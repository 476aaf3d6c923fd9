//! The physical floor, measured in the same run: a bare WebSocket round trip on loopback and
//! one SQLite commit in the configuration the store uses (WAL, synchronous=FULL); and a commit
//! as wide as a hub write through the store's WAL VFS beside SQLite's own VFS, alternating.

use std::time::Instant;

use futures_util::{SinkExt, StreamExt};
use serde::Serialize;
use tokio_tungstenite::tungstenite::Message;

#[derive(Debug, Clone, Serialize)]
pub struct Floor {
    pub ws_rtt_p50_ms: f64,
    pub ws_rtt_p99_ms: f64,
    pub sqlite_commit_p50_ms: f64,
    pub sqlite_commit_p99_ms: f64,
    /// The same commit as a till's replica makes it (synchronous=NORMAL).
    pub replica_commit_p50_ms: f64,
    pub replica_commit_p99_ms: f64,
    /// A durable commit touching 16 B-trees (about what a hub write touches), through the
    /// store's WAL VFS and, alternating with it, through SQLite's own (the baseline).
    pub wide_commit_p50_ms: f64,
    pub wide_commit_p99_ms: f64,
    pub wide_commit_sqlite_vfs_p50_ms: f64,
    pub wide_commit_sqlite_vfs_p99_ms: f64,
}

pub fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

fn sorted(mut v: Vec<f64>) -> Vec<f64> {
    v.sort_by(f64::total_cmp);
    v
}

pub async fn measure() -> anyhow::Result<Floor> {
    // An echo server on loopback; the client times 2000 small text round trips.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let server = tokio::spawn(async move {
        if let Ok((tcp, _)) = listener.accept().await
            && let Ok(mut ws) = tokio_tungstenite::accept_async(tcp).await
        {
            while let Some(Ok(m)) = ws.next().await {
                if m.is_text() && ws.send(m).await.is_err() {
                    break;
                }
            }
        }
    });
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}")).await?;
    let frame = r#"{"type":"capsule","seq":1,"capsule":{"entity":"order","id":"x","parts":["status"],"v":1,"ts":0,"source":"t"}}"#;
    let mut rtts = Vec::new();
    for i in 0..2100 {
        let t = Instant::now();
        ws.send(Message::text(frame)).await?;
        ws.next()
            .await
            .ok_or_else(|| anyhow::anyhow!("echo closed"))??;
        if i >= 100 {
            rtts.push(t.elapsed().as_secs_f64() * 1000.0);
        }
    }
    drop(ws);
    server.abort();

    let hub_commits = commits(capsule_store::Durability::Full).await?;
    let replica_commits = commits(capsule_store::Durability::Replica).await?;
    let (wide, wide_sqlite_vfs) = wide_commits().await?;
    let rtts = sorted(rtts);
    Ok(Floor {
        ws_rtt_p50_ms: percentile(&rtts, 0.5),
        ws_rtt_p99_ms: percentile(&rtts, 0.99),
        sqlite_commit_p50_ms: percentile(&hub_commits, 0.5),
        sqlite_commit_p99_ms: percentile(&hub_commits, 0.99),
        replica_commit_p50_ms: percentile(&replica_commits, 0.5),
        replica_commit_p99_ms: percentile(&replica_commits, 0.99),
        wide_commit_p50_ms: percentile(&wide, 0.5),
        wide_commit_p99_ms: percentile(&wide, 0.99),
        wide_commit_sqlite_vfs_p50_ms: percentile(&wide_sqlite_vfs, 0.5),
        wide_commit_sqlite_vfs_p99_ms: percentile(&wide_sqlite_vfs, 0.99),
    })
}

/// 1,000 timed commits each (after 50 to warm up) of 8 rows into 8 tables with an index each,
/// taking turns between a file opened as the store opens it and one through SQLite's own VFS,
/// so both see the same moments of the disk; sorted.
async fn wide_commits() -> anyhow::Result<(Vec<f64>, Vec<f64>)> {
    let dir = tempfile::tempdir()?;
    tokio::task::spawn_blocking(move || -> anyhow::Result<(Vec<f64>, Vec<f64>)> {
        let full = capsule_store::Durability::Full;
        let conns = [
            capsule_store::configured_connection(&dir.path().join("vfs.sqlite3"), full)?,
            capsule_store::configured_connection_sqlite_vfs(&dir.path().join("own.sqlite3"), full)?,
        ];
        for c in &conns {
            for t in 0..8 {
                c.execute_batch(&format!(
                    "CREATE TABLE t{t}(id TEXT PRIMARY KEY, x TEXT, y INTEGER) WITHOUT ROWID;
                     CREATE INDEX t{t}_x ON t{t}(x);"
                ))?;
            }
        }
        let mut out = [Vec::new(), Vec::new()];
        for i in 0..1050 {
            for (c, times) in conns.iter().zip(out.iter_mut()) {
                let t = Instant::now();
                c.execute_batch("BEGIN")?;
                for table in 0..8 {
                    c.prepare_cached(&format!("INSERT INTO t{table} VALUES (?1, ?2, ?3)"))?
                        .execute((
                            uuid::Uuid::new_v4().to_string(),
                            uuid::Uuid::new_v4().to_string(),
                            i,
                        ))?;
                }
                c.execute_batch("COMMIT")?;
                if i >= 50 {
                    times.push(t.elapsed().as_secs_f64() * 1000.0);
                }
            }
        }
        let [vfs, own] = out;
        Ok((sorted(vfs), sorted(own)))
    })
    .await?
}

/// 380 timed one-row commits (after 20 to warm up), sorted.
async fn commits(durability: capsule_store::Durability) -> anyhow::Result<Vec<f64>> {
    let dir = tempfile::tempdir()?;
    let out = tokio::task::spawn_blocking(move || -> anyhow::Result<Vec<f64>> {
        let conn = rusqlite_conn(&dir.path().join("floor.sqlite3"), durability)?;
        let mut out = Vec::new();
        for i in 0..400 {
            let t = Instant::now();
            conn.execute("INSERT INTO t(v) VALUES (?1)", [i])?;
            if i >= 20 {
                out.push(t.elapsed().as_secs_f64() * 1000.0);
            }
        }
        Ok(out)
    })
    .await??;
    Ok(sorted(out))
}

/// A connection set up exactly as a store's, one autocommit insert per transaction.
fn rusqlite_conn(
    path: &std::path::Path,
    durability: capsule_store::Durability,
) -> anyhow::Result<capsule_store::rusqlite::Connection> {
    let c = capsule_store::configured_connection(path, durability)?;
    c.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v INTEGER)", [])?;
    Ok(c)
}
