//! A node the shop's mesh decides about (`--role auto`, or a kitchen screen without `--hub`):
//! it joins the gossip, runs the election every tick and swaps its role (hub or follower) in
//! place, while its HTTP server, its address and its screens stay.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use anyhow::Context;
use axum::Router;
use capsule_mesh::{Member, Mesh, MeshConfig};
use capsule_protocol::{HubChange, NodeStatus, PeerStatus};
use capsule_replica::{HubTarget, Link, ReplicaMetrics};
use capsule_server::{StatusHandler, Stream};
use capsule_store::{Claim, Store};
use tower::ServiceExt;

use crate::control::{Control, ControlConfig, Effect};
use crate::node::{FollowerParts, HubParts, NodeConfig, Role, follower_parts, hub_parts, with_ui};

/// How often the election looks at the mesh.
const TICK: Duration = Duration::from_millis(100);

/// What `/api/status` tells about this node's place in the mesh.
#[derive(Default)]
struct View {
    role: &'static str,
    term: i64,
    hub_url: Option<String>,
    hub_node_id: Option<String>,
    hub_stream: Option<Stream>,
    peers: Vec<PeerStatus>,
    hub_change: Option<HubChange>,
    /// While hub with `--backup-dir`: its scheduled backups' state.
    backup: Option<Arc<std::sync::Mutex<capsule_protocol::BackupStatus>>>,
}

enum Active {
    Idle,
    Hub {
        parts: HubParts,
        tasks: Vec<tokio::task::JoinHandle<()>>,
    },
    Follower(FollowerParts),
}

/// The async shell around [`Control`]: it gathers what the mesh shows, lets the controller
/// decide (on a blocking thread: it reads and writes the store), and carries out the effects
/// with the node's router, tasks, hub target and gossip.
struct Controller {
    store: Arc<Store>,
    config: NodeConfig,
    mesh: Mesh,
    slot: Arc<RwLock<Router>>,
    view: Arc<Mutex<View>>,
    status: StatusHandler,
    active: Active,
    target_tx: tokio::sync::watch::Sender<Option<String>>,
    target: HubTarget,
    link: Link,
    metrics: Arc<ReplicaMetrics>,
    role_name: &'static str,
    control: Arc<Mutex<Control>>,
}

/// Joins the mesh and starts the election; returns the router that always serves whatever
/// the node currently is.
pub(crate) async fn start(
    store: Arc<Store>,
    config: &NodeConfig,
    addr: SocketAddr,
    self_url: &str,
    device_id: &str,
    identity: Arc<capsule_trust::Identity>,
    roster: capsule_trust::Roster,
) -> anyhow::Result<(Router, Vec<tokio::task::JoinHandle<()>>)> {
    let eligible = config.role == Role::Auto;
    let url = config
        .advertise
        .clone()
        .unwrap_or_else(|| advertised_url(addr, self_url));
    let mesh = Mesh::start(
        MeshConfig {
            node_id: store.node_id().to_string(),
            name: config
                .name
                .clone()
                .unwrap_or_else(|| crate::node::default_prefix(store.node_id())),
            listen: addr,
            url,
            eligible: eligible && store.history_complete()?,
            priority: if eligible { config.priority } else { 0 },
            peers: config.peers.iter().map(|p| peer_addr(p)).collect(),
            mdns: config.mdns,
            cluster: format!("capsule-pos/{}", config.shop),
            trust: Some(capsule_mesh::secure::GossipTrust {
                identity,
                roster: roster.clone(),
            }),
        },
        store.freshness()?,
        store.term()?,
    )
    .await
    .context("cannot join the shop's mesh (gossip on UDP)")?;
    let placeholder = Router::new().fallback(|| async {
        capsule_server::ApiError::new(
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            "this node is joining the shop's mesh; try again in a moment",
        )
    });
    let slot = Arc::new(RwLock::new(placeholder));
    let view = Arc::new(Mutex::new(View {
        role: if eligible { "till" } else { "screen" },
        term: store.term()?,
        ..View::default()
    }));
    let link = Link::default();
    let status = status_handler(
        store.clone(),
        view.clone(),
        link.clone(),
        config.priority,
        device_id.to_string(),
        roster,
        config
            .name
            .clone()
            .unwrap_or_else(|| crate::node::default_prefix(store.node_id())),
    );
    let (target_tx, target) = HubTarget::channel();
    let control = Control::new(
        ControlConfig {
            eligible,
            priority: config.priority,
            demo: config.demo,
            handback_quiet: config.handback_quiet,
        },
        Instant::now(),
    );
    let controller = Controller {
        store: store.clone(),
        config: config.clone(),
        mesh,
        slot: slot.clone(),
        view,
        status,
        active: Active::Idle,
        target_tx,
        target,
        link,
        metrics: Arc::new(ReplicaMetrics::default()),
        role_name: if eligible { "till" } else { "screen" },
        control: Arc::new(Mutex::new(control)),
    };
    // A node that starts with nothing elected yet serves its screens as a follower (offline,
    // selling into its outbox) until the election says otherwise.
    let mut controller = controller;
    controller.become_follower(None);
    let task = tokio::spawn(controller.run());
    let dispatch =
        Router::new().fallback_service(tower::service_fn(move |req: axum::extract::Request| {
            let router = slot.read().unwrap_or_else(|p| p.into_inner()).clone();
            async move { router.oneshot(req).await }
        }));
    Ok((dispatch, vec![task]))
}

