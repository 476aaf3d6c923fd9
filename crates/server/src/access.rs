//! Who may call what on a paired node: the credential a request carries and the one table that
//! says, for every route, which callers it serves. An unpaired node (a shop from before
//! pairing, or one not set up yet) serves everyone, as it always did; once it belongs to a
//! roster, a request is served only if the table allows its caller:
//!
//! - a paired device, by the certificate it showed over TLS (a live roster member; its role
//!   decides: a kitchen screen follows and bumps, a till sells and reports, a hub-eligible
//!   device also manages);
//! - this machine's own screens, by the launch key `tilld` writes to `local.key` in its data
//!   directory (a header or an HttpOnly cookie, and from a loopback address only);
//! - a browser a manager paired (a kitchen TV, a manager's laptop), by its cookie
//!   ([`crate::sessions`]): a kitchen screen reaches what a screen device does, a manager's
//!   browser what the manager's PC does;
//! - anyone, for the public routes: health, the steps of pairing, the UI's static files.
//!
//! No credential (or a removed device's) is a 401; a credential of the wrong role a 403 naming
//! the role needed.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use capsule_trust::{DeviceRole, Roster};

use crate::error::ApiError;
use crate::peers::PeerDevice;
use crate::sessions::{SCREEN_COOKIE, ScreenRole, Screens};

/// Who a route serves, from the widest to the narrowest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Access {
    /// Anyone: health, pairing, the UI's files.
    Public,
    /// Any paired device (a kitchen screen too): following the hub, its own writes.
    Device,
    /// Tills and hub-eligible devices: selling, printing, reports, the outbox.
    Till,
    /// Hub-eligible devices (the manager's PC): the Z, the roster, engineering switches.
    Manager,
}

/// The route table: method, path (`{x}` matches one segment, `{*x}` the rest) and access.
/// Anything under `/api`, `/ws` or `/metrics` that is not here is for this machine only.
pub const ROUTES: &[(Method, &str, Access)] = &[
    (Method::GET, "/healthz", Access::Public),
    (Method::GET, "/api/pair", Access::Public),
    (Method::POST, "/api/pair/hello", Access::Public),
    (Method::POST, "/api/pair/finish", Access::Public),
    // A browser asks to pair (a code it shows) and polls for the manager's answer.
    (Method::POST, "/api/pair/screen", Access::Public),
    (Method::GET, "/api/pair/screen/{id}", Access::Public),
    (Method::GET, "/api/pair/screens", Access::Manager),
    (
        Method::POST,
        "/api/pair/screens/{id}/approve",
        Access::Manager,
    ),
    (Method::POST, "/api/pair/screens/{id}/deny", Access::Manager),
    (
        Method::POST,
        "/api/pair/screens/{id}/remove",
        Access::Manager,
    ),
    (Method::GET, "/ws", Access::Device),
    (Method::GET, "/api/status", Access::Device),
    (Method::GET, "/api/schema", Access::Device),
    (Method::GET, "/api/openapi.json", Access::Device),
    (Method::POST, "/api/pull", Access::Device),
    (Method::GET, "/api/entities", Access::Device),
    (Method::GET, "/api/entities/{entity}/{id}", Access::Device),
    (Method::GET, "/api/snapshot", Access::Device),
    (Method::GET, "/api/backfill", Access::Device),
    (Method::GET, "/api/changes", Access::Device),
    (Method::GET, "/api/changed", Access::Device),
    (Method::GET, "/api/journal", Access::Device),
    (Method::GET, "/api/working-set", Access::Device),
    (Method::GET, "/api/tables/{table}", Access::Device),
    (Method::GET, "/api/orders", Access::Device),
    (Method::GET, "/api/print/jobs", Access::Device),
    (Method::POST, "/api/nodes/report", Access::Device),
    // A kitchen screen bumps kitchen work through it; what each role may write is the staff
    // issue's permission check, in the core.
    (Method::POST, "/api/mutations", Access::Device),
    // Staff log in at any paired screen; what they may then do is the core's check.
    (Method::POST, "/api/staff/login", Access::Device),
    (Method::POST, "/api/staff/logout", Access::Device),
    (Method::GET, "/api/staff/me", Access::Device),
    (Method::POST, "/api/staff/approve", Access::Device),
    (Method::POST, "/api/staff/pin", Access::Device),
    (Method::POST, "/api/staff", Access::Device),
    (Method::GET, "/api/staff/roles", Access::Device),
    (
        Method::POST,
        "/api/orders/{id}/send-to-kitchen",
        Access::Till,
    ),
    (Method::POST, "/api/orders/{id}/receipt", Access::Till),
    (Method::POST, "/api/print/jobs/{id}/retry", Access::Till),
    (Method::POST, "/api/printers/{id}/test", Access::Till),
    (Method::GET, "/api/orders/{id}/timeline", Access::Till),
    (Method::GET, "/api/audit", Access::Manager),
    (Method::POST, "/api/batches/{id}/tickets", Access::Till),
    (Method::GET, "/api/reports/x", Access::Till),
    (Method::POST, "/api/reports/x/print", Access::Till),
    (Method::GET, "/api/reports/z", Access::Till),
    (Method::GET, "/api/reports/z/{number}", Access::Till),
    (Method::POST, "/api/reports/z/{number}/print", Access::Till),
    (Method::GET, "/api/outbox", Access::Till),
    (Method::POST, "/api/outbox/{mid}/retry", Access::Till),
    (Method::POST, "/api/outbox/{mid}/discard", Access::Till),
    (Method::POST, "/api/reports/z", Access::Manager),
    (Method::POST, "/api/pair/offer", Access::Manager),
    (Method::GET, "/api/devices", Access::Device),
    (Method::POST, "/api/devices/{id}/revoke", Access::Manager),
    (Method::GET, "/api/admin/modes", Access::Manager),
    (Method::POST, "/api/admin/modes", Access::Manager),
    (Method::GET, "/metrics", Access::Manager),
    (Method::GET, "/api/metrics", Access::Manager),
];

