//! Pairing over HTTP: a paired node shows a 6-digit code ("Add a device"), a new device runs the
//! exchange of `capsule_trust::pairing` against it (`tilld pair`), and the host writes both
//! devices into the shop's roster (the synced `device` entity) through its own write path.
//! The exchange itself is public (the route table's allowlist); offering a code is for the
//! manager's PC or this machine's own screens.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

use anyhow::Context;
use axum::extract::{ConnectInfo, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use capsule_protocol::{Action, Mutation, MutationBatch};
use capsule_server::{ApiError, MutationHandler};
use capsule_store::Store;
use capsule_trust::pairing::{
    CODE_VALID, Details, HostPending, HostReply, JoinFinish, JoinHello, Joiner, Offer, PairError,
};
use capsule_trust::{DeviceId, Identity, roster};
use serde_json::{Value, json};

/// This node's side of pairing: its identity (set at start) and the code it shows, if any.
#[derive(Default)]
pub struct Pairing {
    me: OnceLock<Me>,
    offer: Mutex<Option<Offer>>,
    /// Exchanges between their hello and their finish, by the joiner's device id.
    pending: Mutex<HashMap<DeviceId, HostPending>>,
}

struct Me {
    identity: Arc<Identity>,
    name: String,
    role: &'static str,
    data_dir: std::path::PathBuf,
    trust: crate::trust::DeviceTrust,
}

impl std::fmt::Debug for Pairing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pairing").finish_non_exhaustive()
    }
}

impl Pairing {
    /// Called once at start, with the identity the node loaded and the roster it holds.
    pub fn set_identity(
        &self,
        trust: &crate::trust::DeviceTrust,
        name: String,
        role: &'static str,
        data_dir: std::path::PathBuf,
    ) {
        let _ = self.me.set(Me {
            identity: trust.identity.clone(),
            name,
            role,
            data_dir,
            trust: trust.clone(),
        });
    }

    fn me(&self) -> Result<&Me, ApiError> {
        self.me.get().ok_or_else(|| {
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "this node is still starting",
            )
        })
    }

    /// What this node tells a joiner: itself, and the shop's other live devices.
    fn details(&self) -> Result<Details, ApiError> {
        let me = self.me()?;
        let mine = me.identity.device_id();
        let members = me
            .trust
            .roster
            .live_members()
            .into_iter()
            .filter(|(id, _)| id != mine)
            .map(|(id, m)| capsule_trust::Anchor {
                device_id: id,
                name: m.name,
                role: m.role,
                public_key: roster::encode(&m.public_key),
            })
            .collect();
        Ok(Details {
            device_id: mine.clone(),
            name: me.name.clone(),
            role: me.role.to_string(),
            cert: me.identity.cert_pem().as_bytes().to_vec(),
            public_key: me.identity.public_key_der(),
            members,
        })
    }
}

#[derive(Clone)]
struct PairState {
    pairing: Arc<Pairing>,
    store: Arc<Store>,
    mutations: MutationHandler,
}

pub fn router(pairing: Arc<Pairing>, store: Arc<Store>, mutations: MutationHandler) -> Router {
    Router::new()
        .route("/api/pair", get(open_code))
        .route("/api/pair/offer", post(offer))
        .route("/api/pair/hello", post(hello))
        .route("/api/pair/finish", post(finish))
        .route("/api/pair/join", post(join_here))
        .route("/api/devices", get(devices))
        .route("/api/devices/{id}/revoke", post(revoke))
        .with_state(PairState {
            pairing,
            store,
            mutations,
        })
}

fn refused(e: PairError) -> ApiError {
    let status = match e {
        PairError::Expired | PairError::Used | PairError::TooManyTries => StatusCode::GONE,
        PairError::WrongCode | PairError::Tampered => StatusCode::FORBIDDEN,
        PairError::WrongSession | PairError::Invalid(_) => StatusCode::BAD_REQUEST,
    };
    ApiError::new(status, e.to_string())
}

