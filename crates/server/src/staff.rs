//! Staff at the screens: PIN logins checked on this node against the synced argon2id hashes
//! (so a till logs staff in offline too), growing lockouts per screen address and per member of
//! staff, a manager's approval on the spot, and the stamp every write from a screen carries
//! (who made it, who approved it). What each role may do is checked in the core
//! (`capsule_store::permits`), on every node that applies the write.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use axum::extract::{ConnectInfo, FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use capsule_protocol::{Action, Actor, Mutation, MutationBatch, Row};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::access::Caller;
use crate::api::ApiState;
use crate::error::ApiError;

/// The header a screen sends its staff session in.
pub const STAFF_HEADER: &str = "x-capsule-staff";
/// The header carrying a manager's approval for the write it comes with (used once).
pub const APPROVAL_HEADER: &str = "x-capsule-approval";

/// Wrong PINs in a row before a lockout (per member of staff, and per screen address).
pub const TRIES_PER_LOCKOUT: u32 = 5;
/// The first lockout; each next one in a row doubles, up to [`LONGEST_LOCKOUT`].
pub const FIRST_LOCKOUT: Duration = Duration::from_secs(30);
const LONGEST_LOCKOUT: Duration = Duration::from_secs(3600);
/// A session unused this long ends (the screens lock themselves much sooner: a shop setting).
const SESSION_IDLE: Duration = Duration::from_secs(12 * 3600);
/// An approval is for the write the cashier is making now.
const APPROVAL_LIFE: Duration = Duration::from_secs(120);
/// Bounds on what a screen can make this node remember.
const MAX_SESSIONS: usize = 512;
const MAX_APPROVALS: usize = 256;
const MAX_ADDRESSES: usize = 4096;

/// argon2id at OWASP's second recommended setting (19 MiB, 2 passes, 1 lane): ~50-100 ms on
/// a till's CPU. Every hash carries its parameters, so a later change still verifies old ones.
fn hasher() -> Argon2<'static> {
    Argon2::new(
        Algorithm::Argon2id,
        Version::V0x13,
        Params::new(19 * 1024, 2, 1, None).expect("valid argon2 parameters"),
    )
}

/// A PIN is 4 to 8 digits.
pub fn check_pin(pin: &str) -> Result<(), String> {
    if (4..=8).contains(&pin.len()) && pin.bytes().all(|b| b.is_ascii_digit()) {
        Ok(())
    } else {
        Err("a PIN is 4 to 8 digits".into())
    }
}

/// The PHC string stored for `pin` (argon2id, a fresh 16-byte salt).
pub fn hash_pin(pin: &str) -> Result<String, String> {
    check_pin(pin)?;
    let salt: [u8; 16] = rand::random();
    let salt = SaltString::encode_b64(&salt).map_err(|e| e.to_string())?;
    hasher()
        .hash_password(pin.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| e.to_string())
}

/// Whether `pin` is the one `hash` was made from.
pub fn verify_pin(hash: &str, pin: &str) -> bool {
    PasswordHash::new(hash).is_ok_and(|h| hasher().verify_password(pin.as_bytes(), &h).is_ok())
}

/// Runs argon2 work (19 MiB and ~50-100 ms each) two at a time at most: a burst of logins
/// queues instead of taking a till's memory and every blocking thread.
async fn argon<T: Send + 'static>(
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, ApiError> {
    static SLOTS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(2);
    let _slot = SLOTS
        .acquire()
        .await
        .map_err(|_| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "the node is stopping"))?;
    Ok(tokio::task::spawn_blocking(work).await?)
}

/// A hash no PIN matches, verified for an unknown member of staff so that a wrong id costs
/// what a wrong PIN does.
fn decoy_hash() -> &'static str {
    static DECOY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DECOY.get_or_init(|| hash_pin("00000000").expect("a valid PIN"))
}

#[derive(Debug, Default, Clone)]
struct Strikes {
    wrong: u32,
    lockouts: u32,
    until: Option<Instant>,
}

