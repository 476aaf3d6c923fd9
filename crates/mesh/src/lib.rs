//! Capsule POS mesh: finding the shop's nodes (mDNS and static peers), knowing which are
//! alive (chitchat: gossip with a phi-accrual failure detector), and the election rule.
//!
//! mDNS only introduces nodes; liveness is what the gossip says. Each node gossips a few keys
//! (its URL, name, priority, freshness, term, the term it is hub of); [`election::decide`]
//! turns one node's view into what it should be. Gossip goes over UDP on the same port number
//! as the node's HTTP server; this module is the one place that traffic is made. Once the node
//! is paired, every datagram is signed with its roster key and only live members' datagrams are
//! taken ([`secure`], chitchat's `Transport`), and only hub-eligible members may lead.

pub mod election;
pub mod log_budget;
pub mod secure;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use chitchat::transport::UdpTransport;
use chitchat::{ChitchatConfig, ChitchatHandle, ChitchatId, FailureDetectorConfig};
pub use election::{Member, Situation, Verdict, decide};

/// What a hub serves and took over; the wire form lives with the protocol.
pub type Lineage = LineageWire;
use capsule_protocol::Lineage as LineageWire;

/// The DNS-SD service type nodes announce.
pub const SERVICE_TYPE: &str = "_capsule-pos._udp.local.";

/// How often each node gossips. Heartbeats ride on gossip, so this sets how fast a silent
/// node is noticed: the failure detector declares it dead after about
/// `PHI_THRESHOLD` mean heartbeat intervals.
pub const GOSSIP_INTERVAL: Duration = Duration::from_millis(150);
/// With heartbeats every ~150 ms this is about 1.2 s of silence (plus a gossip round) before
/// a node is declared dead: inside the 3 s budget for a failover, with room for a loaded
/// machine's scheduling hiccups.
pub const PHI_THRESHOLD: f64 = 8.0;

/// What a node tells the mesh about itself.
#[derive(Debug, Clone)]
pub struct MeshConfig {
    pub node_id: String,
    pub name: String,
    /// Address the node's HTTP server listens on; gossip uses the same IP and port over UDP.
    pub listen: SocketAddr,
    /// The node's base URL as others reach it.
    pub url: String,
    pub eligible: bool,
    pub priority: i64,
    /// Static peers (`host:port`), for networks that block multicast.
    pub peers: Vec<String>,
    pub mdns: bool,
    /// A shop's nodes gossip only with nodes of the same cluster.
    pub cluster: String,
    /// This device's key and the roster: gossip is signed once the node is paired.
    pub trust: Option<secure::GossipTrust>,
}

/// This node's membership in the mesh.
pub struct Mesh {
    handle: Arc<ChitchatHandle>,
    self_id: ChitchatId,
    trust: Option<secure::GossipTrust>,
    _mdns: Option<mdns_sd::ServiceDaemon>,
}

/// Gossip keys.
mod key {
    pub const URL: &str = "url";
    pub const NAME: &str = "name";
    pub const ELIGIBLE: &str = "eligible";
    pub const PRIORITY: &str = "priority";
    pub const FRESH: &str = "fresh";
    pub const TERM: &str = "term";
    pub const HUB_TERM: &str = "hub_term";
    pub const CLAIMED_FROM: &str = "claimed_from";
    pub const HANDOVER_TO: &str = "handover_to";
    pub const PREV_HUB: &str = "prev_hub";
    pub const PREV_TERM: &str = "prev_term";
    /// The node's device id (its roster key's hash).
    pub const DEVICE: &str = "device";
}

/// Changes to what this node gossips about itself.
#[derive(Debug, Clone, Default)]
pub struct SelfUpdate {
    pub fresh: Option<i64>,
    pub term: Option<i64>,
    pub hub_term: Option<i64>,
    pub claimed_from: Option<i64>,
    /// `Some(None)` clears it.
    pub handover_to: Option<Option<String>>,
    /// As hub: what it took over (`Some(None)` clears it).
    pub prev: Option<Option<(String, i64)>>,
    /// May lead now (a hub-eligible node that holds the shop's whole history).
    pub eligible: Option<bool>,
}