fn seconds_left(offer: &Offer, now: Instant) -> u64 {
    CODE_VALID
        .saturating_sub(now.duration_since(offer.shown_at()))
        .as_secs()
}

/// `POST /api/pair/offer` ("Add a device"): a new code, replacing any open one.
async fn offer(
    State(s): State<PairState>,
    stamp: capsule_server::staff::Stamp,
) -> Result<Json<Value>, ApiError> {
    stamp.require(&s.store, "settings.edit").await?;
    let me = s.pairing.me()?;
    let follows_another = s
        .store
        .followed_hub()?
        .0
        .is_some_and(|hub| hub != s.store.node_id());
    if !me.trust.roster.is_paired() && !s.store.is_authority() && follows_another {
        // The roster is founded where it is held first (see `check_roster_write`): the hub
        // would refuse a roster this node founded. A node still electing may found it (its
        // rows are applied when it claims).
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "this shop has no paired device yet: add its first device on the hub (the manager's PC)",
        ));
    }
    let now = Instant::now();
    let offer = Offer::new(me.identity.device_id().clone(), now);
    let answer = json!({
        "code": offer.code(),
        "session": offer.session(),
        "device_id": offer.host().to_string(),
        "expires_in_s": seconds_left(&offer, now),
        "tries_left": offer.tries_left(),
    });
    s.pairing
        .pending
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clear();
    *s.pairing.offer.lock().unwrap_or_else(|p| p.into_inner()) = Some(offer);
    Ok(Json(answer))
}

/// `GET /api/pair`: what a joining device needs before it starts (never the code).
async fn open_code(State(s): State<PairState>) -> Result<Json<Value>, ApiError> {
    let now = Instant::now();
    let guard = s.pairing.offer.lock().unwrap_or_else(|p| p.into_inner());
    match guard.as_ref() {
        Some(o) => match o.usable(now) {
            Ok(()) => Ok(Json(json!({
                "session": o.session(),
                "device_id": o.host().to_string(),
                "expires_in_s": seconds_left(o, now),
            }))),
            Err(why) => Err(refused(why)),
        },
        None => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "no pairing code is open here: choose \"Add a device\" on a paired device first",
        )),
    }
}

/// `POST /api/pair/hello`: step 2 of the exchange (uses one of the code's tries).
async fn hello(
    State(s): State<PairState>,
    Json(hello): Json<JoinHello>,
) -> Result<Json<HostReply>, ApiError> {
    let mut guard = s.pairing.offer.lock().unwrap_or_else(|p| p.into_inner());
    let offer = guard
        .as_mut()
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, "no pairing code is open here"))?;
    let (reply, pending) = offer.answer(&hello, Instant::now()).map_err(refused)?;
    s.pairing
        .pending
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(hello.joiner.clone(), pending);
    Ok(Json(reply))
}

#[derive(serde::Deserialize)]
struct FinishBody {
    joiner: DeviceId,
    finish: JoinFinish,
}