impl Strikes {
    fn locked(&self, now: Instant) -> Option<Duration> {
        self.until.and_then(|u| u.checked_duration_since(now))
    }

    /// A wrong PIN: the fifth in a row locks for twice the previous lockout. Returns the
    /// lockout it started, if any.
    fn wrong(&mut self, now: Instant, first: Duration) -> Option<Started> {
        self.wrong += 1;
        if self.wrong < TRIES_PER_LOCKOUT {
            return None;
        }
        let lock = first
            .saturating_mul(1 << self.lockouts.min(16))
            .min(LONGEST_LOCKOUT.max(first));
        self.until = Some(now + lock);
        self.lockouts += 1;
        self.wrong = 0;
        Some(Started {
            lockouts: self.lockouts,
            lock,
        })
    }
}

/// A lockout that has just begun: the how-manieth in a row, and for how long.
#[derive(Debug, Clone, Copy)]
struct Started {
    lockouts: u32,
    lock: Duration,
}

struct Session {
    staff: String,
    last_used: Instant,
}

struct Approval {
    approver: String,
    /// The one permission approved.
    permission: String,
    until: Instant,
}

#[derive(Default)]
struct Desk {
    sessions: HashMap<String, Session>,
    approvals: HashMap<String, Approval>,
    by_staff: HashMap<String, Strikes>,
    by_address: HashMap<IpAddr, Strikes>,
}

/// This node's staff logins: sessions, approvals and lockouts (in memory: a restart logs
/// everyone out, which the screens answer with their PIN pad).
pub struct StaffDesk {
    desk: Mutex<Desk>,
    first_lockout: Duration,
    /// This node's id: the device a write from its screens names.
    node_id: String,
    /// The name staff know this node by, for the lockouts it reports.
    node_name: std::sync::OnceLock<String>,
    /// Logins and lockouts, for the metrics and the tests.
    pub wrong_pins: std::sync::atomic::AtomicU64,
    pub refused_locked: std::sync::atomic::AtomicU64,
}

impl std::fmt::Debug for StaffDesk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StaffDesk(..)")
    }
}

impl StaffDesk {
    pub fn new(node_id: &str, first_lockout: Duration) -> StaffDesk {
        StaffDesk {
            desk: Mutex::new(Desk::default()),
            first_lockout,
            node_id: node_id.to_string(),
            node_name: std::sync::OnceLock::new(),
            wrong_pins: Default::default(),
            refused_locked: Default::default(),
        }
    }

    /// The desk a node runs with: the first lockout from `CAPSULE_PIN_LOCKOUT_MS` (the tests
    /// shorten it), else [`FIRST_LOCKOUT`].
    pub fn from_env(node_id: &str) -> StaffDesk {
        let first = std::env::var("CAPSULE_PIN_LOCKOUT_MS")
            .ok()
            .and_then(|v| v.parse().ok())
            .map_or(FIRST_LOCKOUT, Duration::from_millis);
        StaffDesk::new(node_id, first)
    }

    /// Names this node (once) in the lockouts it reports.
    pub fn set_node_name(&self, name: &str) {
        let _ = self.node_name.set(name.to_string());
    }

    fn desk(&self) -> std::sync::MutexGuard<'_, Desk> {
        self.desk.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// How long logins as `staff` from `address` are still locked out.
    fn locked(&self, staff: &str, address: IpAddr) -> Option<Duration> {
        let now = Instant::now();
        let d = self.desk();
        let a = d.by_address.get(&address).and_then(|s| s.locked(now));
        let s = d.by_staff.get(staff).and_then(|s| s.locked(now));
        a.max(s)
    }

    fn record_right(&self, staff: &str, address: IpAddr) {
        let mut d = self.desk();
        d.by_staff.remove(staff);
        d.by_address.remove(&address);
    }

