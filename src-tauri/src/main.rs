//! Capsule POS desktop app: a thin Tauri shell. It starts a hub or till node in-process (the
//! same `capsule_node::start` the headless `tilld` runs) on 127.0.0.1, shows the bundled UI,
//! and bridges the UI to the node: the `node_request` command forwards an API call over HTTP,
//! and every `/ws` frame is re-emitted as the `node_frame` event. No business logic here.
#![cfg_attr(not(debug_assertions), windows_subsystem = "windows")]

mod launch;

use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::Context;
use capsule_node::{NodeConfig, RunningNode};
use futures_util::StreamExt;
use launch::{Launch, Parsed};
use serde::Serialize;
use serde_json::Value;
use serde_json::value::RawValue;
use tauri::{AppHandle, Emitter, Manager, RunEvent, State};
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::Message;

/// Where the in-process node is, once it has started.
#[derive(Debug, Clone)]
struct NodeLink {
    /// `http://127.0.0.1:PORT`, also when the node listens on all interfaces.
    url: String,
    data_dir: PathBuf,
    /// This launch's key for the node's own screens: the shell is one, over loopback, and a
    /// paired node asks for it on every request (never shown, never on the LAN).
    key: String,
}

struct Shell {
    launch: Launch,
    /// None until the node has started (or failed to: then the error text).
    node: watch::Receiver<Option<Result<NodeLink, String>>>,
    running: Mutex<Option<RunningNode>>,
    frames: Mutex<Option<tauri::async_runtime::JoinHandle<()>>>,
    http: reqwest::Client,
}

impl Shell {
    async fn link(&self) -> Result<NodeLink, String> {
        let mut rx = self.node.clone();
        let ready = rx
            .wait_for(Option::is_some)
            .await
            .map_err(|_| "the node did not start".to_string())?;
        ready.clone().expect("waited for Some")
    }
}

#[derive(Serialize)]
struct NodeResponse {
    status: u16,
    body: Value,
}

/// Forwards one API call to the node: `{status, body}` with the body parsed as JSON (null when
/// empty), like the browser transport. Errs only when the node cannot be reached.
#[tauri::command]
async fn node_request(
    shell: State<'_, Shell>,
    method: String,
    path: String,
    body: Option<Value>,
    headers: Option<std::collections::HashMap<String, String>>,
) -> Result<NodeResponse, String> {
    if !path.starts_with('/') || path.starts_with("//") {
        return Err(format!("path must start with a single '/': {path}"));
    }
    let method = reqwest::Method::from_bytes(method.to_ascii_uppercase().as_bytes())
        .map_err(|_| format!("bad method '{method}'"))?;
    let link = shell.link().await?;
    let mut req = shell
        .http
        .request(method, format!("{}{}", link.url, path))
        .bearer_auth(&link.key)
        .header("accept", "application/json");
    // The staff session and a manager's approval; nothing else the page could set.
    for (name, value) in headers.unwrap_or_default() {
        if name.to_ascii_lowercase().starts_with("x-capsule-") {
            req = req.header(name, value);
        }
    }
    if let Some(body) = body {
        req = req.json(&body);
    }
    let res = req.send().await.map_err(|e| format!("{e}"))?;
    let status = res.status().as_u16();
    let text = res.text().await.map_err(|e| format!("{e}"))?;
    let body = if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or_else(|_| {
            let cut: String = text.chars().take(300).collect();
            serde_json::json!({ "error": cut })
        })
    };
    Ok(NodeResponse { status, body })
}

#[derive(Serialize)]
struct NodeInfo {
    url: String,
    role: &'static str,
    hub_url: Option<String>,
    data_dir: PathBuf,
}

#[tauri::command]
async fn node_info(shell: State<'_, Shell>) -> Result<NodeInfo, String> {
    let link = shell.link().await?;
    Ok(NodeInfo {
        url: link.url,
        role: shell.launch.role_name(),
        hub_url: shell.launch.hub_url.clone(),
        data_dir: link.data_dir,
    })
}