impl Controller {
    async fn run(mut self) {
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if let Err(e) = self.step().await {
                tracing::error!(error = %e, "election step failed");
            }
            capsule_mesh::log_budget::log_summary();
        }
    }

    async fn step(&mut self) -> anyhow::Result<()> {
        let (me, live) = self.mesh.view().await;
        self.publish_view(&me).await;
        let hub_seq = match &self.active {
            Active::Hub { parts, .. } => Some(parts.hub.stream.last_seq()),
            _ => None,
        };
        let effects = self
            .decide(move |c, store, now| c.tick(store, &me, &live, hub_seq, now))
            .await?;
        self.carry_out(effects).await
    }

    /// Runs one of the controller's decisions on a blocking thread (it reads and writes the
    /// store), now.
    async fn decide(
        &self,
        f: impl FnOnce(&mut Control, &Store, Instant) -> anyhow::Result<Vec<Effect>> + Send + 'static,
    ) -> anyhow::Result<Vec<Effect>> {
        let (control, store) = (self.control.clone(), self.store.clone());
        let now = Instant::now();
        tokio::task::spawn_blocking(move || {
            f(
                &mut control.lock().unwrap_or_else(|p| p.into_inner()),
                &store,
                now,
            )
        })
        .await?
    }

    async fn carry_out(&mut self, effects: Vec<Effect>) -> anyhow::Result<()> {
        for effect in effects {
            match effect {
                Effect::Gossip(update) => {
                    if let Some(term) = update.term {
                        self.view.lock().unwrap_or_else(|p| p.into_inner()).term = term;
                    }
                    self.mesh.update(update).await;
                }
                Effect::ServeHub(claim) => {
                    if let Err(e) = self.serve_hub(claim).await {
                        tracing::error!(error = %e, "the hub could not start; the claim is given up");
                        let undo = self
                            .decide(|c, store, now| c.hub_start_failed(store, now))
                            .await?;
                        // Gossip and follow effects only: carried out without recursion.
                        for e in undo {
                            match e {
                                Effect::Gossip(u) => self.mesh.update(u).await,
                                Effect::Follow(hub) => self.become_follower(hub.as_ref()),
                                Effect::ServeHub(_) => {}
                            }
                        }
                    }
                }
                Effect::Follow(hub) => {
                    if hub.is_none() && matches!(self.active, Active::Hub { .. }) {
                        tracing::warn!("stepped down as hub; no hub known yet");
                    }
                    self.become_follower(hub.as_ref());
                }
            }
        }
        Ok(())
    }

    /// Starts the hub's parts for a claim already on disk and swaps the router to them.
    async fn serve_hub(&mut self, claim: Claim) -> anyhow::Result<()> {
        let started = Instant::now();
        self.stop_active();
        let mut tasks = Vec::new();
        let parts = hub_parts(&self.store, &self.config, claim.lineage(), &mut tasks).await?;
        tasks.push(tokio::spawn(adopt_late_writes(
            self.store.clone(),
            parts.hub.notifier(),
        )));
        let router = parts.router(&self.store, self.status.clone());
        *self.slot.write().unwrap_or_else(|p| p.into_inner()) =
            with_ui(router, self.config.ui_dir.as_deref());
        {
            let mut view = self.view.lock().unwrap_or_else(|p| p.into_inner());
            view.role = "hub";
            view.term = claim.term;
            view.hub_node_id = Some(self.store.node_id().to_string());
            view.hub_url = None;
            view.hub_stream = Some(parts.hub.stream.clone());
            view.backup = parts.backup.clone();
            view.hub_change = Some(HubChange {
                term: claim.term,
                hub_node_id: self.store.node_id().to_string(),
                hub_name: self.config.name.clone().unwrap_or_default(),
                at: capsule_protocol::now_rfc3339(),
            });
        }
        tracing::info!(
            term = claim.term,
            from_version = claim.from_version,
            took_ms = started.elapsed().as_millis() as u64,
            "claimed the hub"
        );
        self.active = Active::Hub { parts, tasks };
        Ok(())
    }

    fn stop_active(&mut self) {
        match std::mem::replace(&mut self.active, Active::Idle) {
            Active::Idle => {}
            Active::Hub { parts, tasks, .. } => {
                for t in tasks {
                    t.abort();
                }
                parts.hub.stream.close();
            }
            Active::Follower(parts) => {
                for t in parts.tasks {
                    t.abort();
                }
                parts.ui_stream.close();
            }
        }
    }

    /// Follows `hub` (or, with None, waits for one while selling into the outbox).
    fn become_follower(&mut self, hub: Option<&Member>) {
        if !matches!(self.active, Active::Follower(_)) {
            self.stop_active();
            let parts = follower_parts(
                &self.store,
                &self.config,
                self.target.clone(),
                self.link.clone(),
                self.metrics.clone(),
                self.role_name,
                // Every node of the mesh, kitchen screens too, copies the journal: if another
                // lineage's snapshot ever replaces its rows, what they held is replayed from it.
                true,
            );
            let router = parts.router(&self.store, self.status.clone());
            *self.slot.write().unwrap_or_else(|p| p.into_inner()) =
                with_ui(router, self.config.ui_dir.as_deref());
            self.active = Active::Follower(parts);
            let mut view = self.view.lock().unwrap_or_else(|p| p.into_inner());
            view.role = self.role_name;
            view.hub_stream = None;
        }
        let Some(hub) = hub else {
            // No hub known: nothing goes anywhere until one is (a write queued for a node
            // that is no longer hub would be refused there, or worse, taken by it).
            if self.target_tx.borrow().is_some() {
                self.target_tx.send_replace(None);
            }
            let mut view = self.view.lock().unwrap_or_else(|p| p.into_inner());
            view.hub_url = None;
            view.hub_node_id = None;
            return;
        };
        let url = hub.url.trim_end_matches('/').to_string();
        if self.target_tx.borrow().as_deref() != Some(url.as_str()) {
            tracing::info!(hub = %hub.name, %url, term = hub.hub_term, "following the hub");
            self.target_tx.send_replace(Some(url.clone()));
        }
        let mut view = self.view.lock().unwrap_or_else(|p| p.into_inner());
        let changed = view.hub_node_id.as_deref() != Some(hub.node_id.as_str())
            || view
                .hub_change
                .as_ref()
                .is_none_or(|c| c.term != hub.hub_term);
        view.hub_url = Some(url);
        view.hub_node_id = Some(hub.node_id.clone());
        if changed {
            view.hub_change = Some(HubChange {
                term: hub.hub_term,
                hub_node_id: hub.node_id.clone(),
                hub_name: hub.name.clone(),
                at: capsule_protocol::now_rfc3339(),
            });
        }
    }

    async fn publish_view(&mut self, me: &Member) {
        let all = self.mesh.all().await;
        let peer = |m: &Member, live: bool| PeerStatus {
            node_id: m.node_id.clone(),
            name: m.name.clone(),
            url: m.url.clone(),
            role: if m.hub_term > 0 {
                "hub"
            } else if m.eligible {
                "till"
            } else {
                "screen"
            }
            .into(),
            priority: m.priority,
            fresh: m.fresh,
            term: m.term,
            live,
        };
        let mut peers = vec![peer(me, true)];
        peers.extend(
            all.iter()
                .filter(|(m, _)| m.node_id != me.node_id)
                .map(|(m, live)| peer(m, *live)),
        );
        self.view.lock().unwrap_or_else(|p| p.into_inner()).peers = peers;
    }
}