    /// Counts a wrong PIN; the lockout it started (of the member of staff, else of the
    /// address), if any.
    fn record_wrong(&self, staff: &str, address: IpAddr) -> Option<Started> {
        let now = Instant::now();
        let mut d = self.desk();
        self.wrong_pins
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if d.by_address.len() >= MAX_ADDRESSES && !d.by_address.contains_key(&address) {
            // Forget addresses that are not locked out; a flood of addresses cannot grow this.
            d.by_address.retain(|_, s| s.locked(now).is_some());
        }
        let mut started = None;
        if d.by_address.len() < MAX_ADDRESSES || d.by_address.contains_key(&address) {
            started = d
                .by_address
                .entry(address)
                .or_default()
                .wrong(now, self.first_lockout);
        }
        // Staff ids are few (the shop's): only the ones that exist are counted.
        if let Some(s) = d.by_staff.get_mut(staff) {
            started = s.wrong(now, self.first_lockout).or(started);
        }
        started
    }

    fn count_staff(&self, staff: &str) {
        self.desk().by_staff.entry(staff.to_string()).or_default();
    }

    /// One login attempt, counted as wrong before its PIN is checked (a right one is cleared
    /// after): many attempts sent at once cannot all slip past a lockout that the first few
    /// would have started. `Err`: locked out for that long (nothing counted).
    /// `Ok(Some(_))`: this attempt started a lockout (the node reports it to the shop).
    fn begin_attempt(
        &self,
        staff: &str,
        address: IpAddr,
        known: bool,
    ) -> Result<Option<Started>, Duration> {
        if known {
            self.count_staff(staff);
        }
        if let Some(wait) = self.locked(staff, address) {
            return Err(wait);
        }
        Ok(self.record_wrong(staff, address))
    }

    fn open_session(&self, staff: &str) -> String {
        let token = crate::sessions::random_hex(32);
        let now = Instant::now();
        let mut d = self.desk();
        d.sessions
            .retain(|_, s| now.duration_since(s.last_used) < SESSION_IDLE);
        if d.sessions.len() >= MAX_SESSIONS
            && let Some(oldest) = d
                .sessions
                .iter()
                .min_by_key(|(_, s)| s.last_used)
                .map(|(k, _)| k.clone())
        {
            d.sessions.remove(&oldest);
        }
        d.sessions.insert(
            token.clone(),
            Session {
                staff: staff.to_string(),
                last_used: now,
            },
        );
        token
    }

    /// The member of staff a session token names (and the session is used now).
    pub fn session(&self, token: &str) -> Option<String> {
        let now = Instant::now();
        let mut d = self.desk();
        let s = d.sessions.get_mut(token)?;
        if now.duration_since(s.last_used) >= SESSION_IDLE {
            d.sessions.remove(token);
            return None;
        }
        s.last_used = now;
        Some(s.staff.clone())
    }

    fn close_session(&self, token: &str) {
        self.desk().sessions.remove(token);
    }

    fn grant_approval(&self, approver: &str, permission: &str) -> String {
        let token = crate::sessions::random_hex(32);
        let now = Instant::now();
        let mut d = self.desk();
        d.approvals.retain(|_, a| a.until > now);
        if d.approvals.len() >= MAX_APPROVALS {
            return token; // never stored: it approves nothing
        }
        d.approvals.insert(
            token.clone(),
            Approval {
                approver: approver.to_string(),
                permission: permission.to_string(),
                until: now + APPROVAL_LIFE,
            },
        );
        token
    }

    /// The approver an approval token names and the permission approved; the token is used up.
    pub fn take_approval(&self, token: &str) -> Option<(String, String)> {
        let a = self.desk().approvals.remove(token)?;
        (a.until > Instant::now()).then_some((a.approver, a.permission))
    }
}

/// Who a write from this request is by, as the node stamps it: the screen's staff session and
/// the approval it came with. A paired device forwarding its own writes keeps theirs (it
/// vouches for its staff); whatever a screen sent is replaced.
#[derive(Debug, Clone)]
pub struct Stamp {
    actor: Option<Actor>,
    /// The caller is another node forwarding writes it already stamped.
    relayed_by_device: bool,
    /// The caller is a paired device (a kitchen screen too), not a screen.
    from_device: bool,
    anonymous: bool,
}