impl Mesh {
    /// Joins the mesh: starts gossip on `listen` (UDP) and, when asked, mDNS.
    pub async fn start(config: MeshConfig, fresh: i64, term: i64) -> anyhow::Result<Mesh> {
        // A new generation per start: peers tell a restarted node from its old self.
        let generation = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        let self_id = ChitchatId::new(config.node_id.clone(), generation, config.listen);
        let chitchat_config = ChitchatConfig {
            chitchat_id: self_id.clone(),
            cluster_id: config.cluster.clone(),
            gossip_interval: GOSSIP_INTERVAL,
            listen_addr: config.listen,
            seed_nodes: config.peers.clone(),
            failure_detector_config: FailureDetectorConfig {
                phi_threshold: PHI_THRESHOLD,
                sampling_window_size: 200,
                // A gap longer than this is an outage, not a sample of the usual rhythm.
                max_interval: Duration::from_secs(2),
                initial_interval: GOSSIP_INTERVAL,
                dead_node_grace_period: Duration::from_secs(3600),
            },
            marked_for_deletion_grace_period: Duration::from_secs(3600),
            catchup_callback: None,
            extra_liveness_predicate: None,
            protocol_version: chitchat::ProtocolVersion::V1,
        };
        let initial = vec![
            (key::URL.to_string(), config.url.clone()),
            (key::NAME.to_string(), config.name.clone()),
            (key::ELIGIBLE.to_string(), config.eligible.to_string()),
            (key::PRIORITY.to_string(), config.priority.to_string()),
            (key::FRESH.to_string(), fresh.to_string()),
            (key::TERM.to_string(), term.to_string()),
            (key::HUB_TERM.to_string(), "0".to_string()),
            (key::CLAIMED_FROM.to_string(), "0".to_string()),
            (key::HANDOVER_TO.to_string(), String::new()),
            (key::PREV_HUB.to_string(), String::new()),
            (key::PREV_TERM.to_string(), "0".to_string()),
            (
                key::DEVICE.to_string(),
                config
                    .trust
                    .as_ref()
                    .map(|t| t.identity.device_id().to_string())
                    .unwrap_or_default(),
            ),
        ];
        let handle = Arc::new(match &config.trust {
            Some(trust) => {
                let transport = secure::SignedUdp {
                    trust: trust.clone(),
                };
                chitchat::spawn_chitchat(chitchat_config, initial, &transport).await?
            }
            None => chitchat::spawn_chitchat(chitchat_config, initial, &UdpTransport).await?,
        });
        let mdns = if config.mdns {
            match start_mdns(&config, handle.clone()) {
                Ok(d) => Some(d),
                Err(e) => {
                    tracing::warn!(error = %e, "mDNS unavailable; using static peers only");
                    None
                }
            }
        } else {
            None
        };
        Ok(Mesh {
            handle,
            self_id,
            trust: config.trust.clone(),
            _mdns: mdns,
        })
    }

    /// Changes what this node gossips about itself.
    pub async fn update(&self, u: SelfUpdate) {
        let cc = self.handle.chitchat();
        let mut cc = cc.lock().await;
        let me = cc.self_node_state();
        if let Some(v) = u.fresh {
            me.set(key::FRESH, v);
        }
        if let Some(v) = u.eligible {
            me.set(key::ELIGIBLE, v.to_string());
        }
        if let Some(v) = u.term {
            me.set(key::TERM, v);
        }
        if let Some(v) = u.hub_term {
            me.set(key::HUB_TERM, v);
        }
        if let Some(v) = u.claimed_from {
            me.set(key::CLAIMED_FROM, v);
        }
        if let Some(v) = u.handover_to {
            me.set(key::HANDOVER_TO, v.unwrap_or_default());
        }
        if let Some(v) = u.prev {
            let (hub, term) = v.unwrap_or_default();
            me.set(key::PREV_HUB, hub);
            me.set(key::PREV_TERM, term);
        }
    }

    /// This node and the live members it sees (others only, newest generation per node).
    pub async fn view(&self) -> (Member, Vec<Member>) {
        let cc = self.handle.chitchat();
        let mut cc = cc.lock().await;
        let me = member(&self.self_id, cc.self_node_state());
        let live: Vec<ChitchatId> = cc.live_nodes().cloned().collect();
        let mut others: BTreeMap<String, (u64, Member)> = BTreeMap::new();
        for id in live {
            if *id.node_id == *self.self_id.node_id {
                continue;
            }
            let Some(state) = cc.node_state(&id) else {
                continue;
            };
            // A node not yet telling its URL has not finished starting.
            if state.get(key::URL).is_none() {
                continue;
            }
            let Some(m) = self.admitted(member(&id, state), state) else {
                continue;
            };
            match others.get(&m.node_id) {
                Some((g, _)) if *g >= id.generation_id => {}
                _ => {
                    others.insert(m.node_id.clone(), (id.generation_id, m));
                }
            }
        }
        (me, others.into_values().map(|(_, m)| m).collect())
    }
}

impl Member {
    /// What this member, as hub, serves and took over.
    pub fn lineage(&self) -> Lineage {
        Lineage {
            term: self.hub_term,
            prev_hub: self.prev_hub.clone(),
            prev_term: self.prev_term,
            from_v: self.claimed_from,
        }
    }
}