/// `POST /api/pair/finish`: step 4. On success both devices are written into the roster
/// (this one too, the first time: the shop's first node starts the roster).
async fn finish(
    State(s): State<PairState>,
    ConnectInfo(peer): ConnectInfo<std::net::SocketAddr>,
    Json(body): Json<FinishBody>,
) -> Result<Json<Value>, ApiError> {
    let pending = s
        .pairing
        .pending
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .remove(&body.joiner)
        .ok_or_else(|| ApiError::bad_request("no pairing under way for this device"))?;
    let host = s.pairing.details()?;
    let (joiner, sealed) = {
        let mut guard = s.pairing.offer.lock().unwrap_or_else(|p| p.into_inner());
        let offer = guard
            .as_mut()
            .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, "no pairing code is open here"))?;
        offer
            .finish(pending, &body.finish, &host, Instant::now())
            .map_err(refused)?
    };
    let joiner_role = match joiner.role.as_str() {
        r @ ("hub-eligible" | "till" | "screen") => r.to_string(),
        other => {
            return Err(ApiError::bad_request(format!(
                "a device's role is hub-eligible, till or screen, not '{other}'"
            )));
        }
    };
    let store = s.store.clone();
    let host_id = host.device_id.to_string();
    let known = tokio::task::spawn_blocking(move || store.pull("device", &host_id, None).is_ok())
        .await
        .unwrap_or(false);
    let now = capsule_protocol::now_rfc3339();
    let identity = &s.pairing.me()?.identity;
    // The host's own row first, in its own request: the joiner's row is signed by it, and is
    // checked against the roster as it stands.
    if !known {
        let own = roster_row(identity, &host, &host.role, &now, None);
        submit(&s, own, peer).await?;
    }
    let row = roster_row(
        identity,
        &joiner,
        &joiner_role,
        &now,
        Some(host.device_id.to_string()),
    );
    submit(&s, row, peer).await?;
    tracing::info!(device = %joiner.device_id, name = %joiner.name, "paired a device");
    Ok(Json(json!({ "sealed": sealed })))
}

async fn submit(s: &PairState, m: Mutation, peer: std::net::SocketAddr) -> Result<(), ApiError> {
    (s.mutations)(
        MutationBatch {
            mutations: vec![m],
            source: None,
        },
        peer.ip().to_string(),
    )
    .await?;
    Ok(())
}

/// `GET /api/devices`: the shop's roster (no keys or certificates: ids, names, roles, dates).
async fn devices(State(s): State<PairState>) -> Result<Json<Value>, ApiError> {
    let store = s.store.clone();
    let rows = tokio::task::spawn_blocking(move || store.table_rows("device")).await??;
    let list: Vec<Value> = rows
        .iter()
        .map(|r| {
            json!({
                "id": r.get("id"),
                "name": r.get("name"),
                "role": r.get("role"),
                "paired_at": r.get("paired_at"),
                "paired_by": r.get("paired_by"),
                "revoked_at": r.get("revoked_at"),
            })
        })
        .collect();
    Ok(Json(json!({ "devices": list })))
}

/// `POST /api/devices/{id}/revoke`: removes a device from the shop. The roster row is signed
/// again by this device with `revoked_at` set; every node that takes it closes the device's
/// connections and refuses it from then on.
async fn revoke(
    State(s): State<PairState>,
    ConnectInfo(peer): ConnectInfo<std::net::SocketAddr>,
    stamp: capsule_server::staff::Stamp,
    axum::extract::Path(id): axum::extract::Path<String>,
) -> Result<Json<Value>, ApiError> {
    stamp.require(&s.store, "settings.edit").await?;
    let identity = s.pairing.me()?.identity.clone();
    if id == identity.device_id().as_str() {
        return Err(ApiError::bad_request(
            "a device cannot remove itself: remove it from another hub-eligible device",
        ));
    }
    let store = s.store.clone();
    let key = id.clone();
    let mut row = tokio::task::spawn_blocking(move || store.pull("device", &key, None))
        .await??
        .payload;
    row.insert("id".into(), json!(id));
    if row.get("revoked_at").is_some_and(|v| !v.is_null()) {
        return Ok(Json(
            json!({ "id": id, "revoked_at": row.get("revoked_at") }),
        ));
    }
    let now = capsule_protocol::now_rfc3339();
    row.retain(|k, _| roster::SIGNED_FIELDS.contains(&k.as_str()));
    row.insert("revoked_at".into(), json!(now));
    roster::sign_row(&identity, &mut row);
    let m = Mutation {
        mid: uuid::Uuid::now_v7().to_string(),
        table: "device".into(),
        action: Action::Save,
        row,
        base: None,
        by: None,
    };
    submit(&s, m, peer).await?;
    tracing::info!(device = %id, "removed a device from the shop");
    Ok(Json(json!({ "id": id, "revoked_at": now })))
}