fn matches(pattern: &str, path: &str) -> bool {
    let mut pat = pattern.split('/');
    let mut got = path.split('/');
    loop {
        match (pat.next(), got.next()) {
            (None, None) => return true,
            (Some(p), Some(_)) if p.starts_with("{*") => return true,
            (Some(p), Some(g)) if p.starts_with('{') => {
                if g.is_empty() {
                    return false;
                }
            }
            (Some(p), Some(g)) if p == g => {}
            _ => return false,
        }
    }
}

/// What the table says of a request; `None`: for this machine's own screens only.
pub fn access_of(method: &Method, path: &str) -> Option<Access> {
    let api = path.starts_with("/api") || path.starts_with("/ws") || path == "/metrics";
    if !api {
        // The UI's files (and its pages' routes): public, like a shop's menu board.
        return Some(Access::Public);
    }
    ROUTES
        .iter()
        .find(|(m, p, _)| m == method && matches(p, path))
        .map(|(_, _, a)| *a)
}

/// Who sent a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// A live roster member, over TLS.
    Device(DeviceRole),
    /// A browser a manager paired (its cookie).
    Browser(ScreenRole),
    /// A device that was a member when it connected and is not any more.
    Revoked,
    /// This machine's own screens (the launch key, from loopback).
    Local,
    Anonymous,
}

impl Caller {
    fn may(&self, access: Access) -> bool {
        match (self, access) {
            (_, Access::Public) | (Caller::Local, _) => true,
            (Caller::Device(_), Access::Device) => true,
            (Caller::Device(r), Access::Till) => *r != DeviceRole::Screen,
            (Caller::Device(r), Access::Manager) => *r == DeviceRole::HubEligible,
            (Caller::Browser(_), Access::Device) => true,
            (Caller::Browser(r), Access::Till | Access::Manager) => *r == ScreenRole::Manager,
            _ => false,
        }
    }
}

/// The key this launch of the node gave its own screens (random, 256 bits, hex).
#[derive(Clone)]
pub struct LocalKey(Arc<str>);

impl std::fmt::Debug for LocalKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LocalKey(..)")
    }
}

/// The cookie a browser on this machine keeps the launch key in.
pub const KEY_COOKIE: &str = "capsule_key";