impl Mesh {
    /// Every node ever seen this run with whether it is live now (for the dashboard).
    pub async fn all(&self) -> Vec<(Member, bool)> {
        let cc = self.handle.chitchat();
        let cc = cc.lock().await;
        let live: std::collections::HashSet<ChitchatId> = cc.live_nodes().cloned().collect();
        let mut out: BTreeMap<String, (u64, Member, bool)> = BTreeMap::new();
        for (id, state) in cc.node_states() {
            if state.get(key::URL).is_none() {
                continue;
            }
            let Some(m) = self.admitted(member(id, state), state) else {
                continue;
            };
            let is_live = live.contains(id);
            match out.get(&m.node_id) {
                Some((g, _, _)) if *g >= id.generation_id => {}
                _ => {
                    out.insert(m.node_id.clone(), (id.generation_id, m, is_live));
                }
            }
        }
        out.into_values().map(|(_, m, l)| (m, l)).collect()
    }

    /// `m` as a paired node may count it: only a live roster member, and only a hub-eligible
    /// one may lead (a till or screen that says it may is not believed).
    fn admitted(&self, mut m: Member, state: &chitchat::NodeState) -> Option<Member> {
        let Some(trust) = self.trust.as_ref().filter(|t| t.roster.is_closed()) else {
            return Some(m);
        };
        let device = state
            .get(key::DEVICE)
            .and_then(|d| capsule_trust::DeviceId::try_from(d.to_string()).ok())?;
        let role = trust.roster.live(&device)?.role;
        m.eligible &= role == capsule_trust::DeviceRole::HubEligible;
        Some(m)
    }

    /// Gossips with `addr` now (a peer just discovered).
    pub fn introduce(&self, addr: SocketAddr) {
        let _ = self.handle.gossip(addr);
    }

    pub fn shutdown(&self) {
        let _ = self.handle.initiate_shutdown();
        if let Some(d) = &self._mdns {
            let _ = d.shutdown();
        }
    }
}

fn member(id: &ChitchatId, state: &chitchat::NodeState) -> Member {
    let int = |k: &str| state.get(k).and_then(|v| v.parse().ok()).unwrap_or(0);
    Member {
        node_id: id.node_id.to_string(),
        name: state.get(key::NAME).unwrap_or_default().to_string(),
        url: state.get(key::URL).unwrap_or_default().to_string(),
        eligible: state.get(key::ELIGIBLE) == Some("true"),
        priority: int(key::PRIORITY),
        fresh: int(key::FRESH),
        term: int(key::TERM),
        hub_term: int(key::HUB_TERM),
        claimed_from: int(key::CLAIMED_FROM),
        handover_to: state
            .get(key::HANDOVER_TO)
            .filter(|v| !v.is_empty())
            .map(str::to_string),
        prev_hub: state
            .get(key::PREV_HUB)
            .filter(|v| !v.is_empty())
            .map(str::to_string),
        prev_term: int(key::PREV_TERM),
    }
}

/// Announces this node over mDNS and introduces every node of the same cluster it finds to
/// the gossip (which then decides whether it is alive).
fn start_mdns(
    config: &MeshConfig,
    handle: Arc<ChitchatHandle>,
) -> anyhow::Result<mdns_sd::ServiceDaemon> {
    let daemon = mdns_sd::ServiceDaemon::new()?;
    let host = format!(
        "capsule-{}.local.",
        &config.node_id[..config.node_id.len().min(12)]
    );
    let props = [
        ("cluster", config.cluster.as_str()),
        ("node", config.node_id.as_str()),
    ];
    let ip = config.listen.ip();
    let info = if ip.is_unspecified() {
        mdns_sd::ServiceInfo::new(
            SERVICE_TYPE,
            &config.node_id,
            &host,
            "",
            config.listen.port(),
            &props[..],
        )?
        .enable_addr_auto()
    } else {
        mdns_sd::ServiceInfo::new(
            SERVICE_TYPE,
            &config.node_id,
            &host,
            ip,
            config.listen.port(),
            &props[..],
        )?
    };
    daemon.register(info)?;
    let events = daemon.browse(SERVICE_TYPE)?;
    let (cluster, me) = (config.cluster.clone(), config.node_id.clone());
    let runtime = tokio::runtime::Handle::current();
    std::thread::Builder::new()
        .name("mdns-browse".into())
        .spawn(move || {
            while let Ok(event) = events.recv() {
                let mdns_sd::ServiceEvent::ServiceResolved(found) = event else {
                    continue;
                };
                if found.txt_properties.get_property_val_str("cluster") != Some(cluster.as_str())
                    || found.txt_properties.get_property_val_str("node") == Some(me.as_str())
                {
                    continue;
                }
                for ip in &found.addresses {
                    let addr = SocketAddr::new(ip.to_ip_addr(), found.port);
                    let h = handle.clone();
                    runtime.spawn(async move {
                        let _ = h.gossip(addr);
                    });
                }
            }
        })?;
    Ok(daemon)
}