/// A roster row for `d`, signed by this node.
fn roster_row(
    identity: &Identity,
    d: &Details,
    role: &str,
    at: &str,
    by: Option<String>,
) -> Mutation {
    let mut row = serde_json::Map::new();
    row.insert("id".into(), json!(d.device_id.to_string()));
    row.insert("name".into(), json!(d.name));
    row.insert("role".into(), json!(role));
    row.insert("cert".into(), json!(String::from_utf8_lossy(&d.cert)));
    row.insert("public_key".into(), json!(roster::encode(&d.public_key)));
    row.insert("paired_at".into(), json!(at));
    row.insert("paired_by".into(), json!(by));
    roster::sign_row(identity, &mut row);
    Mutation {
        mid: uuid::Uuid::now_v7().to_string(),
        table: "device".into(),
        action: Action::Save,
        row,
        base: None,
        by: None,
    }
}

/// The node's check of a write to the roster, on every path that takes one: a save of the
/// whole row, its id the hash of its key, signed by a live hub-eligible member (or by itself
/// while every other row of the roster is its own signature: the shop's first). A roster is
/// founded only by the node that holds it (`this_device`): in a shop not paired
/// yet nothing tells the manager's PC from a guest's laptop, so a first row signed by another
/// machine would hand the shop to whoever sent it first.
pub fn check_roster_write(store: &Store, this_device: &str, m: &Mutation) -> Result<(), String> {
    if m.table != "device" {
        return Ok(());
    }
    if !matches!(m.action, Action::Save | Action::Insert) {
        return Err("the roster changes only by a signed save of a whole row".into());
    }
    let row = &m.row;
    let own = roster::own_key(row)?;
    let id = row.get("id").and_then(Value::as_str).unwrap_or_default();
    let signer = row
        .get("signed_by")
        .and_then(Value::as_str)
        .ok_or("a roster row names its signer")?;
    let members = store.table_rows("device").map_err(|e| e.to_string())?;
    if members.is_empty() && id != this_device {
        return Err(
            "a shop's first device is paired on its hub (\"Add a device\" on the hub's dashboard), not from another machine"
                .into(),
        );
    }
    let key = if signer == id {
        // The shop's first device: every other row of the roster descends from it (it signed
        // them), so this row may arrive after them (its till-side commit drained to the hub
        // after the rows it signed, or replayed in a claim's adoption).
        let founded_by_it = members.iter().all(|r| {
            r.get("id").and_then(Value::as_str) == Some(id)
                || r.get("signed_by").and_then(Value::as_str) == Some(id)
        });
        if !founded_by_it {
            return Err("only the shop's first device signs its own roster row".into());
        }
        own
    } else {
        let member = members
            .iter()
            .find(|r| r.get("id").and_then(Value::as_str) == Some(signer))
            .ok_or("a roster row signed by a device the roster does not hold")?;
        if member.get("revoked_at").is_some_and(|v| !v.is_null()) {
            return Err("a roster row signed by a revoked device".into());
        }
        if member.get("role").and_then(Value::as_str) != Some("hub-eligible") {
            return Err("a roster row signed by a device that may not change the roster".into());
        }
        roster::own_key(member)?
    };
    roster::verify_row(row, &key)
}

/// Why `tilld pair` did not pair.
#[derive(Debug)]
pub enum JoinError {
    /// The code or the other device said no (wrong code, expired, used, too many tries).
    Refused(String),
    Failed(anyhow::Error),
}

impl From<anyhow::Error> for JoinError {
    fn from(e: anyhow::Error) -> JoinError {
        JoinError::Failed(e)
    }
}

/// `tilld pair`: the joining side of the exchange against the device at `args.peer`; returns
/// that device's details once both sides confirmed the code.
pub async fn join(args: crate::cli::PairArgs) -> Result<Details, JoinError> {
    std::fs::create_dir_all(&args.data)
        .with_context(|| format!("cannot create {}", args.data.display()))?;
    let identity = Identity::load_or_create(&args.data).context("this device's identity")?;
    let (host, _) = join_as(&identity, &args).await?;
    Ok(host)
}

