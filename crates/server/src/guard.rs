//! The checks every request passes before a route sees it: which host it was sent to, which
//! page sent it, what it carries. Any web page a cashier opens can make the browser send
//! requests to the till on `127.0.0.1`; these checks keep such pages from changing data or
//! reading it through DNS rebinding, without any CORS allowance.
//!
//! - `Host` must be an IP address, `localhost`, this machine's name (or `NAME.local`), or a
//!   name given with `--allow-host`: a rebinding attacker's domain is refused (403).
//! - State changes (POST, PUT, PATCH, DELETE) and WebSocket upgrades with an `Origin` must come
//!   from the node's own origin, the desktop app's, or an allowed host (403). Clients that
//!   send no `Origin` (tills, scripts, the desktop shell) are not browsers' cross-site requests.
//! - State changes must be `Content-Type: application/json` (415): an HTML form cannot send it
//!   without a preflight, and preflights are answered without any `Access-Control-Allow-*`.
//! - Every error answer under `/api`, `/ws`, `/metrics` and `/healthz` is JSON `{"error": ...}`, including
//!   the framework's own (unknown method, bad query string, body too large).

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::error::ApiError;

/// Names this node answers to besides IP addresses.
#[derive(Debug, Clone, Default)]
pub struct Hosts {
    names: Vec<String>,
}

impl Hosts {
    /// `localhost`, this machine's host name and `NAME.local`, and `extra`.
    pub fn for_this_machine(extra: &[String]) -> Hosts {
        let mut names = vec!["localhost".to_string()];
        if let Ok(h) = std::fs::read_to_string("/proc/sys/kernel/hostname") {
            let h = h.trim().to_ascii_lowercase();
            if !h.is_empty() {
                names.push(format!("{h}.local"));
                names.push(h);
            }
        }
        names.extend(extra.iter().map(|h| h.trim().to_ascii_lowercase()));
        Hosts { names }
    }

    fn allows(&self, host: &str) -> bool {
        let host = host.to_ascii_lowercase();
        host.trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok()
            || self.names.contains(&host)
            // The desktop app's own scheme host.
            || host == "tauri.localhost"
    }
}

/// The host part of a `Host` header or an origin's authority (`name`, `1.2.3.4`, `[::1]`).
fn host_part(authority: &str) -> &str {
    if let Some(end) = authority.strip_prefix('[').and_then(|r| r.find(']')) {
        return &authority[..end + 2];
    }
    authority.rsplit_once(':').map_or(authority, |(h, _)| h)
}

fn is_state_change(m: &Method) -> bool {
    matches!(
        *m,
        Method::POST | Method::PUT | Method::PATCH | Method::DELETE
    )
}

fn is_ws_upgrade(h: &HeaderMap) -> bool {
    h.get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"))
}

fn refuse(status: StatusCode, message: String) -> Response {
    ApiError::new(status, message).into_response()
}

/// The middleware; state is the node's allowed host names.
pub async fn guard(State(hosts): State<Arc<Hosts>>, req: Request, next: Next) -> Response {
    let headers = req.headers();
    let Some(host) = headers.get(header::HOST).and_then(|h| h.to_str().ok()) else {
        return refuse(
            StatusCode::BAD_REQUEST,
            "the request has no Host header".into(),
        );
    };
    let host = host.to_string();
    if !hosts.allows(host_part(&host)) {
        return refuse(
            StatusCode::FORBIDDEN,
            format!(
                "'{}' is not a name of this node; if it is, start the node with --allow-host {}",
                host_part(&host),
                host_part(&host)
            ),
        );
    }
    let method = req.method().clone();
    if method == Method::OPTIONS {
        // A preflight gets no Access-Control-Allow-* headers: cross-site requests stay blocked.
        return (StatusCode::NO_CONTENT, [(header::ALLOW, "GET, POST")]).into_response();
    }
    let changes = is_state_change(&method);
    if (changes || is_ws_upgrade(headers))
        && let Some(origin) = headers.get(header::ORIGIN)
    {
        let origin = origin.to_str().unwrap_or("null");
        let authority = origin.split_once("://").map(|(_, a)| a);
        let same_node = authority.is_some_and(|a| a.eq_ignore_ascii_case(&host));
        let desktop = matches!(
            origin,
            "tauri://localhost" | "http://tauri.localhost" | "https://tauri.localhost"
        );
        let allowed_name = authority.is_some_and(|a| {
            let h = host_part(a);
            h.parse::<std::net::IpAddr>().is_err() && hosts.allows(h)
        });
        if !(same_node || desktop || allowed_name) {
            return refuse(
                StatusCode::FORBIDDEN,
                format!("requests from the page at {origin} may not change this node's data"),
            );
        }
    }
    if changes {
        let json = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| {
                v.split(';')
                    .next()
                    .is_some_and(|t| t.trim().eq_ignore_ascii_case("application/json"))
            });
        if !json {
            return refuse(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "state changes take a JSON body (Content-Type: application/json)".into(),
            );
        }
    }
    let api = {
        let p = req.uri().path();
        p.starts_with("/api") || p.starts_with("/ws") || p == "/metrics" || p == "/healthz"
    };
    let resp = next.run(req).await;
    if api && (resp.status().is_client_error() || resp.status().is_server_error()) {
        return as_json_error(resp).await;
    }
    resp
}

/// Rewrites an error answer that is not JSON (the framework's own rejections) as one.
async fn as_json_error(resp: Response) -> Response {
    let is_json = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if is_json {
        return resp;
    }
    let (parts, body) = resp.into_parts();
    let text = axum::body::to_bytes(body, 4096)
        .await
        .map(|b| String::from_utf8_lossy(&b).trim().to_string())
        .unwrap_or_default();
    let message = if text.is_empty() {
        parts
            .status
            .canonical_reason()
            .unwrap_or("request refused")
            .to_string()
    } else {
        text
    };
    let mut out = ApiError::new(parts.status, message).into_response();
    // Keep what the framework said about the refusal (Allow on a 405, for one).
    for (k, v) in parts.headers.iter() {
        if k != header::CONTENT_TYPE && k != header::CONTENT_LENGTH {
            out.headers_mut().insert(k.clone(), v.clone());
        }
    }
    out
}

/// Applies [`guard`] to a router.
pub fn layer(router: axum::Router, hosts: Hosts) -> axum::Router {
    router.layer(axum::middleware::from_fn_with_state(Arc::new(hosts), guard))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_are_names_of_this_node_or_addresses() {
        let h = Hosts {
            names: vec!["localhost".into(), "till-2".into(), "till-2.local".into()],
        };
        for ok in [
            "127.0.0.1",
            "192.168.1.20",
            "[::1]",
            "localhost",
            "TILL-2",
            "till-2.local",
        ] {
            assert!(h.allows(host_part(ok)), "{ok}");
        }
        for bad in [
            "evil.example",
            "127.0.0.1.evil.example",
            "localhost.evil",
            "",
        ] {
            assert!(!h.allows(host_part(bad)), "{bad}");
        }
        assert_eq!(host_part("127.0.0.1:7700"), "127.0.0.1");
        assert_eq!(host_part("[::1]:7700"), "[::1]");
        assert_eq!(host_part("evil.example:80"), "evil.example");
    }
}