impl LocalKey {
    pub fn new(key: String) -> LocalKey {
        LocalKey(key.into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Compared in constant time: a guest cannot learn it a byte at a time.
    fn is(&self, offered: &str) -> bool {
        let (a, b) = (self.0.as_bytes(), offered.as_bytes());
        a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
    }

    /// The key a request offers: `Authorization: Bearer`, or the cookie.
    fn offered(headers: &HeaderMap) -> Option<&str> {
        if let Some(bearer) = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
        {
            return Some(bearer.trim());
        }
        cookie(headers, KEY_COOKIE)
    }
}

/// The value of cookie `name`, if the request carries it.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// What the access check needs: this node's roster, its launch key and its paired browsers.
#[derive(Clone, Debug)]
pub struct AccessPolicy {
    pub roster: Roster,
    pub local_key: LocalKey,
    pub screens: Screens,
}

impl AccessPolicy {
    /// Who sent `req`.
    pub fn caller(&self, req: &Request) -> Caller {
        if let Some(d) = req.extensions().get::<PeerDevice>() {
            return match self.roster.live(&d.id) {
                Some(m) => Caller::Device(m.role),
                None => Caller::Revoked,
            };
        }
        match LocalKey::offered(req.headers()) {
            Some(k) if from_loopback(req) && self.local_key.is(k) => return Caller::Local,
            _ => {}
        }
        cookie(req.headers(), SCREEN_COOKIE)
            .and_then(|t| self.screens.role_of(t))
            .map_or(Caller::Anonymous, Caller::Browser)
    }
}

/// Whether `req` came from this machine (an IPv4 loopback seen on a dual-stack listener too).
fn from_loopback(req: &Request) -> bool {
    req.extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .is_some_and(|ConnectInfo(a)| a.ip().to_canonical().is_loopback())
}

fn refuse(status: StatusCode, message: String) -> Response {
    ApiError::new(status, message).into_response()
}

/// The middleware: serves a request only if the route table allows its caller.
pub async fn check(
    State(policy): State<Arc<AccessPolicy>>,
    mut req: Request,
    next: Next,
) -> Response {
    let path = req.uri().path().to_string();
    let access = access_of(req.method(), &path);
    // A browser on this machine opens the link `tilld` printed (`/?key=...`) once: the key moves
    // into an HttpOnly cookie and out of the address bar (paired or not yet: it keeps working
    // once the node is paired).
    if access == Some(Access::Public)
        && let Some(key) = req
            .uri()
            .query()
            .and_then(|q| form_urlencoded::parse(q.as_bytes()).find(|(k, _)| k == "key"))
            .map(|(_, v)| v.into_owned())
        && from_loopback(&req)
        && policy.local_key.is(&key)
    {
        return (
            StatusCode::SEE_OTHER,
            [
                (header::LOCATION, path.clone()),
                (
                    header::SET_COOKIE,
                    format!("{KEY_COOKIE}={key}; HttpOnly; SameSite=Strict; Path=/"),
                ),
            ],
        )
            .into_response();
    }
    let caller = policy.caller(&req);
    // What the handlers need of the caller: whose writes a batch carries (a device forwards
    // its own staff's), and whether it may read the staff PIN hashes (a browser may not).
    // (This machine's own screens neither: a cashier at the till's browser is not a node.)
    let reads_secrets = !policy.roster.is_closed() || matches!(caller, Caller::Device(_));
    req.extensions_mut()
        .insert(crate::api::ReadsSecrets(reads_secrets));
    req.extensions_mut().insert(caller.clone());
    if let Caller::Browser(_) = caller
        && path == "/ws"
        && let Some(rx) =
            cookie(req.headers(), SCREEN_COOKIE).and_then(|t| policy.screens.closer(t))
    {
        // A paired browser's `/ws` ends the moment the manager removes it (its connection
        // otherwise ends only when the node is paired under it). Its other requests show the
        // cookie each time, so only the stream needs telling.
        req.extensions_mut()
            .insert(crate::peers::Closer::Device(rx));
    }
    if !policy.roster.is_closed() {
        // An unpaired node serves everyone, as shops did before pairing; but joining a shop,
        // approving a browser and removing a device only for this machine, so no browser
        // approved before the first pairing outlives it. (A pairing code stays open to all
        // until then: a device paired while the shop was open shows in Devices, to remove.)
        let trust = path == "/api/pair/join"
            || path.starts_with("/api/pair/screens")
            || path.starts_with("/api/devices/");
        if !trust || caller == Caller::Local {
            return next.run(req).await;
        }
        // 403, not 401: the screen is admitted (the shop is open), this action is not.
        return refuse(
            StatusCode::FORBIDDEN,
            "only this machine's own screens may do this until the shop's first device is paired"
                .into(),
        );
    }
    match (access, &caller) {
        (Some(a), c) if c.may(a) => next.run(req).await,
        (None, Caller::Local) => next.run(req).await,
        (_, Caller::Anonymous) => refuse(
            StatusCode::UNAUTHORIZED,
            "this node serves the shop's paired devices only: pair this device (\"Add a device\" on the manager's PC, then tilld pair), or open the link tilld printed on this machine".into(),
        ),
        // 401 like any caller without credentials: its writes wait, they are not refused.
        (_, Caller::Revoked) => refuse(
            StatusCode::UNAUTHORIZED,
            "this device was removed from the shop".into(),
        ),
        (a, _) => refuse(
            StatusCode::FORBIDDEN,
            match a {
                Some(Access::Till) => "only a till or the manager's PC may do this".into(),
                Some(Access::Manager) => "only the manager's PC may do this".into(),
                _ => "only this machine's own screens may do this".into(),
            },
        ),
    }
}

/// Applies [`check`] to a router.
pub fn layer(router: axum::Router, policy: AccessPolicy) -> axum::Router {
    router.layer(axum::middleware::from_fn_with_state(
        Arc::new(policy),
        check,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_match_one_segment_per_placeholder() {
        assert!(matches(
            "/api/entities/{entity}/{id}",
            "/api/entities/order_header/1"
        ));
        assert!(!matches(
            "/api/entities/{entity}/{id}",
            "/api/entities/order_header"
        ));
        assert!(!matches("/api/entities/{entity}/{id}", "/api/entities//1"));
        assert!(!matches("/api/reports/z", "/api/reports/z/1"));
        assert_eq!(access_of(&Method::GET, "/till"), Some(Access::Public));
        assert_eq!(
            access_of(&Method::POST, "/api/reports/z"),
            Some(Access::Manager)
        );
        assert_eq!(
            access_of(&Method::GET, "/api/reports/z"),
            Some(Access::Till)
        );
        assert_eq!(access_of(&Method::DELETE, "/api/reports/z"), None);
        assert_eq!(access_of(&Method::GET, "/api/nothing"), None);
    }

    #[test]
    fn each_role_reaches_its_routes_and_no_further() {
        let screen = Caller::Device(DeviceRole::Screen);
        let till = Caller::Device(DeviceRole::Till);
        let manager = Caller::Device(DeviceRole::HubEligible);
        for c in [&screen, &till, &manager, &Caller::Local] {
            assert!(c.may(Access::Device), "{c:?}");
        }
        assert!(!screen.may(Access::Till));
        assert!(till.may(Access::Till) && !till.may(Access::Manager));
        assert!(manager.may(Access::Manager));
        let kitchen_tv = Caller::Browser(ScreenRole::Kitchen);
        assert!(kitchen_tv.may(Access::Device) && !kitchen_tv.may(Access::Till));
        assert!(Caller::Browser(ScreenRole::Manager).may(Access::Manager));
        for c in [&Caller::Anonymous, &Caller::Revoked] {
            assert!(c.may(Access::Public) && !c.may(Access::Device), "{c:?}");
        }
    }

    #[test]
    fn the_launch_key_is_taken_from_a_bearer_header_or_the_cookie_only() {
        let key = LocalKey::new("k".repeat(64));
        let mut h = HeaderMap::new();
        assert_eq!(LocalKey::offered(&h), None);
        h.insert(
            header::COOKIE,
            format!("a=b; {KEY_COOKIE}={}", "k".repeat(64))
                .parse()
                .unwrap(),
        );
        assert!(key.is(LocalKey::offered(&h).unwrap()));
        h.insert(header::AUTHORIZATION, "Bearer nope".parse().unwrap());
        assert!(!key.is(LocalKey::offered(&h).unwrap()));
        assert!(!key.is(""));
    }
}
