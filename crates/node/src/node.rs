//! A running node: a hub or a till, its HTTP server (API, `/ws`, the UI) and background tasks.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use axum::Router;
use axum::http::StatusCode;
use capsule_protocol::{BackupStatus, Lineage, MutationBatch, NodeStatus, Schema};
use capsule_replica::{
    FollowConfig, HubTarget, Link, LocalChange, OnChange, Outbox, ReplicaError, ReplicaMetrics,
};
use capsule_server::api::{self, ApiState, MutationHandler, StatusHandler};
use capsule_server::{ApiError, ExtraMetrics, Hub, NodeMetrics, PublisherConfig, Stream};
use capsule_store::{Durability, Store};
use tokio::net::TcpListener;
use tower_http::services::{ServeDir, ServeFile};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Owns the authoritative data and the capsule stream.
    Hub,
    /// Keeps a replica of the hub's data and forwards its own writes.
    Till,
    /// Joins the shop's mesh and lets the election decide between hub and till.
    Auto,
    /// A kitchen screen: follows like a till, never becomes hub.
    Screen,
}

#[derive(Debug, Clone)]
pub struct NodeConfig {
    pub role: Role,
    pub data_dir: PathBuf,
    pub listen: SocketAddr,
    /// The hub to follow (till only).
    pub hub_url: Option<String>,
    /// Seed an empty hub with a demo restaurant day.
    pub demo: bool,
    /// Built UI to serve at `/` (`ui/dist`).
    pub ui_dir: Option<PathBuf>,
    pub schema: Arc<Schema>,
    /// Hub: coalescing window and change-log length.
    pub publisher: PublisherConfig,
    /// Till: light snapshots (open business only) instead of full ones.
    pub light: bool,
    /// Entities per page when copying the shop's history behind a day snapshot.
    pub history_page: usize,
    /// Till: at most one pull per entity per this window.
    pub pull_window: std::time::Duration,
    /// Till: how long without a word from the hub before the link counts as dead.
    pub silence_timeout: std::time::Duration,
    /// Hub: scheduled backups.
    pub backup: Option<crate::backup::BackupSchedule>,
    /// Till: what its provisional order numbers start with (`B` gives B-1, B-2...).
    pub provisional_prefix: Option<String>,
    /// Connection limits of this node's server.
    pub limits: capsule_server::Limits,
    /// Host names this node answers to besides IP addresses, `localhost` and its own name.
    pub allowed_hosts: Vec<String>,
    /// Mesh: a name staff know this node by ("Till 2", "Manager PC").
    pub name: Option<String>,
    /// Mesh: election priority (the manager's PC higher than tills).
    pub priority: i64,
    /// Mesh: static peers (`http://host:port`), for networks that block multicast.
    pub peers: Vec<String>,
    /// Mesh: find peers with mDNS too.
    pub mdns: bool,
    /// Mesh: the shop's name; only nodes of the same shop form a mesh.
    pub shop: String,
    /// Mesh: the URL others reach this node at, when it listens on 0.0.0.0.
    pub advertise: Option<String>,
    /// Mesh: a hub hands the hub back to a preferred node only after this long without a
    /// write, and after three times this long in office (no flapping during a rush).
    pub handback_quiet: std::time::Duration,
    /// Wakes this node's print sender when a job is queued.
    pub print_wake: Arc<crate::printing::PrintDesk>,
    /// This node's side of pairing (its identity is set at start).
    pub pairing: Arc<crate::pairing::Pairing>,
    /// Printer addresses a manager allowed off the shop's LAN (`--allow-printer`).
    pub allowed_printers: Vec<String>,
    /// How this node reaches its peers (set at start: TLS as this device once it is paired).
    pub client: capsule_replica::PeerClient,
}