#[derive(serde::Deserialize)]
struct JoinBody {
    code: String,
    peer: String,
}

/// `POST /api/pair/join` (this machine's own screens only): pairs this running node with the
/// code another device shows, as `tilld pair` does; from the next connection on it speaks TLS
/// to the shop's devices (a till paired while the shop sells drains what it queued meanwhile).
async fn join_here(
    State(s): State<PairState>,
    Json(body): Json<JoinBody>,
) -> Result<Json<Value>, ApiError> {
    let me = s.pairing.me()?;
    let args = crate::cli::PairArgs {
        code: body.code,
        peer: body.peer,
        data: me.data_dir.clone(),
        name: me.name.clone(),
        role: me.role.to_string(),
    };
    match join_as(&me.identity, &args).await {
        Ok((host, anchors)) => {
            let was_paired = me.trust.roster.is_paired();
            me.trust.roster.set_anchors(anchors);
            if !was_paired {
                // What was open to anyone before must now show who it is.
                me.trust.connections.close_anonymous();
            }
            Ok(Json(json!({
                "paired_with": host.name,
                "device_id": host.device_id.to_string(),
            })))
        }
        Err(JoinError::Refused(why)) => Err(ApiError::new(StatusCode::FORBIDDEN, why)),
        Err(JoinError::Failed(e)) => Err(ApiError::new(StatusCode::BAD_GATEWAY, format!("{e:#}"))),
    }
}

/// The exchange as `identity` against `args.peer`; keeps the host as this device's anchor in
/// `args.data`.
async fn join_as(
    identity: &Identity,
    args: &crate::cli::PairArgs,
) -> Result<(Details, Vec<capsule_trust::Anchor>), JoinError> {
    let code = args.code.trim().to_string();
    if code.len() != capsule_trust::pairing::CODE_DIGITS
        || !code.bytes().all(|b| b.is_ascii_digit())
    {
        return Err(JoinError::Refused("the code is 6 digits".into()));
    }
    let peer = args.peer.trim_end_matches('/').to_string();
    let http = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(10))
        .build()
        .context("an HTTP client")?;
    let open: Value = answer(http.get(format!("{peer}/api/pair")).send().await).await?;
    let session = open["session"].as_str().unwrap_or_default().to_string();
    let host = DeviceId::try_from(open["device_id"].as_str().unwrap_or_default().to_string())
        .map_err(|e| JoinError::Failed(anyhow::anyhow!("{peer} named no device: {e}")))?;
    let me = identity.device_id().clone();
    let (joiner, hello) = Joiner::start(&code, &session, &host, &me);
    let reply: HostReply = answer(
        http.post(format!("{peer}/api/pair/hello"))
            .json(&hello)
            .send()
            .await,
    )
    .await?;
    let mine = Details {
        device_id: me.clone(),
        name: args.name.clone(),
        role: args.role.clone(),
        cert: identity.cert_pem().as_bytes().to_vec(),
        public_key: identity.public_key_der(),
        members: Vec::new(),
    };
    let (waiting, finish) = joiner
        .on_reply(&reply, &mine)
        .map_err(|e| JoinError::Refused(e.to_string()))?;
    let sealed: Value = answer(
        http.post(format!("{peer}/api/pair/finish"))
            .json(&json!({ "joiner": me, "finish": finish }))
            .send()
            .await,
    )
    .await?;
    let sealed: Vec<u8> = serde_json::from_value(sealed["sealed"].clone())
        .map_err(|e| JoinError::Failed(anyhow::anyhow!("an answer without its details: {e}")))?;
    let host = waiting
        .open(&sealed)
        .map_err(|e| JoinError::Refused(e.to_string()))?;
    // Kept so this device trusts the host (and speaks TLS to it) until the roster arrives.
    let role = capsule_trust::DeviceRole::parse(&host.role).ok_or_else(|| {
        JoinError::Failed(anyhow::anyhow!(
            "the host named an unknown role '{}'",
            host.role
        ))
    })?;
    let mut anchors = vec![capsule_trust::Anchor {
        device_id: host.device_id.clone(),
        name: host.name.clone(),
        role,
        public_key: roster::encode(&host.public_key),
    }];
    // The others the host named; never this device itself.
    anchors.extend(
        host.members
            .iter()
            .filter(|a| &a.device_id != identity.device_id())
            .cloned(),
    );
    capsule_trust::Anchor::save(&anchors, &args.data)
        .with_context(|| format!("cannot keep the pairing in {}", args.data.display()))?;
    Ok((host, anchors))
}

