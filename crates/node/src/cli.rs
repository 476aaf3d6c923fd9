//! The `tilld` command line: run a hub or a till headless, serving the UI over HTTP.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use std::time::Duration;

use anyhow::Context;
use capsule_protocol::Schema;
use capsule_server::PublisherConfig;
use clap::Parser;

use crate::node::{NodeConfig, Role, start};

#[derive(Debug, Parser)]
#[command(
    name = "tilld",
    version,
    about = "Capsule POS node: a hub or a till, headless."
)]
pub struct Args {
    /// What this node is: `auto` joins the shop's mesh and lets the election decide (what a
    /// shop runs); `hub` and `till --hub URL` are fixed setups; `screen` is a kitchen
    /// display (follows like a till, never becomes hub).
    #[arg(long, value_enum)]
    pub role: Role,
    /// A name staff know this node by, shown in the UI ("Till 2", "Manager PC").
    #[arg(long)]
    pub name: Option<String>,
    /// Election priority: among equally up-to-date nodes the highest becomes hub, and gets
    /// it back after a crash (start the manager's PC with a higher one than the tills).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(i64).range(0..=1000))]
    pub priority: i64,
    /// Another node of the shop (http://HOST:PORT), for networks that block multicast.
    /// Repeatable.
    #[arg(long = "peer")]
    pub peers: Vec<String>,
    /// The shop this node belongs to: nodes form a mesh only with nodes of the same shop
    /// (two shops on one network stay apart).
    #[arg(long, default_value = "shop", value_parser = parse_shop)]
    pub shop: String,
    /// Do not use mDNS to find the shop's other nodes (static --peer only).
    #[arg(long)]
    pub no_mdns: bool,
    /// The URL other nodes reach this one at (default: the listen address, or this
    /// machine's LAN address when listening on 0.0.0.0).
    #[arg(long)]
    pub advertise: Option<String>,
    /// Hub: hand the hub back to a preferred node only after this long without a write
    /// (and three times this long in office), in ms.
    #[arg(long, default_value_t = 10_000)]
    pub handback_quiet_ms: u64,
    /// Directory for this node's SQLite database.
    #[arg(long)]
    pub data: PathBuf,
    /// Address to serve the API and UI on (port 0 picks a free one).
    #[arg(long)]
    pub listen: Option<SocketAddr>,
    /// The hub to follow, e.g. http://192.168.1.10:7700 (till only).
    #[arg(long)]
    pub hub: Option<String>,
    /// Seed an empty hub with a demo restaurant service.
    #[arg(long)]
    pub demo: bool,
    /// Serve the UI from this folder (a fresh `npm run build` while developing) instead of
    /// the one built into the binary.
    #[arg(long)]
    pub ui: Option<PathBuf>,
    /// Schema file to use instead of the built-in one.
    #[arg(long)]
    pub schema: Option<PathBuf>,
    /// Hub: coalescing window in ms for the capsule stream (0 = every capsule at once).
    #[arg(long, default_value_t = capsule_protocol::defaults::COALESCE.as_millis() as u64)]
    pub coalesce_ms: u64,
    /// Hub: capsule-log entries kept for replaying to reconnecting tills.
    #[arg(long, default_value_t = 100_000)]
    pub log_keep: i64,
    /// Till: keep only open business (light snapshots) instead of a full replica.
    #[arg(long)]
    pub light: bool,
    /// Till that holds every row: entities per page when it copies the shop's history behind
    /// its first (day) snapshot. Smaller pages hold the till's own writes back less.
    #[arg(long, default_value_t = capsule_replica::HISTORY_PAGE, value_parser = clap::value_parser!(u16).range(1..=500))]
    pub history_page: u16,
    /// Till: at most one pull per entity per this many ms.
    #[arg(long, default_value_t = capsule_protocol::defaults::PULL_WINDOW.as_millis() as u64)]
    pub pull_window_ms: u64,
    /// Hub: ping idle subscribers this often (ms).
    #[arg(long, default_value_t = capsule_protocol::defaults::PING_EVERY.as_millis() as u64)]
    pub ping_ms: u64,
    /// Till: treat the hub as gone after this long without hearing from it (ms); a hub
    /// that froze or lost its cable is noticed this fast.
    #[arg(long, default_value_t = capsule_protocol::defaults::SILENCE.as_millis() as u64)]
    pub silence_ms: u64,
    /// Till: letters its provisional order numbers start with while the hub is out of reach
    /// (B gives B-1, B-2...); give each till its own. Default: two letters from the node id.
    #[arg(long, value_parser = parse_till_letter)]
    pub till_letter: Option<String>,
    /// Connections served at once (more are refused with a 503 until some close).
    #[arg(long, default_value_t = capsule_server::Limits::default().max_connections)]
    pub max_connections: usize,
    /// Connections from one IP address at once.
    #[arg(long, default_value_t = capsule_server::Limits::default().max_per_ip)]
    pub max_connections_per_ip: usize,
    /// Time a client has to send a request's head; also how long an idle keep-alive
    /// connection stays open (ms).
    #[arg(long, default_value_t = capsule_server::Limits::default().header_timeout.as_millis() as u64)]
    pub header_timeout_ms: u64,
    /// A host name this node answers to (besides IP addresses, localhost and its own name),
    /// e.g. a DNS name for the manager's PC. Repeatable. Other names are refused, so a web
    /// page cannot reach the node through DNS rebinding.
    #[arg(long = "allow-host")]
    pub allow_hosts: Vec<String>,
    /// Print to this printer address although it is not on the shop's LAN (a printer on this
    /// computer, `127.0.0.1:9100`, or a whole host, `127.0.0.1`); repeatable. Without it,
    /// printers must have a private LAN address (10.x, 172.16-31.x, 192.168.x).
    #[arg(long = "allow-printer", value_name = "ADDRESS")]
    pub allow_printers: Vec<String>,
    /// Hub: write a consistent copy of the database into this folder on a schedule.
    #[arg(long)]
    pub backup_dir: Option<PathBuf>,
    /// Hub: how often to back up (30m, 1h, 1d; at least a minute).
    #[arg(long, default_value = "1h", value_parser = crate::backup::parse_every)]
    pub backup_every: Duration,
    /// Hub: how many backups to keep (the oldest go first).
    #[arg(long, default_value_t = 48, value_parser = clap::value_parser!(u16).range(1..))]
    pub backup_keep: u16,
}