impl Stamp {
    /// Puts the stamp on every write of `batch`.
    pub fn apply(&self, batch: &mut MutationBatch) {
        // Another paired device's writes carry their own actor; so do a forwarded batch's in a
        // shop not paired yet (which serves its trusted LAN as before pairing).
        if self.relayed_by_device || (self.anonymous && batch.source.is_some()) {
            return;
        }
        for m in &mut batch.mutations {
            m.by = self.actor.clone();
        }
    }

    /// Refuses a screen's write to a table only the nodes write (the lockouts and printer
    /// states they report):
    /// a screen could otherwise raise false alarms, or hide a guesser's.
    pub fn refuse_node_tables(&self, batch: &MutationBatch) -> Result<(), ApiError> {
        // Any paired device forwarding its own node's reports (a kitchen screen's lockouts too).
        let ours = !(self.from_device || (self.anonymous && batch.source.is_some()));
        match batch
            .mutations
            .iter()
            .find(|m| matches!(m.table.as_str(), "staff_lockout" | "printer_status"))
        {
            Some(m) if ours => Err(ApiError::new(
                StatusCode::FORBIDDEN,
                format!("'{}' is written by the shop's nodes only", m.table),
            )),
            _ => Ok(()),
        }
    }

    /// Stamps, beside the staff, the menu's prices of each line `batch` rings up or reprices
    /// as this node holds the menu (what the screen showed), so the core can tell a price
    /// override on every node the write reaches. Forwarded writes keep their own node's.
    pub async fn price_lines(
        &self,
        store: &Arc<capsule_store::Store>,
        batch: &mut MutationBatch,
    ) -> Result<(), ApiError> {
        let ours = !(self.relayed_by_device || (self.anonymous && batch.source.is_some()));
        let lines: Vec<(usize, Row)> = batch
            .mutations
            .iter()
            .enumerate()
            .filter(|(_, m)| ours && m.by.is_some() && m.table == "order_line")
            .map(|(i, m)| (i, m.row.clone()))
            .collect();
        if lines.is_empty() {
            return Ok(());
        }
        let store = store.clone();
        let priced = tokio::task::spawn_blocking(move || {
            lines
                .into_iter()
                .map(|(i, row)| Ok((i, store.menu_prices(&row)?)))
                .collect::<Result<Vec<_>, capsule_store::StoreError>>()
        })
        .await??;
        for (i, menu) in priced {
            if let Some(by) = batch.mutations[i].by.as_mut() {
                by.menu_price = menu.unit;
                by.menu_modifier_price = Some(menu.modifiers);
                by.menu_modifiers = Some(menu.modifier_names);
            }
        }
        Ok(())
    }

    /// The logged-in member of staff, if any.
    pub fn staff(&self) -> Option<&str> {
        self.actor.as_ref().and_then(|a| a.staff.as_deref())
    }

    /// Refuses (403 naming the permission) unless the logged-in member of staff, or the
    /// approver, may do `permission` (anyone may in a shop without staff).
    pub async fn require(
        &self,
        store: &Arc<capsule_store::Store>,
        permission: &'static str,
    ) -> Result<(), ApiError> {
        let store = store.clone();
        let actor = self.actor.clone().unwrap_or_default();
        let ok = tokio::task::spawn_blocking(move || {
            Ok::<_, capsule_store::StoreError>(
                store.may(actor.staff.as_deref(), permission)?
                    || (actor.approved.as_deref() == Some(permission)
                        && actor
                            .approver
                            .as_deref()
                            .is_some_and(|a| store.may(Some(a), permission).unwrap_or(false))),
            )
        })
        .await??;
        if ok {
            Ok(())
        } else {
            Err(ApiError::new(
                StatusCode::FORBIDDEN,
                format!("permission '{permission}' needed: ask a manager to approve"),
            ))
        }
    }
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
}