/// A JSON answer, or why not: a 4xx is the other device refusing (its `error` said).
async fn answer<T: serde::de::DeserializeOwned>(
    sent: reqwest::Result<reqwest::Response>,
) -> Result<T, JoinError> {
    let resp = sent.map_err(|e| JoinError::Failed(anyhow::anyhow!("cannot reach it: {e}")))?;
    let status = resp.status();
    if status.is_client_error() {
        let body: Value = resp.json().await.unwrap_or_default();
        return Err(JoinError::Refused(
            body["error"].as_str().unwrap_or("refused").to_string(),
        ));
    }
    if !status.is_success() {
        return Err(JoinError::Failed(anyhow::anyhow!("it answered {status}")));
    }
    resp.json()
        .await
        .map_err(|e| JoinError::Failed(anyhow::anyhow!("an answer that cannot be read: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(of: &Identity, by: &Identity) -> Mutation {
        let d = Details {
            device_id: of.device_id().clone(),
            name: "x".into(),
            role: "hub-eligible".into(),
            cert: of.cert_pem().as_bytes().to_vec(),
            public_key: of.public_key_der(),
            members: Vec::new(),
        };
        let paired_by = (of.device_id() != by.device_id()).then(|| by.device_id().to_string());
        roster_row(by, &d, "hub-eligible", "2026-12-07T12:00:00Z", paired_by)
    }

    /// Found with the failover tests run on paired shops: the shop's first device, not yet hub
    /// when it paired a till, commits both rows locally; its own row then reaches the hub after
    /// the till's and was refused, leaving the founder unpaired.
    #[test]
    fn the_founders_own_row_may_come_after_the_rows_it_signed_and_a_strangers_may_not() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(
            dir.path().join("s.db"),
            Arc::new(capsule_protocol::Schema::builtin()),
        )
        .unwrap();
        let id = |n: &str| Identity::load_or_create(&dir.path().join(n)).unwrap();
        let (founder, till, stranger) = (id("founder"), id("till"), id("stranger"));
        let own = founder.device_id().to_string();
        let apply = |m: Mutation| {
            check_roster_write(&store, &own, &m)?;
            store
                .apply(
                    &MutationBatch {
                        mutations: vec![m],
                        source: None,
                    },
                    &capsule_store::ApplyMode::Authoritative {
                        source: "test".into(),
                    },
                )
                .map(|_| ())
                .map_err(|e| e.to_string())
        };
        // A guest founding this node's roster from its own machine: refused, nothing written.
        assert!(
            apply(row(&stranger, &stranger))
                .unwrap_err()
                .contains("paired on its hub")
        );
        assert!(store.table_rows("device").unwrap().is_empty());
        // The till's row first (the founder's own row is still in its queue)...
        store
            .apply(
                &MutationBatch {
                    mutations: vec![row(&founder, &founder)],
                    source: None,
                },
                &capsule_store::ApplyMode::Authoritative {
                    source: "test".into(),
                },
            )
            .unwrap();
        apply(row(&till, &founder)).unwrap();
        // ...then the founder's own row arriving again: taken.
        apply(row(&founder, &founder)).unwrap();
        // A stranger signing its own row into this roster: refused.
        assert!(
            apply(row(&stranger, &stranger))
                .unwrap_err()
                .contains("first device")
        );
    }
}