fn parse_shop(s: &str) -> Result<String, String> {
    if (1..=64).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        Ok(s.to_string())
    } else {
        Err(format!("'{s}' is not 1 to 64 letters, digits, '-' or '_'"))
    }
}

fn parse_till_letter(s: &str) -> Result<String, String> {
    if (1..=3).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_uppercase()) {
        Ok(s.to_string())
    } else {
        Err(format!("'{s}' is not 1 to 3 capital letters A-Z"))
    }
}

/// `tilld backup`: a consistent single-file copy of a node's database, safe while it runs.
#[derive(Debug, Parser)]
#[command(name = "tilld backup", version)]
pub struct BackupArgs {
    /// The node's data directory (the one given to --data).
    #[arg(long)]
    pub data: PathBuf,
    /// File to write the copy to (replaced if it exists). Restore by starting a node on a new
    /// data directory holding this file as node.sqlite3.
    #[arg(long)]
    pub to: PathBuf,
}

/// `tilld pair`: joins this device to a shop with the code a paired device shows.
#[derive(Debug, Parser)]
#[command(name = "tilld pair")]
pub struct PairArgs {
    /// The 6 digits shown under "Add a device" on a paired device.
    #[arg(long)]
    pub code: String,
    /// That device's address (http://HOST:PORT).
    #[arg(long)]
    pub peer: String,
    /// This device's data directory (its identity is made there if it has none yet).
    #[arg(long)]
    pub data: PathBuf,
    /// The name staff know this device by.
    #[arg(long, default_value = "New device")]
    pub name: String,
    /// What this device will be: hub-eligible (the manager's PC, a till that may lead), till
    /// or screen.
    #[arg(long, default_value = "hub-eligible", value_parser = ["hub-eligible", "till", "screen"])]
    pub role: String,
}

/// Logs to stderr, `info` unless `RUST_LOG` says otherwise; for every binary that runs a node.
/// What the gossip library logs goes through its budget ([`capsule_mesh::log_budget`]).
pub fn init_logging() {
    use tracing_subscriber::layer::{Layer as _, SubscriberExt as _};
    use tracing_subscriber::util::SubscriberInitExt as _;
    let level = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::registry()
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_filter(capsule_mesh::log_budget::GossipLogBudget)
                .with_filter(level),
        )
        .init();
}