impl NodeConfig {
    /// A config with the defaults the CLI uses.
    pub fn new(role: Role, data_dir: PathBuf, listen: SocketAddr) -> NodeConfig {
        NodeConfig {
            role,
            data_dir,
            listen,
            hub_url: None,
            demo: false,
            ui_dir: None,
            schema: Arc::new(Schema::builtin()),
            publisher: PublisherConfig::default(),
            light: false,
            history_page: capsule_replica::HISTORY_PAGE as usize,
            pull_window: capsule_protocol::defaults::PULL_WINDOW,
            silence_timeout: capsule_protocol::defaults::SILENCE,
            backup: None,
            provisional_prefix: None,
            limits: capsule_server::Limits::default(),
            allowed_hosts: Vec::new(),
            name: None,
            priority: 1,
            peers: Vec::new(),
            mdns: true,
            shop: "shop".into(),
            advertise: None,
            handback_quiet: std::time::Duration::from_secs(10),
            print_wake: Arc::new(crate::printing::PrintDesk::default()),
            pairing: Arc::default(),
            allowed_printers: Vec::new(),
            client: capsule_replica::PeerClient::plain(),
        }
    }
}

/// Two letters from the node id, for a till started without `--till-letter`.
pub fn default_prefix(node_id: &str) -> String {
    let h = node_id
        .bytes()
        .fold(0u32, |h, b| h.wrapping_mul(31).wrapping_add(u32::from(b)));
    let letter = |n: u32| char::from(b'A' + (n % 26) as u8);
    format!("{}{}", letter(h), letter(h / 26))
}

/// A node that is serving; dropping it does not stop it, `shutdown` does.
pub struct RunningNode {
    pub addr: SocketAddr,
    pub node_id: String,
    pub store: Arc<Store>,
    /// Its identity, the roster it holds and this launch's key for its own screens.
    pub trust: crate::trust::DeviceTrust,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    server: tokio::task::JoinHandle<std::io::Result<()>>,
    background: Vec<tokio::task::JoinHandle<()>>,
}

impl RunningNode {
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops serving and waits for the server to finish.
    pub async fn shutdown(mut self) -> anyhow::Result<()> {
        for t in &self.background {
            t.abort();
        }
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        (&mut self.server)
            .await
            .context("server task")?
            .context("server")?;
        Ok(())
    }

    /// Waits until the server stops by itself (an I/O error).
    pub async fn wait(&mut self) -> anyhow::Result<()> {
        (&mut self.server)
            .await
            .context("server task")?
            .context("server")?;
        Ok(())
    }
}

/// Drops closed days' journal, tombstones and mutation ids at start and every hour, on every
/// node (followers hold a copy of the journal too): see `capsule_store::prune` for when.
async fn prune_schedule(store: Arc<Store>) {
    let mut every = tokio::time::interval(std::time::Duration::from_secs(3600));
    loop {
        every.tick().await;
        let s = store.clone();
        match tokio::task::spawn_blocking(move || s.prune_history(capsule_protocol::now_ms())).await
        {
            Ok(Ok(p)) if p != capsule_store::Pruned::default() => {
                tracing::info!(?p, "pruned the bookkeeping of closed days");
            }
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "pruning failed; tried again in an hour"),
            Err(e) => tracing::error!(error = %e, "pruning panicked"),
        }
    }
}