impl<S: Send + Sync> FromRequestParts<S> for Stamp {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Stamp, Self::Rejection> {
        let caller = parts.extensions.get::<Caller>().cloned();
        let desk = parts.extensions.get::<Arc<StaffDesk>>().cloned();
        let staff = desk
            .as_ref()
            .zip(header(&parts.headers, STAFF_HEADER))
            .and_then(|(d, t)| d.session(t));
        let (approver, approved) = desk
            .as_ref()
            .zip(header(&parts.headers, APPROVAL_HEADER))
            .and_then(|(d, t)| d.take_approval(t))
            .unzip();
        let device = desk.as_ref().map(|d| d.node_id.clone());
        let actor = (staff.is_some() || approver.is_some()).then(|| Actor {
            staff,
            approver,
            approved,
            device,
            at: Some(capsule_protocol::now_rfc3339()),
            ..Default::default()
        });
        Ok(Stamp {
            actor,
            // A till or the manager's PC forwards its staff's writes; a kitchen screen device
            // has no staff to vouch for.
            relayed_by_device: matches!(
                caller,
                Some(Caller::Device(r)) if r != capsule_trust::DeviceRole::Screen
            ),
            from_device: matches!(caller, Some(Caller::Device(_))),
            anonymous: matches!(caller, None | Some(Caller::Anonymous)),
        })
    }
}

/// The staff routes every node serves.
pub fn router() -> Router<ApiState> {
    Router::new()
        .route("/api/staff/login", post(login))
        .route("/api/staff/logout", post(logout))
        .route("/api/staff/me", get(me))
        .route("/api/staff/approve", post(approve))
        .route("/api/staff/pin", post(set_pin))
        .route("/api/staff", post(add_staff))
        .route("/api/staff/roles", get(roles))
}

/// `GET /api/staff/roles`: every permission with what it allows, and every role with its
/// permissions (what the dashboard's role editor shows).
async fn roles(State(s): State<ApiState>) -> Result<Json<Value>, ApiError> {
    let store = s.store.clone();
    let roles = tokio::task::spawn_blocking(move || store.staff_roles()).await??;
    let permissions: Vec<Value> = capsule_store::permits::PERMISSIONS
        .iter()
        .map(|(name, doc)| json!({"name": name, "doc": doc}))
        .collect();
    Ok(Json(json!({"permissions": permissions, "roles": roles})))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PinLogin {
    staff: String,
    pin: String,
}

fn desk_of(desk: Option<Extension<Arc<StaffDesk>>>) -> Result<Arc<StaffDesk>, ApiError> {
    desk.map(|Extension(d)| d).ok_or_else(|| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "this node does not log staff in",
        )
    })
}

fn parse<T: serde::de::DeserializeOwned>(
    body: Result<Json<T>, axum::extract::rejection::JsonRejection>,
    what: &str,
) -> Result<T, ApiError> {
    body.map(|Json(b)| b)
        .map_err(|e| ApiError::bad_request(format!("{what}: {}", e.body_text())))
}

/// Checks a PIN under the lockouts; the member of staff when it is theirs.
async fn check_login(
    s: &ApiState,
    desk: &Arc<StaffDesk>,
    address: IpAddr,
    login: PinLogin,
) -> Result<capsule_store::permits::StaffLogin, Response> {
    let address = canonical(address);
    if login.staff.len() > 128 || login.pin.len() > 64 {
        return Err(ApiError::bad_request("staff id or PIN too long").into_response());
    }
    let store = s.store.clone();
    let staff = login.staff.clone();
    let found = tokio::task::spawn_blocking(move || store.staff_login(&staff))
        .await
        .map_err(|e| ApiError::from(e).into_response())?
        .map_err(|e| ApiError::from(e).into_response())?;
    let started = match desk.begin_attempt(&login.staff, address, found.is_some()) {
        Ok(started) => started,
        Err(wait) => {
            desk.refused_locked
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            return Err(locked_out(wait));
        }
    };
    let hash = found
        .as_ref()
        .and_then(|f| f.pin_hash.clone())
        .unwrap_or_else(|| decoy_hash().to_string());
    let pin = login.pin.clone();
    let right = argon(move || verify_pin(&hash, &pin))
        .await
        .map_err(|e| e.into_response())?;
    let right = right && found.as_ref().is_some_and(|f| f.pin_hash.is_some());
    if right {
        desk.record_right(&login.staff, address);
    } else if let Some(started) = started {
        let known = found.is_some().then(|| login.staff.clone());
        report_lockout(s, desk, known, address, started);
    }
    match found {
        Some(f) if right => Ok(f),
        _ => {
            // Never the PIN in a log: who and from where.
            tracing::warn!(staff = %login.staff, %address, "wrong PIN");
            Err(ApiError::new(StatusCode::UNAUTHORIZED, "wrong PIN").into_response())
        }
    }
}