/// Follows the node's `/ws` for the life of the app and emits every frame as `node_frame`
/// (the frame's JSON as is). Reconnects with backoff; each connection starts with a `hello`,
/// on which the UI reloads what it shows.
async fn forward_frames(app: AppHandle, ws_url: String, key: String) {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut backoff = Duration::from_millis(200);
    loop {
        let request = ws_url.as_str().into_client_request().map(|mut r| {
            if let Ok(v) = format!("Bearer {key}").parse() {
                r.headers_mut().insert("authorization", v);
            }
            r
        });
        let connected = match request {
            Ok(r) => tokio_tungstenite::connect_async(r).await,
            Err(e) => Err(e),
        };
        match connected {
            Ok((mut ws, _)) => {
                tracing::debug!(%ws_url, "following node frames");
                backoff = Duration::from_millis(200);
                while let Some(msg) = ws.next().await {
                    match msg {
                        Ok(Message::Text(text)) => {
                            let text = text.as_str().to_string();
                            let sent = match RawValue::from_string(text) {
                                Ok(raw) => app.emit("node_frame", raw),
                                Err(e) => {
                                    tracing::warn!("node sent a frame that is not JSON: {e}");
                                    continue;
                                }
                            };
                            if let Err(e) = sent {
                                tracing::warn!("cannot emit node_frame: {e}");
                            }
                        }
                        Ok(Message::Close(_)) | Err(_) => break,
                        Ok(_) => {}
                    }
                }
                tracing::info!("node /ws closed; reconnecting");
            }
            Err(e) => tracing::warn!(%ws_url, "cannot follow node frames: {e}"),
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

/// WebKitGTK reports `navigator.language` from the process locale, which is `C` when the app
/// starts without `LANG` (a kiosk service, Xvfb). `C` is not a BCP 47 tag, and libraries that
/// pass `navigator.language` to `Intl` (uPlot does, at import) throw and the UI never mounts.
/// Runs before the page's scripts; changes nothing when the language is valid.
const LOCALE_GUARD: &str = r#"(function () {
  function ok(t) { try { return !!t && Intl.getCanonicalLocales(t).length > 0; } catch (e) { return false; } }
  if (ok(navigator.language)) return;
  var langs = Array.prototype.filter.call(navigator.languages || [], ok);
  if (langs.length === 0) langs = ['en-US'];
  Object.defineProperty(Navigator.prototype, 'language', { get: function () { return langs[0]; }, configurable: true });
  Object.defineProperty(Navigator.prototype, 'languages', { get: function () { return langs.slice(); }, configurable: true });
})();"#;

fn main() {
    capsule_node::cli::init_logging();
    let launch = match launch::parse(std::env::args().skip(1), |k| std::env::var(k).ok()) {
        Ok(Parsed::Run(l)) => l,
        Ok(Parsed::Help) => {
            print!("{}", launch::USAGE);
            return;
        }
        Err(e) => {
            eprintln!("capsule-pos: {e}\n\n{}", launch::USAGE);
            std::process::exit(2);
        }
    };
    if let Err(e) = run(launch) {
        eprintln!("capsule-pos: {e:#}");
        std::process::exit(1);
    }
}

/// A kitchen screen opens on the kitchen display of its station.
fn screen_route(launch: &Launch) -> String {
    if launch.role != capsule_node::Role::Screen {
        return String::new();
    }
    let station: String = launch
        .station
        .as_deref()
        .unwrap_or("all")
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '_')
        .collect();
    format!(
        "if (!location.hash || location.hash === '#/' || location.hash === '#/home') \
         location.hash = '#/kds?station={station}';"
    )
}

fn run(launch: Launch) -> anyhow::Result<()> {
    let t0 = Instant::now();
    if !launch.ignored.is_empty() {
        tracing::debug!(args = ?launch.ignored, "ignoring arguments");
    }
    let (node_tx, node_rx) = watch::channel(None);
    let http = reqwest::Client::builder()
        .no_proxy()
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(120))
        .build()
        .context("http client")?;
    let app = tauri::Builder::default()
        .manage(Shell {
            launch: launch.clone(),
            node: node_rx,
            running: Mutex::new(None),
            frames: Mutex::new(None),
            http,
        })
        .plugin(
            tauri::plugin::Builder::<tauri::Wry, ()>::new("locale-guard")
                .js_init_script(LOCALE_GUARD.to_string())
                .build(),
        )
        .plugin(
            tauri::plugin::Builder::<tauri::Wry, ()>::new("screen-route")
                .js_init_script(screen_route(&launch))
                .build(),
        )
        .invoke_handler(tauri::generate_handler![node_request, node_info])
        .setup(move |app| {
            let data_dir = match &launch.data_dir {
                Some(d) => d.clone(),
                None => app.path().app_data_dir()?.join(launch.role_name()),
            };
            let mut config = NodeConfig::new(launch.role, data_dir.clone(), launch.listen);
            config.hub_url = launch.hub_url.clone();
            config.demo = launch.demo;
            config.name = launch.name.clone();
            config.priority = launch.priority;
            config.peers = launch.peers.clone();
            if launch.role == capsule_node::Role::Screen
                && let Some(window) = app.get_webview_window("main")
            {
                // A kitchen screen is the display and nothing else.
                let _ = window.set_fullscreen(true);
            }
            let handle = app.handle().clone();
            // The window opens while the node starts; requests wait for it.
            tauri::async_runtime::spawn(async move {
                match capsule_node::start(config).await {
                    Ok(node) => {
                        let port = node.addr.port();
                        let url = format!("http://127.0.0.1:{port}");
                        tracing::info!(
                            role = launch.role_name(),
                            %url,
                            data = %data_dir.display(),
                            node_id = %node.node_id,
                            "node started in {} ms",
                            t0.elapsed().as_millis()
                        );
                        // Scripts read this line, like tilld's.
                        println!("listening on {url}");
                        let key = node.trust.local_key.as_str().to_string();
                        let shell = handle.state::<Shell>();
                        *shell.running.lock().expect("lock") = Some(node);
                        *shell.frames.lock().expect("lock") =
                            Some(tauri::async_runtime::spawn(forward_frames(
                                handle.clone(),
                                format!("ws://127.0.0.1:{port}/ws"),
                                key.clone(),
                            )));
                        let _ = node_tx.send(Some(Ok(NodeLink { url, data_dir, key })));
                    }
                    Err(e) => {
                        let msg = format!("{e:#}");
                        tracing::error!("the node did not start: {msg}");
                        let _ = node_tx.send(Some(Err(msg)));
                    }
                }
            });
            Ok(())
        })
        .build(tauri::generate_context!("../tauri.conf.json"))
        .context("cannot start the desktop app")?;
    app.run(|handle, event| {
        if let RunEvent::Exit = event {
            let shell = handle.state::<Shell>();
            if let Some(frames) = shell.frames.lock().expect("lock").take() {
                frames.abort();
            }
            let node = shell.running.lock().expect("lock").take();
            if let Some(node) = node {
                tauri::async_runtime::block_on(async {
                    match tokio::time::timeout(Duration::from_secs(5), node.shutdown()).await {
                        Ok(Ok(())) => tracing::info!("node stopped"),
                        Ok(Err(e)) => tracing::warn!("node shutdown: {e:#}"),
                        Err(_) => tracing::warn!("node shutdown timed out"),
                    }
                });
            }
        }
    });
    Ok(())
}
