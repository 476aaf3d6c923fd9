//! The shop's roster as this node holds it in memory: which devices may connect and in which
//! role. TLS verifiers, the route guard and the gossip ask it on every connection, so it is a
//! lock and a map, reloaded from the synced `device` rows whenever they change.
//!
//! A node is *paired* once the roster names it as a live member, or, before its first sync,
//! once it holds anchors: the device it paired with and the live devices that one named
//! (`tilld pair` writes them). An unpaired node runs open, as a shop did before pairing
//! existed; a paired one talks only to members.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, RwLock};

use serde_json::{Map, Value};

use crate::{DeviceId, roster};

/// What a device may be in the shop.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DeviceRole {
    /// May become hub, and may change the roster.
    HubEligible,
    Till,
    /// A kitchen screen: reads kitchen work and bumps it.
    Screen,
}

impl DeviceRole {
    pub fn parse(s: &str) -> Option<DeviceRole> {
        match s {
            "hub-eligible" => Some(DeviceRole::HubEligible),
            "till" => Some(DeviceRole::Till),
            "screen" => Some(DeviceRole::Screen),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            DeviceRole::HubEligible => "hub-eligible",
            DeviceRole::Till => "till",
            DeviceRole::Screen => "screen",
        }
    }
}

/// One device of the roster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub name: String,
    pub role: DeviceRole,
    /// SubjectPublicKeyInfo, DER; its SHA-256 is the id.
    pub public_key: Vec<u8>,
    pub revoked: bool,
}

/// A device a node trusts from pairing (the one it paired with, and the others that one named),
/// kept until the roster itself arrives.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Anchor {
    pub device_id: DeviceId,
    pub name: String,
    pub role: DeviceRole,
    /// base64 of the SubjectPublicKeyInfo.
    pub public_key: String,
}

const ANCHOR_FILE: &str = "paired-with.json";

impl Anchor {
    /// The anchors kept in `dir`, if this device paired there.
    pub fn load(dir: &Path) -> Vec<Anchor> {
        std::fs::read_to_string(dir.join(ANCHOR_FILE))
            .ok()
            .and_then(|text| serde_json::from_str(&text).ok())
            .unwrap_or_default()
    }

    /// Keeps `anchors` in `dir` (replacing any earlier ones).
    pub fn save(anchors: &[Anchor], dir: &Path) -> std::io::Result<()> {
        let tmp = dir.join(format!("{ANCHOR_FILE}.new"));
        std::fs::write(&tmp, serde_json::to_vec_pretty(anchors)?)?;
        std::fs::rename(tmp, dir.join(ANCHOR_FILE))
    }

    fn member(&self) -> Option<Member> {
        let key = roster::decode_key(&self.public_key).ok()?;
        (DeviceId::of_public_key(&key) == self.device_id).then(|| Member {
            name: self.name.clone(),
            role: self.role,
            public_key: key,
            revoked: false,
        })
    }
}

fn anchored(anchors: Vec<Anchor>) -> HashMap<DeviceId, Member> {
    anchors
        .into_iter()
        .filter_map(|a| a.member().map(|m| (a.device_id, m)))
        .collect()
}

#[derive(Default)]
struct State {
    me: Option<DeviceId>,
    members: HashMap<DeviceId, Member>,
    anchors: HashMap<DeviceId, Member>,
}

impl State {
    /// The roster has arrived here once it names this device; the anchor is then not needed.
    fn synced(&self) -> bool {
        self.me
            .as_ref()
            .is_some_and(|me| self.members.contains_key(me))
    }

    fn live(&self, id: &DeviceId) -> Option<&Member> {
        if let Some(m) = self.members.get(id) {
            return (!m.revoked).then_some(m);
        }
        if self.synced() {
            return None;
        }
        self.anchors.get(id)
    }
}

/// A cheap handle to the roster this node holds.
#[derive(Clone, Default)]
pub struct Roster {
    state: Arc<RwLock<State>>,
}