/// Opens the store, starts the role's tasks and binds the server. Prints nothing; the CLI
/// prints the `listening on` line.
pub async fn start(mut config: NodeConfig) -> anyhow::Result<RunningNode> {
    let elected = matches!(config.role, Role::Auto)
        || (config.role == Role::Screen && config.hub_url.is_none());
    let durability = match config.role {
        Role::Hub => Durability::Full,
        // Followers fsync at checkpoints; an elected node switches to full fsync while hub.
        Role::Till | Role::Screen | Role::Auto => Durability::Replica,
    };
    let store = open_store(&config, durability).await?;
    let trust = crate::trust::DeviceTrust::load(&config.data_dir, &store).await?;
    config.client = trust.peers();
    let identity = trust.identity.clone();
    let device_id = identity.device_id().to_string();
    tracing::info!(device = %device_id, "this device's identity");
    let node_name = config
        .name
        .clone()
        .unwrap_or_else(|| default_prefix(store.node_id()));
    trust.staff.set_node_name(&node_name);
    config.print_wake.set_node_name(&node_name);
    config.pairing.set_identity(
        &trust,
        node_name.clone(),
        match config.role {
            Role::Hub | Role::Auto => "hub-eligible",
            Role::Till => "till",
            Role::Screen => "screen",
        },
        config.data_dir.clone(),
    );
    let listener = TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    let addr = listener.local_addr()?;
    let self_url = format!("http://{addr}");

    let printer_policy = Arc::new(crate::printer_net::PrinterPolicy {
        allowed: config.allowed_printers.clone(),
        own_ports: vec![addr.port()],
    });
    // A printer written with an address off the shop's LAN is refused at once (a 400 with
    // the reason); a name is checked again after it resolves, before every job.
    // A roster write is checked against the roster (its signature and signer).
    let written = printer_policy.clone();
    let roster = Arc::downgrade(&store);
    let own = device_id.clone();
    store.set_write_check(Arc::new(move |m| {
        match m.row.get("address") {
            Some(serde_json::Value::String(a)) if m.table == "printer" => {
                written.check_written(a)?
            }
            _ => {}
        }
        match roster.upgrade() {
            Some(store) => crate::pairing::check_roster_write(&store, &own, m),
            None => Ok(()),
        }
    }));
    let mut background = vec![
        tokio::spawn(crate::printing::run_sender(
            store.clone(),
            config.print_wake.clone(),
            printer_policy,
        )),
        tokio::spawn(prune_schedule(store.clone())),
        trust.keep_roster(store.clone()),
    ];
    let router = if elected {
        store.set_authority(false);
        let (router, tasks) = crate::auto::start(
            store.clone(),
            &config,
            addr,
            &self_url,
            &device_id,
            trust.identity.clone(),
            trust.roster.clone(),
        )
        .await?;
        background.extend(tasks);
        router
    } else {
        match config.role {
            Role::Hub => {
                let restamp = store.clone();
                tokio::task::spawn_blocking(move || restamp.restamp()).await??;
                let parts = hub_parts(&store, &config, Lineage::default(), &mut background).await?;
                let stream = parts.hub.stream.clone();
                let node_id = store.node_id().to_string();
                let backup_state = parts.backup.clone();
                let device_id = device_id.clone();
                let roster = trust.roster.clone();
                let name = node_name.clone();
                let status: StatusHandler = Arc::new(move || NodeStatus {
                    node_id: node_id.clone(),
                    role: "hub".into(),
                    state: "online".into(),
                    hub_url: Some(self_url.clone()),
                    hub_node_id: Some(node_id.clone()),
                    seq: stream.last_seq(),
                    pending: 0,
                    rejected: 0,
                    offline_since: None,
                    backup: backup_state
                        .as_ref()
                        .map(|b| b.lock().unwrap_or_else(|p| p.into_inner()).clone()),
                    term: 0,
                    priority: 0,
                    mesh: None,
                    peers: Vec::new(),
                    hub_change: None,
                    history_copying: None,
                    device_id: Some(device_id.clone()),
                    paired: roster.is_paired(),
                    link_error: None,
                    name: Some(name.clone()),
                });
                with_ui(parts.router(&store, status), config.ui_dir.as_deref())
            }
            Role::Till | Role::Screen | Role::Auto => {
                let hub_url = config.hub_url.clone().context("a till needs --hub URL")?;
                let link = Link::default();
                let metrics = Arc::new(ReplicaMetrics::default());
                let role = if config.role == Role::Screen {
                    "screen"
                } else {
                    "till"
                };
                let parts = follower_parts(
                    &store,
                    &config,
                    HubTarget::fixed(&hub_url),
                    link.clone(),
                    metrics,
                    role,
                    false,
                );
                let node_id = store.node_id().to_string();
                let status_store = store.clone();
                let light = config.light;
                let device_id = device_id.clone();
                let roster = trust.roster.clone();
                let name = node_name.clone();
                let status: StatusHandler = Arc::new(move || {
                    let l = link.get();
                    let (pending, rejected) = status_store.outbox_counts().unwrap_or_default();
                    NodeStatus {
                        node_id: node_id.clone(),
                        role: role.into(),
                        state: l.state.as_str().into(),
                        hub_url: Some(hub_url.clone()),
                        hub_node_id: l.hub_node_id,
                        seq: l.seq,
                        pending,
                        rejected,
                        offline_since: l.offline_since,
                        backup: None,
                        term: 0,
                        priority: 0,
                        mesh: None,
                        peers: Vec::new(),
                        hub_change: None,
                        // A light till keeps open business by choice: nothing to copy.
                        history_copying: (!light)
                            .then(|| status_store.backfill_at().ok().flatten())
                            .flatten()
                            .map(|at| at.entity),
                        device_id: Some(device_id.clone()),
                        paired: roster.is_paired(),
                        link_error: l.last_error,
                        name: Some(name.clone()),
                    }
                });
                let router = parts.router(&store, status);
                background.extend(parts.tasks);
                with_ui(router, config.ui_dir.as_deref())
            }
        }
    };
    // Who is calling comes first: a caller without credentials learns nothing more than 401.
    // Pairing a browser is the same on every node, whatever it is at the moment.
    let router = router.merge(crate::screens::router(trust.screens.clone(), store.clone()));
    let router = trust.guard(capsule_server::guard::layer(
        router,
        capsule_server::guard::Hosts::for_this_machine(&config.allowed_hosts),
    ));
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let mut limits = config.limits;
    limits.max_connections = capsule_server::connection_capacity(limits.max_connections);
    let server = tokio::spawn(capsule_server::serve(
        listener,
        router,
        async {
            let _ = rx.await;
        },
        limits,
        Some(trust.server_tls()),
    ));
    Ok(RunningNode {
        addr,
        node_id: store.node_id().to_string(),
        store,
        trust,
        shutdown: Some(tx),
        server,
        background,
    })
}

