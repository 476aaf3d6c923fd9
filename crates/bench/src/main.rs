//! `capsule-bench`: a seeded restaurant rush against a real hub process, in every stream mode,
//! with the physical floor (loopback WebSocket round trip, one SQLite commit) measured in the
//! same run. Prints a table and writes JSON.

mod floor;
mod history;
mod idle;
mod outbox;
mod pg;
mod run;
mod snapshot;
mod writes;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;

#[derive(Debug, Clone, Parser)]
#[command(
    name = "capsule-bench",
    about = "Benchmark the capsule stream against legacy full rows."
)]
pub struct Args {
    /// Replicas following the hub as tills.
    #[arg(long, default_value_t = 20)]
    pub tills: usize,
    /// Replicas following the hub as kitchen screens.
    #[arg(long, default_value_t = 4)]
    pub screens: usize,
    /// Seed of the rush.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Peak phase: seconds at the peak request rate.
    #[arg(long, default_value_t = 12)]
    pub peak_secs: u64,
    /// Requests per second at peak (a busy restaurant); the burst is ten times this.
    #[arg(long, default_value_t = 25)]
    pub peak_rate: u64,
    /// Burst phase: seconds at ten times the peak rate.
    #[arg(long, default_value_t = 4)]
    pub burst_secs: u64,
    /// Orders in the day used for the snapshot measurement.
    #[arg(long, default_value_t = 50_000)]
    pub day_orders: usize,
    /// `/ws` subscribers reading every frame during the write-throughput run.
    #[arg(long, default_value_t = 50)]
    pub subscribers: usize,
    /// Orders of history the history section builds a shop with, one run each (0: a demo
    /// day without history, the baseline).
    #[arg(long, value_delimiter = ',', default_values_t = [0, 100_000, 1_000_000])]
    pub history_orders: Vec<usize>,
    /// Offline orders a till queues while its hub is frozen, one drain each (the first, small,
    /// is the baseline).
    #[arg(long, value_delimiter = ',', default_values_t = [2_000, 100_000])]
    pub backlog_orders: Vec<usize>,
    /// Writes in the idle-latency run (after 20 to warm up).
    #[arg(long, default_value_t = 200)]
    pub idle_writes: usize,
    /// Seconds per level of the write-throughput run (hub and pgbench alike).
    #[arg(long, default_value_t = 5)]
    pub write_secs: u64,
    /// Skip the write-throughput and snapshot runs.
    #[arg(long)]
    pub quick: bool,
    /// The tilld binary (default: next to this one).
    #[arg(long)]
    pub tilld: Option<PathBuf>,
    /// Run only these sections (repeatable): idle, rush, writes, snapshot, history, outbox.
    /// Default: all.
    #[arg(long, value_enum)]
    pub only: Vec<Section>,
    /// Where to write the results as JSON.
    #[arg(long, default_value = "target/bench/results.json")]
    pub json: PathBuf,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Section {
    Idle,
    Rush,
    Writes,
    Snapshot,
    History,
    Outbox,
}

impl Args {
    fn runs(&self, s: Section) -> bool {
        let heavy = matches!(
            s,
            Section::Writes | Section::Snapshot | Section::History | Section::Outbox
        );
        if self.only.is_empty() {
            !(heavy && self.quick)
        } else {
            self.only.contains(&s)
        }
    }
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("error")),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let tilld = match &args.tilld {
        Some(p) => p.clone(),
        None => std::env::current_exe()?
            .parent()
            .context("exe dir")?
            .join("tilld"),
    };
    anyhow::ensure!(
        tilld.is_file(),
        "tilld not found at {}: build it first (cargo build --release --bin tilld) or pass --tilld",
        tilld.display()
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let started = std::time::Instant::now();
        eprintln!("floor: loopback WebSocket round trip and one SQLite commit...");
        let floor = floor::measure().await?;
        let idle = if args.runs(Section::Idle) {
            eprintln!(
                "idle: {} writes one at a time, hub -> till...",
                args.idle_writes
            );
            Some(idle::measure(&tilld, args.idle_writes, false).await?)
        } else {
            None
        };
        let idle_paired = if args.runs(Section::Idle) {
            eprintln!("idle: the same between a paired hub and till (TLS 1.3)...");
            Some(idle::measure(&tilld, args.idle_writes, true).await?)
        } else {
            None
        };
        let mut runs = Vec::new();
        for (mode, coalesce, compressed) in run::MODES.iter().filter(|_| args.runs(Section::Rush)) {
            eprintln!(
                "run: {mode} mode, coalescing {coalesce} ms, {} tills + {} screens...",
                args.tills, args.screens
            );
            runs.push(run::rush(&args, &tilld, mode, *coalesce, *compressed).await?);
        }
        let writes = if !args.runs(Section::Writes) {
            None
        } else {
            Some(writes::measure(&tilld, args.subscribers, args.write_secs).await?)
        };
        let snapshots = if !args.runs(Section::Snapshot) {
            None
        } else {
            eprintln!("snapshots: building a day of {} orders...", args.day_orders);
            Some(snapshot::measure(&args, &tilld).await?)
        };
        let history = if !args.runs(Section::History) {
            None
        } else {
            Some(history::measure(&args.history_orders, &tilld, args.seed).await?)
        };
        let outbox = if !args.runs(Section::Outbox) {
            None
        } else {
            Some(outbox::measure(&tilld, &args.backlog_orders).await?)
        };
        let report = run::Report {
            history,
            outbox,
            args: format!("{args:?}"),
            floor,
            idle,
            idle_paired,
            runs,
            writes,
            snapshots,
            seconds: started.elapsed().as_secs_f64(),
        };
        println!("{}", report.table());
        if let Some(dir) = args.json.parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(&args.json, serde_json::to_string_pretty(&report)?)?;
        eprintln!(
            "wrote {} ({:.0} s in all)",
            args.json.display(),
            report.seconds
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
        Ok(())
    })
}