/// Tells the shop a login was locked out: a `staff_lockout` row (one per node and member of
/// staff; ids that are nobody's share one) written through the node's own write path, so the
/// hub's dashboard shows a guesser at any till. In the background: the refused login answers
/// at once, and a till out of reach of the hub queues the row like any write.
fn report_lockout(
    s: &ApiState,
    desk: &StaffDesk,
    staff: Option<String>,
    address: IpAddr,
    started: Started,
) {
    let id = format!("{}:{}", desk.node_id, staff.as_deref().unwrap_or("unknown"));
    tracing::warn!(staff = staff.as_deref().unwrap_or("unknown"), %address, lockouts = started.lockouts, seconds = started.lock.as_secs(), "PIN login locked out");
    let batch = MutationBatch {
        mutations: vec![Mutation {
            mid: uuid::Uuid::now_v7().to_string(),
            table: "staff_lockout".into(),
            action: Action::Save,
            row: serde_json::from_value(json!({
                "id": id,
                "staff_id": staff,
                "node_id": desk.node_id,
                "node_name": desk.node_name.get(),
                "address": address.to_string(),
                "lockouts": started.lockouts.min(1_000_000),
                "locked_at": capsule_protocol::now_rfc3339(),
                "until": capsule_protocol::rfc3339_after(started.lock),
            }))
            .unwrap_or_default(),
            base: None,
            by: None,
        }],
        source: None,
    };
    let write = s.mutations.clone();
    tokio::spawn(async move {
        if let Err(e) = write(batch, String::new()).await {
            tracing::warn!("the lockout was not reported: {e:?}");
        }
    });
}

fn canonical(a: IpAddr) -> IpAddr {
    a.to_canonical()
}

fn locked_out(wait: Duration) -> Response {
    let secs = wait.as_secs().max(1);
    (
        StatusCode::TOO_MANY_REQUESTS,
        [(axum::http::header::RETRY_AFTER, secs.to_string())],
        Json(json!({
            "error": format!("too many wrong PINs: try again in {secs} s"),
            "retry_after_s": secs,
        })),
    )
        .into_response()
}

fn who(f: &capsule_store::permits::StaffLogin) -> Value {
    json!({"id": f.id, "name": f.name, "name_ar": f.name_ar, "role": f.role})
}