pub(crate) async fn open_store(
    config: &NodeConfig,
    durability: Durability,
) -> anyhow::Result<Arc<Store>> {
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("cannot create data directory {}", config.data_dir.display()))?;
    let db = config.data_dir.join("node.sqlite3");
    let schema = config.schema.clone();
    let path = db.clone();
    let store = tokio::task::spawn_blocking(move || Store::open_with(&path, schema, durability))
        .await?
        .with_context(|| format!("cannot open {}", db.display()))?;
    Ok(Arc::new(store))
}

/// A hub's running pieces.
pub(crate) struct HubParts {
    pub hub: Arc<Hub>,
    pub backup: Option<Arc<std::sync::Mutex<BackupStatus>>>,
    pub print_wake: Arc<crate::printing::PrintDesk>,
    pub pairing: Arc<crate::pairing::Pairing>,
}

impl HubParts {
    /// The hub's API, its commands and `/ws`, answering `/api/status` with `status`.
    pub fn router(&self, store: &Arc<Store>, status: StatusHandler) -> Router {
        let commands = crate::routes::router(
            store.clone(),
            self.hub.mutations(),
            None,
            self.print_wake.clone(),
        )
        .merge(crate::pairing::router(
            self.pairing.clone(),
            store.clone(),
            self.hub.mutations(),
        ));
        let gossip: ExtraMetrics = Arc::new(|text, _| capsule_mesh::log_budget::render(text));
        self.hub
            .router(status, Some(gossip))
            .merge(commands)
            // The hub lives as long as a router serving it: its publisher stops when it drops.
            .layer(axum::Extension(self.hub.clone()))
    }
}

