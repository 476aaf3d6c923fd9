//! A running node: a hub or a till, its HTTP server (API, `/ws`, the UI) and background tasks.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use axum::Router;
use axum::http::StatusCode;
use capsule_hub::api::{self, ApiState, MutationHandler, StatusHandler};
use capsule_hub::{ApiError, ExtraMetrics, Hub, NodeMetrics, PublisherConfig, Stream};
use capsule_protocol::{BackupStatus, MutationBatch, NodeStatus, Schema};
use capsule_replica::{
    FollowConfig, Link, LocalChange, OnChange, Outbox, ReplicaError, ReplicaMetrics,
};
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
    /// Till: at most one pull per entity per this window.
    pub pull_window: std::time::Duration,
    /// Till: how long without a word from the hub before the link counts as dead.
    pub silence_timeout: std::time::Duration,
    /// Hub: scheduled backups.
    pub backup: Option<crate::backup::BackupSchedule>,
    /// Till: what its provisional order numbers start with (`B` gives B-1, B-2...).
    pub provisional_prefix: Option<String>,
    /// Connection limits of this node's server.
    pub limits: capsule_hub::Limits,
    /// Host names this node answers to besides IP addresses, `localhost` and its own name.
    pub allowed_hosts: Vec<String>,
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
            pull_window: std::time::Duration::from_millis(100),
            silence_timeout: std::time::Duration::from_secs(30),
            backup: None,
            provisional_prefix: None,
            limits: capsule_hub::Limits::default(),
            allowed_hosts: Vec::new(),
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

/// Opens the store, starts the role's tasks and binds the server. Prints nothing; the CLI
/// prints the `listening on` line.
pub async fn start(config: NodeConfig) -> anyhow::Result<RunningNode> {
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("cannot create data directory {}", config.data_dir.display()))?;
    let db = config.data_dir.join("node.sqlite3");
    let schema = config.schema.clone();
    let durability = match config.role {
        Role::Hub => Durability::Full,
        Role::Till => Durability::Replica,
    };
    let store = tokio::task::spawn_blocking(move || Store::open_with(&db, schema, durability))
        .await?
        .with_context(|| {
            format!(
                "cannot open {}",
                config.data_dir.join("node.sqlite3").display()
            )
        })?;
    let store = Arc::new(store);
    let listener = TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    let addr = listener.local_addr()?;
    let self_url = format!("http://{addr}");

    let mut background = Vec::new();
    let router = match config.role {
        Role::Hub => {
            if config.demo {
                let s = store.clone();
                let seeded =
                    tokio::task::spawn_blocking(move || crate::demo::seed_if_empty(&s)).await??;
                if seeded > 0 {
                    tracing::info!(mutations = seeded, "seeded demo data");
                }
            }
            let hub = Hub::start(store.clone(), config.publisher)?;
            let backup_state = config.backup.as_ref().map(|b| {
                let state = Arc::new(std::sync::Mutex::new(BackupStatus {
                    dir: b.dir.display().to_string(),
                    every_s: b.every.as_secs(),
                    keep: b.keep,
                    ..BackupStatus::default()
                }));
                background.push(tokio::spawn(crate::backup::run_schedule(
                    store.clone(),
                    b.clone(),
                    state.clone(),
                )));
                state
            });
            let stream = hub.stream.clone();
            let node_id = store.node_id().to_string();
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
            });
            let commands = crate::routes::router(store.clone(), hub.mutations(), None);
            let router = hub.router(status, None).merge(commands);
            // The hub lives as long as the server: its publisher stops when it drops.
            let hub = Arc::new(hub);
            router.layer(axum::Extension(hub))
        }
        Role::Till => {
            let hub_url = config.hub_url.clone().context("a till needs --hub URL")?;
            let ui_stream = Stream::new(
                store.node_id().to_string(),
                "till",
                Arc::new(NodeMetrics::default()),
            );
            let on_change: OnChange = {
                let ui = ui_stream.clone();
                Arc::new(move |c| match c {
                    LocalChange::Changed(capsule) => ui.publish_next(capsule),
                    LocalChange::Reset => ui.publish_reset(),
                })
            };
            let link = Link::default();
            let replica_metrics = Arc::new(ReplicaMetrics::default());
            let mut follow = FollowConfig::new(hub_url.clone(), store.node_id());
            follow.light = config.light;
            follow.pull_window = config.pull_window;
            follow.silence_timeout = config.silence_timeout;
            background.push(tokio::spawn(capsule_replica::follow(
                store.clone(),
                follow,
                link.clone(),
                on_change.clone(),
                replica_metrics.clone(),
            )));
            background.push(tokio::spawn(capsule_replica::report(
                hub_url.clone(),
                store.node_id().to_string(),
                link.clone(),
                replica_metrics.clone(),
            )));
            let extra: ExtraMetrics = Arc::new(move |text, json| {
                replica_metrics.render(text);
                json.insert(
                    "replica".into(),
                    serde_json::to_value(replica_metrics.to_json()).expect("serialises"),
                );
            });
            let prefix = config
                .provisional_prefix
                .clone()
                .unwrap_or_else(|| default_prefix(store.node_id()));
            let outbox = Arc::new(Outbox::new(store.clone(), &hub_url, on_change, prefix));
            background.push(tokio::spawn(outbox.clone().run()));
            let mutations: MutationHandler = {
                let outbox = outbox.clone();
                Arc::new(move |batch: MutationBatch| {
                    let o = outbox.clone();
                    Box::pin(async move {
                        o.submit(batch)
                            .await
                            .map(|s| s.response)
                            .map_err(forward_error)
                    })
                })
            };
            let node_id = store.node_id().to_string();
            let status_store = store.clone();
            let status: StatusHandler = Arc::new(move || {
                let l = link.get();
                let (pending, rejected) = status_store.outbox_counts().unwrap_or_default();
                NodeStatus {
                    node_id: node_id.clone(),
                    role: "till".into(),
                    state: l.state.as_str().into(),
                    hub_url: Some(hub_url.clone()),
                    hub_node_id: l.hub_node_id,
                    seq: l.seq,
                    pending,
                    rejected,
                    offline_since: l.offline_since,
                    backup: None,
                }
            });
            let commands = crate::routes::router(store.clone(), mutations.clone(), Some(outbox));
            api::router(ApiState {
                store: store.clone(),
                stream: ui_stream,
                mutations,
                status,
                modes: None,
                extra_metrics: Some(extra),
            })
            .merge(commands)
        }
    };
    let router = with_ui(router, config.ui_dir.as_deref());
    let router = capsule_hub::guard::layer(
        router,
        capsule_hub::guard::Hosts::for_this_machine(&config.allowed_hosts),
    );
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let mut limits = config.limits;
    limits.max_connections = capsule_hub::connection_capacity(limits.max_connections);
    let server = tokio::spawn(capsule_hub::serve(
        listener,
        router,
        async {
            let _ = rx.await;
        },
        limits,
    ));
    Ok(RunningNode {
        addr,
        node_id: store.node_id().to_string(),
        store,
        shutdown: Some(tx),
        server,
        background,
    })
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

fn with_ui(router: Router, ui_dir: Option<&std::path::Path>) -> Router {
    match ui_dir {
        Some(dir) if dir.join("index.html").is_file() => router
            .fallback_service(ServeDir::new(dir).fallback(ServeFile::new(dir.join("index.html")))),
        _ => router.fallback(|| async { axum::response::Html(UI_MISSING) }),
    }
}