/// `POST /api/staff/login {staff, pin}`: a session for the screen (`token`, sent back in
/// the `x-capsule-staff` header), who it is and what they may do.
async fn login(
    State(s): State<ApiState>,
    desk: Option<Extension<Arc<StaffDesk>>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    body: Result<Json<PinLogin>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, ApiError> {
    let desk = desk_of(desk)?;
    let login = parse(body, "login")?;
    match check_login(&s, &desk, peer.ip(), login).await {
        Ok(f) => {
            let token = desk.open_session(&f.id);
            tracing::info!(staff = %f.id, "logged in");
            Ok(
                Json(json!({"token": token, "staff": who(&f), "permissions": f.permissions}))
                    .into_response(),
            )
        }
        Err(r) => Ok(r),
    }
}

async fn logout(desk: Option<Extension<Arc<StaffDesk>>>, headers: HeaderMap) -> Response {
    if let (Ok(d), Some(t)) = (desk_of(desk), header(&headers, STAFF_HEADER)) {
        d.close_session(t);
    }
    StatusCode::NO_CONTENT.into_response()
}

/// `GET /api/staff/me`: who the session is (401 when it ended: the screen shows its PIN pad).
async fn me(
    State(s): State<ApiState>,
    desk: Option<Extension<Arc<StaffDesk>>>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    let desk = desk_of(desk)?;
    let staff = header(&headers, STAFF_HEADER)
        .and_then(|t| desk.session(t))
        .ok_or_else(|| ApiError::new(StatusCode::UNAUTHORIZED, "nobody is logged in here"))?;
    let store = s.store.clone();
    let found = tokio::task::spawn_blocking(move || store.staff_login(&staff)).await??;
    let f = found
        .ok_or_else(|| ApiError::new(StatusCode::UNAUTHORIZED, "no longer a member of staff"))?;
    Ok(Json(
        json!({"staff": who(&f), "permissions": f.permissions}),
    ))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ApproveBody {
    staff: String,
    pin: String,
    /// The permission the approval is for: refused at once if the approver lacks it.
    permission: String,
}

/// `POST /api/staff/approve {staff, pin, permission}`: a manager approves the write the
/// cashier is making; `approval` goes in the `x-capsule-approval` header of that write (once).
async fn approve(
    State(s): State<ApiState>,
    desk: Option<Extension<Arc<StaffDesk>>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    body: Result<Json<ApproveBody>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, ApiError> {
    let desk = desk_of(desk)?;
    let b = parse(body, "approval")?;
    let login = PinLogin {
        staff: b.staff,
        pin: b.pin,
    };
    let f = match check_login(&s, &desk, peer.ip(), login).await {
        Ok(f) => f,
        Err(r) => return Ok(r),
    };
    if !f.permissions.contains(&b.permission) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            format!("{} may not approve '{}'", f.name, b.permission),
        ));
    }
    tracing::info!(approver = %f.id, permission = %b.permission, "approved");
    let token = desk.grant_approval(&f.id, &b.permission);
    Ok(Json(json!({"approval": token, "approver": who(&f)})).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SetPin {
    staff: String,
    pin: String,
}

/// `POST /api/staff/pin {staff, pin}`: sets a PIN (hashed here; the PIN itself is never
/// stored or sent on), as the logged-in member of staff: their own, or anyone's with
/// `staff.edit`.
async fn set_pin(
    State(s): State<ApiState>,
    stamp: Stamp,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    body: Result<Json<SetPin>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    let b = parse(body, "PIN")?;
    check_pin(&b.pin).map_err(ApiError::bad_request)?;
    // Someone's own PIN, or staff.edit: asked before the hashing, which costs.
    if stamp.staff() != Some(b.staff.as_str()) {
        stamp.require(&s.store, "staff.edit").await?;
    }
    if b.staff.is_empty() || b.staff.len() > 128 {
        return Err(ApiError::bad_request("staff id must be 1 to 128 bytes"));
    }
    let pin = pin_row(&b.staff, b.pin).await?;
    let results = submit(&s, &stamp, peer, vec![pin]).await?;
    Ok(Json(json!({ "results": results })))
}

/// The `staff_pin` row of `staff`'s new PIN (hashed here: the PIN itself goes no further).
async fn pin_row(staff: &str, pin: String) -> Result<Mutation, ApiError> {
    let hash = argon(move || hash_pin(&pin))
        .await?
        .map_err(ApiError::bad_request)?;
    Ok(Mutation::new(
        "staff_pin",
        Action::Save,
        json!({"id": staff, "pin_hash": hash, "updated_at": capsule_protocol::now_rfc3339()}),
    ))
}

/// Stamps `mutations` as this screen's and writes them through the node's own write path.
async fn submit(
    s: &ApiState,
    stamp: &Stamp,
    peer: SocketAddr,
    mutations: Vec<Mutation>,
) -> Result<Vec<capsule_protocol::MutationResult>, ApiError> {
    let mut batch = MutationBatch {
        mutations,
        source: None,
    };
    stamp.apply(&mut batch);
    Ok((s.mutations)(batch, peer.ip().to_string()).await?.results)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NewStaff {
    /// Left out: a new id.
    #[serde(default)]
    id: Option<String>,
    name: String,
    #[serde(default)]
    name_ar: Option<String>,
    role: String,
    pin: String,
}

/// `POST /api/staff {name, name_ar?, role, pin}`: a new member of staff and their PIN in one
/// write (the shop's first is its owner, who can then log in and add the others).
async fn add_staff(
    State(s): State<ApiState>,
    stamp: Stamp,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    body: Result<Json<NewStaff>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    let b = parse(body, "new member of staff")?;
    check_pin(&b.pin).map_err(ApiError::bad_request)?;
    stamp.require(&s.store, "staff.edit").await?;
    let id =
        b.id.unwrap_or_else(|| format!("st-{}", uuid::Uuid::now_v7().simple()));
    let pin = pin_row(&id, b.pin).await?;
    let member = Mutation::new(
        "staff",
        Action::Insert,
        json!({"id": id, "name": b.name, "name_ar": b.name_ar, "role": b.role, "active": true,
               "updated_at": capsule_protocol::now_rfc3339()}),
    );
    let results = submit(&s, &stamp, peer, vec![member, pin]).await?;
    Ok(Json(json!({ "id": id, "results": results })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pin_verifies_against_its_own_hash_only_and_the_hash_is_salted() {
        let a = hash_pin("2468").unwrap();
        let b = hash_pin("2468").unwrap();
        assert!(a.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{a}");
        assert_ne!(a, b, "each hash has its own salt");
        assert!(verify_pin(&a, "2468"));
        assert!(!verify_pin(&a, "2469"));
        assert!(!verify_pin("not a hash", "2468"));
        assert!(hash_pin("12a4").is_err());
        assert!(hash_pin("123").is_err());
        assert!(hash_pin("123456789").is_err());
    }

    #[test]
    fn attempts_sent_at_once_are_counted_before_their_pins_are_checked() {
        let desk = StaffDesk::new("till-a", Duration::from_secs(30));
        let addr: IpAddr = "192.168.1.9".parse().unwrap();
        // 128 requests in flight: each counts as it starts, so only the first five get a check.
        let let_through = (0..128)
            .filter(|_| desk.begin_attempt("st-1", addr, true).is_ok())
            .count();
        assert_eq!(let_through, TRIES_PER_LOCKOUT as usize);
    }

    #[test]
    fn five_wrong_pins_lock_and_each_next_lockout_is_longer() {
        let desk = StaffDesk::new("till-a", Duration::from_secs(30));
        let addr: IpAddr = "192.168.1.9".parse().unwrap();
        desk.count_staff("st-1");
        for _ in 0..4 {
            assert!(desk.record_wrong("st-1", addr).is_none());
        }
        assert!(desk.locked("st-1", addr).is_none());
        let started = desk.record_wrong("st-1", addr).unwrap();
        assert_eq!(started.lockouts, 1, "the lockout to report to the shop");
        let first = desk.locked("st-1", addr).unwrap();
        assert!(first > Duration::from_secs(29), "{first:?}");
        // Another address guessing the same member of staff is locked out too.
        assert!(
            desk.locked("st-1", "192.168.1.10".parse().unwrap())
                .is_some()
        );
        // The next five wrong ones (after the lockout) lock for twice as long.
        {
            let mut d = desk.desk();
            d.by_staff.get_mut("st-1").unwrap().until = None;
            d.by_address.get_mut(&addr).unwrap().until = None;
        }
        let second = (0..5)
            .filter_map(|_| desk.record_wrong("st-1", addr))
            .last();
        assert_eq!(
            second.map(|s| (s.lockouts, s.lock)),
            Some((2, Duration::from_secs(60)))
        );
        assert!(desk.locked("st-1", addr).unwrap() > Duration::from_secs(59));
    }
}