/// Starts the hub of `lineage`'s term over `store` (seeding the demo first when asked); its backup
/// schedule, if any, joins `tasks`.
pub(crate) async fn hub_parts(
    store: &Arc<Store>,
    config: &NodeConfig,
    lineage: Lineage,
    tasks: &mut Vec<tokio::task::JoinHandle<()>>,
) -> anyhow::Result<HubParts> {
    if config.demo {
        // Seeding is the shop's first writes, not part of becoming hub: a seed that fails is
        // logged and the hub serves anyway (the shop's marker decides whether to seed at all).
        let s = store.clone();
        match tokio::task::spawn_blocking(move || crate::demo::seed_if_empty(&s)).await? {
            Ok(0) => {}
            Ok(seeded) => tracing::info!(mutations = seeded, "seeded demo data"),
            Err(e) => tracing::error!(error = %e, "cannot seed the demo shop"),
        }
    }
    let hub = Hub::start(store.clone(), config.publisher)?;
    hub.stream.set_lineage(lineage);
    let backup = config.backup.as_ref().map(|b| {
        let state = Arc::new(std::sync::Mutex::new(BackupStatus {
            dir: b.dir.display().to_string(),
            every_s: b.every.as_secs(),
            keep: b.keep,
            ..BackupStatus::default()
        }));
        tasks.push(tokio::spawn(crate::backup::run_schedule(
            store.clone(),
            b.clone(),
            state.clone(),
        )));
        state
    });
    Ok(HubParts {
        hub: Arc::new(hub),
        backup,
        print_wake: config.print_wake.clone(),
        pairing: config.pairing.clone(),
    })
}

/// A follower's running pieces (a till or a kitchen screen).
pub(crate) struct FollowerParts {
    pub ui_stream: Stream,
    pub outbox: Arc<Outbox>,
    pub mutations: MutationHandler,
    pub extra: ExtraMetrics,
    pub tasks: Vec<tokio::task::JoinHandle<()>>,
    pub print_wake: Arc<crate::printing::PrintDesk>,
    pub pairing: Arc<crate::pairing::Pairing>,
}

impl FollowerParts {
    /// The till API over the replica, its commands and the local `/ws` for its own screens.
    pub fn router(&self, store: &Arc<Store>, status: StatusHandler) -> Router {
        let commands = crate::routes::router(
            store.clone(),
            self.mutations.clone(),
            Some(self.outbox.clone()),
            self.print_wake.clone(),
        )
        .merge(crate::pairing::router(
            self.pairing.clone(),
            store.clone(),
            self.mutations.clone(),
        ));
        api::router(ApiState {
            store: store.clone(),
            stream: self.ui_stream.clone(),
            mutations: self.mutations.clone(),
            status,
            modes: None,
            extra_metrics: Some(self.extra.clone()),
        })
        .merge(commands)
    }
}

/// Starts following the hub `target` points at: the stream, the outbox and reports.
pub(crate) fn follower_parts(
    store: &Arc<Store>,
    config: &NodeConfig,
    target: HubTarget,
    link: Link,
    replica_metrics: Arc<ReplicaMetrics>,
    role: &'static str,
    keep_mids: bool,
) -> FollowerParts {
    let ui_stream = Stream::new(
        store.node_id().to_string(),
        role,
        Arc::new(NodeMetrics::default()),
    );
    let on_change: OnChange = {
        let ui = ui_stream.clone();
        Arc::new(move |c| match c {
            LocalChange::Changed(capsule) => ui.publish_next(capsule),
            LocalChange::Reset => ui.publish_reset(),
        })
    };
    let mut follow = FollowConfig::new(String::new(), store.node_id());
    follow.light = config.light;
    follow.history_page = config.history_page;
    follow.pull_window = config.pull_window;
    follow.silence_timeout = config.silence_timeout;
    follow.keep_mids = keep_mids;
    follow.role = role;
    follow.peers = config.client.clone();
    let mut tasks = vec![
        tokio::spawn(capsule_replica::follow(
            store.clone(),
            follow,
            target.clone(),
            link.clone(),
            on_change.clone(),
            replica_metrics.clone(),
        )),
        tokio::spawn(capsule_replica::report(
            target.clone(),
            store.node_id().to_string(),
            role,
            link,
            replica_metrics.clone(),
            config.client.clone(),
        )),
    ];
    let extra: ExtraMetrics = Arc::new(move |text, json| {
        replica_metrics.render(text);
        capsule_mesh::log_budget::render(text);
        json.insert(
            "replica".into(),
            serde_json::to_value(replica_metrics.to_json()).expect("serialises"),
        );
    });
    let prefix = config
        .provisional_prefix
        .clone()
        .unwrap_or_else(|| default_prefix(store.node_id()));
    let outbox = Arc::new(Outbox::new(
        store.clone(),
        target,
        on_change,
        prefix,
        config.client.clone(),
    ));
    tasks.push(tokio::spawn(outbox.clone().run()));
    let mutations: MutationHandler = {
        let outbox = outbox.clone();
        Arc::new(move |batch: MutationBatch, client: String| {
            let o = outbox.clone();
            Box::pin(async move {
                o.submit(batch, client)
                    .await
                    .map(|s| s.response)
                    .map_err(forward_error)
            })
        })
    };
    FollowerParts {
        ui_stream,
        outbox,
        mutations,
        extra,
        tasks,
        print_wake: config.print_wake.clone(),
        pairing: config.pairing.clone(),
    }
}