impl std::fmt::Debug for Roster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = self.read();
        f.debug_struct("Roster")
            .field("members", &s.members.len())
            .field("paired", &self.is_paired())
            .finish()
    }
}

impl Roster {
    /// The roster of device `me`, with the anchors it paired with (none: not paired that way).
    pub fn new(me: DeviceId, anchors: Vec<Anchor>) -> Roster {
        Roster {
            state: Arc::new(RwLock::new(State {
                me: Some(me),
                members: HashMap::new(),
                anchors: anchored(anchors),
            })),
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, State> {
        self.state.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Replaces the members with `rows` (the `device` entity); returns the devices that were
    /// live before and are not now (revoked or gone), whose connections must close. A row
    /// whose id is not its key's hash or whose role is unknown is left out.
    pub fn reload(&self, rows: &[Map<String, Value>]) -> Vec<DeviceId> {
        let mut members = HashMap::with_capacity(rows.len());
        for row in rows {
            let Ok(key) = roster::own_key(row) else {
                continue;
            };
            let Some(role) = row
                .get("role")
                .and_then(Value::as_str)
                .and_then(DeviceRole::parse)
            else {
                continue;
            };
            members.insert(
                DeviceId::of_public_key(&key),
                Member {
                    name: row
                        .get("name")
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_string(),
                    role,
                    public_key: key,
                    revoked: row.get("revoked_at").is_some_and(|v| !v.is_null()),
                },
            );
        }
        let mut s = self.state.write().unwrap_or_else(|p| p.into_inner());
        let before: Vec<DeviceId> = s
            .members
            .keys()
            .chain(s.anchors.keys())
            .filter(|id| s.live(id).is_some())
            .cloned()
            .collect();
        s.members = members;
        before
            .into_iter()
            .filter(|id| s.live(id).is_none())
            .collect()
    }

    /// The devices this one just paired with (the node is paired from now on).
    pub fn set_anchors(&self, anchors: Vec<Anchor>) {
        let mut s = self.state.write().unwrap_or_else(|p| p.into_inner());
        s.anchors = anchored(anchors);
    }

    /// The live member `id` (paired, not revoked), if it is one.
    pub fn live(&self, id: &DeviceId) -> Option<Member> {
        self.read().live(id).cloned()
    }

    /// The live member whose public key is `spki` (SubjectPublicKeyInfo, DER).
    pub fn live_key(&self, spki: &[u8]) -> Option<(DeviceId, Member)> {
        let id = DeviceId::of_public_key(spki);
        let m = self.live(&id)?;
        (m.public_key == spki).then_some((id, m))
    }

    /// Whether this node belongs to a roster: it then talks to members only, over TLS.
    pub fn is_paired(&self) -> bool {
        let s = self.read();
        match &s.me {
            Some(me) if s.members.contains_key(me) => s.live(me).is_some(),
            _ => !s.anchors.is_empty(),
        }
    }

    /// Whether this node answers only to the shop's devices: paired, or removed from the shop
    /// (a removed device must not fall back to serving anyone as an unpaired one does).
    pub fn is_closed(&self) -> bool {
        self.is_paired() || self.is_revoked()
    }

    /// Whether the roster names this device revoked (it then serves no one and follows no one).
    pub fn is_revoked(&self) -> bool {
        let s = self.read();
        s.me.as_ref()
            .and_then(|me| s.members.get(me))
            .is_some_and(|m| m.revoked)
    }

    /// Live members by id, for the dashboard and the election.
    pub fn live_members(&self) -> Vec<(DeviceId, Member)> {
        let s = self.read();
        let mut out: Vec<_> = s
            .members
            .iter()
            .filter(|(_, m)| !m.revoked)
            .map(|(id, m)| (id.clone(), m.clone()))
            .collect();
        if !s.synced() {
            out.extend(
                s.anchors
                    .iter()
                    .filter(|(id, _)| !s.members.contains_key(*id))
                    .map(|(id, m)| (id.clone(), m.clone())),
            );
        }
        out
    }
}
