//! The one way a node reaches its peers (pulls, snapshots, the outbox, reports, `/ws`): one
//! connection pool, and, once this node is paired, TLS 1.3 with its own certificate to servers
//! whose keys the roster holds. An unpaired node speaks plain HTTP, as shops did before pairing.

use std::sync::Arc;
use std::time::Duration;

use capsule_trust::{Identity, Roster};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

#[derive(Clone)]
struct Secure {
    http: reqwest::Client,
    tls: Arc<rustls::ClientConfig>,
    roster: Roster,
}

/// A node's client to its peers. Cheap to clone.
#[derive(Clone)]
pub struct PeerClient {
    plain: reqwest::Client,
    secure: Option<Secure>,
}

impl std::fmt::Debug for PeerClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeerClient")
            .field("paired", &self.secure().is_some())
            .finish()
    }
}

fn builder() -> reqwest::ClientBuilder {
    reqwest::Client::builder().connect_timeout(Duration::from_secs(3))
}

impl PeerClient {
    /// A client for a node outside any roster: plain HTTP.
    pub fn plain() -> PeerClient {
        static PLAIN: std::sync::OnceLock<reqwest::Client> = std::sync::OnceLock::new();
        PeerClient {
            plain: PLAIN
                .get_or_init(|| builder().build().expect("a plain HTTP client builds"))
                .clone(),
            secure: None,
        }
    }

    /// A client that speaks TLS as `identity` whenever `roster` says this node is paired.
    pub fn for_device(identity: &Identity, roster: Roster) -> PeerClient {
        let tls = capsule_trust::tls::client_config(identity, roster.clone());
        let http = builder()
            .use_preconfigured_tls(tls.as_ref().clone())
            .build()
            .expect("a TLS client builds");
        PeerClient {
            secure: Some(Secure { http, tls, roster }),
            ..PeerClient::plain()
        }
    }

    fn secure(&self) -> Option<&Secure> {
        // A removed device keeps speaking TLS as itself: the shop refuses it, and it never
        // falls back to talking to anyone as an unpaired node does.
        self.secure.as_ref().filter(|s| s.roster.is_closed())
    }

    /// The HTTP client to use now.
    pub fn http(&self) -> &reqwest::Client {
        self.secure().map_or(&self.plain, |s| &s.http)
    }

    /// A peer's base URL as this node must call it now (`https://` once paired).
    pub fn base(&self, url: &str) -> String {
        let url = url.trim_end_matches('/');
        match (self.secure(), url.strip_prefix("http://")) {
            (Some(_), Some(rest)) => format!("https://{rest}"),
            _ => url.to_string(),
        }
    }

    /// Opens `/ws` at `url` (a `ws://` or `wss://` address from [`crate::ws_url`]).
    pub async fn connect_ws(
        &self,
        url: &str,
        config: WebSocketConfig,
    ) -> Result<Ws, tokio_tungstenite::tungstenite::Error> {
        let connector = self
            .secure()
            .filter(|_| url.starts_with("wss://"))
            .map(|s| tokio_tungstenite::Connector::Rustls(s.tls.clone()));
        let (ws, _) =
            tokio_tungstenite::connect_async_tls_with_config(url, Some(config), false, connector)
                .await?;
        Ok(ws)
    }
}