fn forward_error(e: ReplicaError) -> ApiError {
    match e {
        ReplicaError::Store(s) => s.into(),
        ReplicaError::Hub { status, message } => ApiError::new(
            StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY),
            message,
        ),
        ReplicaError::Unreachable(m) => ApiError::new(StatusCode::SERVICE_UNAVAILABLE, m),
        ReplicaError::Protocol(m) => ApiError::new(StatusCode::BAD_GATEWAY, m),
    }
}

const UI_MISSING: &str = "<!doctype html><meta charset=utf-8><title>Capsule POS</title>\
<h1>Capsule POS node is running</h1><p>The UI is not built. Run <code>./scripts/demo</code> \
(or <code>npm ci &amp;&amp; npm run build</code> in <code>ui/</code>) and reload.</p>\
<p>API: <a href=/api/status>/api/status</a>, <a href=/api/schema>/api/schema</a>.</p>";

/// The UI as built into the binary (`ui/dist` when tilld was compiled; empty if it was not
/// built then). Debug builds read the same folder from disk, so a rebuilt UI shows at once.
#[derive(rust_embed::Embed)]
// Relative to this crate (crates/node).
#[folder = "../../ui/dist"]
#[allow_missing = true]
struct EmbeddedUi;

/// Serves the UI: from `ui_dir` when given (development), else the one built into the binary.
/// Unknown paths get `index.html` (the UI routes by `#/...`); no UI at all gets a page saying
/// how to build it.
pub(crate) fn with_ui(router: Router, ui_dir: Option<&std::path::Path>) -> Router {
    match ui_dir {
        Some(dir) if dir.join("index.html").is_file() => router
            .fallback_service(ServeDir::new(dir).fallback(ServeFile::new(dir.join("index.html")))),
        _ if EmbeddedUi::get("index.html").is_some() => router.fallback(embedded_ui),
        _ => router.fallback(|| async { axum::response::Html(UI_MISSING) }),
    }
}

async fn embedded_ui(uri: axum::http::Uri) -> axum::response::Response {
    use axum::http::{StatusCode, header};
    use axum::response::IntoResponse;
    let path = uri.path().trim_start_matches('/');
    let (path, file) = match EmbeddedUi::get(path) {
        Some(file) if !path.is_empty() => (path, file),
        _ => match EmbeddedUi::get("index.html") {
            Some(file) => ("index.html", file),
            None => return (StatusCode::NOT_FOUND, "no UI").into_response(),
        },
    };
    // Vite names what it puts in assets/ by content hash: those never change under their
    // name. Everything else (index.html first) is checked again on each load.
    let cache = if path.starts_with("assets/") {
        "public, max-age=31536000, immutable"
    } else {
        "no-cache"
    };
    (
        [
            (header::CONTENT_TYPE, file.metadata.mimetype().to_string()),
            (header::CACHE_CONTROL, cache.to_string()),
        ],
        file.data,
    )
        .into_response()
}