/// A write that reached this node's outbox while it was becoming hub (its till screen had
/// it in flight) is applied as hub too, never left waiting for a hub that is itself.
async fn adopt_late_writes(store: Arc<Store>, publisher: Arc<tokio::sync::Notify>) {
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    loop {
        tick.tick().await;
        let s = store.clone();
        match tokio::task::spawn_blocking(move || s.adopt_outbox()).await {
            Ok(Ok(0)) => {}
            Ok(Ok(n)) => {
                tracing::info!(requests = n, "applied writes queued while becoming hub");
                publisher.notify_one();
            }
            Ok(Err(e)) => tracing::error!(error = %e, "cannot apply queued writes as hub"),
            Err(e) => tracing::error!(error = %e, "adopting queued writes failed"),
        }
    }
}

fn status_handler(
    store: Arc<Store>,
    view: Arc<Mutex<View>>,
    link: Link,
    priority: i64,
    device_id: String,
    roster: capsule_trust::Roster,
    name: String,
) -> StatusHandler {
    Arc::new(move || {
        let v = view.lock().unwrap_or_else(|p| p.into_inner());
        let (pending, rejected) = store.outbox_counts().unwrap_or_default();
        let is_hub = v.role == "hub";
        let l = link.get();
        NodeStatus {
            node_id: store.node_id().to_string(),
            role: v.role.into(),
            state: if is_hub { "online" } else { l.state.as_str() }.into(),
            hub_url: v
                .hub_url
                .clone()
                .or_else(|| v.peers.first().filter(|_| is_hub).map(|me| me.url.clone())),
            hub_node_id: v.hub_node_id.clone(),
            seq: v.hub_stream.as_ref().map_or(l.seq, |s| s.last_seq()),
            pending,
            rejected,
            offline_since: if is_hub { None } else { l.offline_since },
            backup: v
                .backup
                .as_ref()
                .filter(|_| is_hub)
                .map(|b| b.lock().unwrap_or_else(|p| p.into_inner()).clone()),
            term: v.term,
            priority,
            mesh: Some(v.role.into()),
            peers: v.peers.clone(),
            hub_change: v.hub_change.clone(),
            history_copying: store.backfill_at().ok().flatten().map(|at| at.entity),
            device_id: Some(device_id.clone()),
            paired: roster.is_paired(),
            link_error: if is_hub { None } else { l.last_error },
            name: Some(name.clone()),
        }
    })
}

/// `host:port` of a peer given as a URL or an address.
fn peer_addr(peer: &str) -> String {
    let p = peer
        .trim_start_matches("http://")
        .trim_start_matches("https://");
    p.split('/').next().unwrap_or(p).to_string()
}

/// The URL others reach this node at: its listen address, or for 0.0.0.0 the address of
/// the interface the default route uses.
fn advertised_url(addr: SocketAddr, self_url: &str) -> String {
    if !addr.ip().is_unspecified() {
        return self_url.to_string();
    }
    // Connecting a UDP socket sends nothing; it only picks the outgoing interface.
    let ip = std::net::UdpSocket::bind("0.0.0.0:0")
        .and_then(|s| {
            s.connect("192.0.2.1:9")?;
            s.local_addr()
        })
        .map(|a| a.ip())
        .unwrap_or(std::net::IpAddr::from([127, 0, 0, 1]));
    format!("http://{ip}:{}", addr.port())
}