/// Entry point of the `tilld` binary.
pub fn main() -> ExitCode {
    if std::env::args_os().nth(1).is_some_and(|a| a == "backup") {
        let args = BackupArgs::parse_from(std::env::args_os().skip(1));
        return match capsule_store::backup_file(&args.data.join("node.sqlite3"), &args.to) {
            Ok(bytes) => {
                println!("backup written to {} ({bytes} bytes)", args.to.display());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("tilld backup: {e}");
                ExitCode::from(2)
            }
        };
    }
    if std::env::args_os().nth(1).is_some_and(|a| a == "pair") {
        let args = PairArgs::parse_from(std::env::args_os().skip(1));
        let runtime = tokio::runtime::Runtime::new().expect("tokio runtime starts");
        return match runtime.block_on(crate::pairing::join(args)) {
            Ok(host) => {
                println!("paired with {} ({})", host.name, host.device_id.short());
                ExitCode::SUCCESS
            }
            Err(crate::pairing::JoinError::Refused(why)) => {
                eprintln!("tilld pair: {why}");
                ExitCode::from(3)
            }
            Err(crate::pairing::JoinError::Failed(e)) => {
                eprintln!("tilld pair: {e:#}");
                ExitCode::from(2)
            }
        };
    }
    let args = Args::parse();
    init_logging();
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime starts");
    match runtime.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tilld: {e:#}");
            ExitCode::from(2)
        }
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    let schema = match &args.schema {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read {}", path.display()))?;
            Schema::from_toml(&text).with_context(|| format!("schema {}", path.display()))?
        }
        None => Schema::builtin(),
    };
    if args.role == Role::Till && args.hub.is_none() {
        anyhow::bail!(
            "a till needs --hub http://HOST:PORT (or use --role auto to join the shop's mesh)"
        );
    }
    if matches!(args.role, Role::Hub | Role::Auto) && args.hub.is_some() {
        anyhow::bail!(
            "--hub is for fixed tills and screens; a hub serves its own data and --role auto finds it"
        );
    }
    if args.demo && !matches!(args.role, Role::Hub | Role::Auto) {
        anyhow::bail!("--demo seeds a hub; tills get the demo from their hub");
    }
    if args.priority > 0 && args.role == Role::Screen && args.priority != 1 {
        anyhow::bail!("kitchen screens never become hub; --priority is for --role auto");
    }
    let default_port = if matches!(args.role, Role::Hub | Role::Auto) {
        7700
    } else {
        7701
    };
    let listen = args
        .listen
        .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], default_port)));
    let ui_dir = args.ui;
    if args.backup_dir.is_some() && !matches!(args.role, Role::Hub | Role::Auto) {
        anyhow::bail!("--backup-dir is for the hub; tills hold copies of its data");
    }
    if args.log_keep < 1 {
        anyhow::bail!("--log-keep must be at least 1");
    }
    let mut config = NodeConfig::new(args.role, args.data.clone(), listen);
    config.hub_url = args.hub;
    config.demo = args.demo;
    config.ui_dir = ui_dir;
    config.schema = Arc::new(schema);
    config.publisher = PublisherConfig {
        coalesce: Duration::from_millis(args.coalesce_ms),
        log_keep: args.log_keep,
        ping_every: Duration::from_millis(args.ping_ms.max(1)),
    };
    config.light = args.light;
    config.history_page = args.history_page as usize;
    config.pull_window = Duration::from_millis(args.pull_window_ms);
    config.silence_timeout = Duration::from_millis(args.silence_ms.max(1));
    config.provisional_prefix = args.till_letter;
    if args.max_connections < 1 || args.max_connections_per_ip < 1 {
        anyhow::bail!("--max-connections and --max-connections-per-ip must be at least 1");
    }
    config.limits.max_connections = args.max_connections;
    config.limits.max_per_ip = args.max_connections_per_ip;
    config.limits.header_timeout = Duration::from_millis(args.header_timeout_ms.max(100));
    config.allowed_hosts = args.allow_hosts;
    config.allowed_printers = args.allow_printers;
    config.name = args.name;
    config.priority = args.priority;
    config.peers = args.peers;
    config.mdns = !args.no_mdns;
    config.shop = args.shop;
    config.advertise = args.advertise.map(|a| a.trim_end_matches('/').to_string());
    config.handback_quiet = Duration::from_millis(args.handback_quiet_ms.max(100));
    config.backup = args.backup_dir.map(|dir| crate::backup::BackupSchedule {
        dir,
        every: args.backup_every,
        keep: usize::from(args.backup_keep),
    });
    let mut node = start(config).await?;
    // Tests and scripts read this line to learn the port.
    println!("listening on {}", node.url());
    // The link a browser on this machine opens once (the key becomes an HttpOnly cookie); only
    // a paired node asks for it, and only from this machine.
    println!(
        "this machine's screens: http://127.0.0.1:{}/?key=(in {})",
        node.addr.port(),
        args.data.join(crate::trust::LOCAL_KEY_FILE).display()
    );
    tracing::info!(role = ?args.role, node_id = %node.node_id, "node started");
    tokio::select! {
        r = node.wait() => r,
        _ = shutdown_signal() => {
            tracing::info!("shutting down");
            node.shutdown().await
        }
    }
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("signal handler");
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
