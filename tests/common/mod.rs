//! Test harness: real `tilld` processes on 127.0.0.1, real SQLite files, a blocking client.
#![allow(dead_code)] // each test file uses a different subset

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rusqlite::{Connection, OpenFlags};
use serde_json::{Value, json};

pub const T: &str = "2026-11-24T12:00:00Z";

/// A running `tilld`; SIGKILLed when dropped.
pub struct Node {
    pub child: Child,
    pub url: String,
    pub data: PathBuf,
    /// Reach the node as a paired device over TLS (a node in another network namespace, where
    /// this machine's launch key does not count) instead of with its launch key.
    pub operator: Option<reqwest::blocking::Client>,
}

impl Node {
    /// Starts `tilld` with `args` and waits for its `listening on` line.
    pub fn spawn(data: &Path, args: &[&str]) -> Node {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_tilld"));
        cmd.args(args).arg("--data").arg(data);
        if !args.contains(&"--listen") {
            cmd.args(["--listen", "127.0.0.1:0"]);
        }
        Node::from_command(cmd, data)
    }

    /// Runs `cmd` (a `tilld`, perhaps wrapped) and waits for its `listening on` line.
    pub fn from_command(cmd: Command, data: &Path) -> Node {
        let logs = match std::env::var_os("CAPSULE_TEST_LOGS") {
            // Debugging a test: each node's log, appended across its restarts, beside its data
            // directory, or in the directory CAPSULE_TEST_LOGS names (kept after the test).
            Some(dir) => {
                let path = match std::path::Path::new(&dir) {
                    d if d.is_dir() => d.join(format!(
                        "{}-{}.log",
                        data.parent()
                            .and_then(|p| p.file_name())
                            .map(|n| n.to_string_lossy().into_owned())
                            .unwrap_or_default(),
                        data.file_name().unwrap_or_default().to_string_lossy()
                    )),
                    _ => data.with_extension("log"),
                };
                let file = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .unwrap();
                Stdio::from(file)
            }
            None => Stdio::null(),
        };
        Node::from_command_logging(cmd, data, logs)
    }

    /// [`Node::from_command`] writing the node's log (stderr) to `logs`.
    pub fn from_command_logging(mut cmd: Command, data: &Path, logs: Stdio) -> Node {
        cmd.stdout(Stdio::piped()).stderr(logs);
        let mut child = cmd.spawn().expect("tilld starts");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            if let Some(Ok(line)) = lines.next() {
                let _ = tx.send(line);
            }
            // Keep draining so the node never blocks on a full pipe.
            for _ in lines {}
        });
        let line = rx
            .recv_timeout(Duration::from_secs(20))
            .expect("tilld printed its address");
        let url = line
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("unexpected first line: {line}"))
            .to_string();
        Node {
            child,
            url,
            data: data.to_path_buf(),
            operator: None,
        }
    }

    pub fn hub(data: &Path) -> Node {
        Node::spawn(data, &["--role", "hub"])
    }

    pub fn till(data: &Path, hub: &Node) -> Node {
        Node::spawn(data, &["--role", "till", "--hub", &hub.url])
    }

    pub fn port(&self) -> u16 {
        self.url.rsplit(':').next().unwrap().parse().unwrap()
    }

    /// SIGKILL, no goodbye.
    pub fn kill9(mut self) {
        self.child.kill().expect("kill -9");
        self.child.wait().unwrap();
    }

    pub fn db(&self) -> PathBuf {
        self.data.join("node.sqlite3")
    }

    /// This launch's key for the node's own screens (what a paired node asks this machine's
    /// requests for; an unpaired node ignores it).
    pub fn local_key(&self) -> String {
        std::fs::read_to_string(self.data.join("local.key")).unwrap_or_default()
    }

    /// A request to this node as its own machine's screens make it.
    pub fn request(
        &self,
        method: reqwest::Method,
        path: &str,
    ) -> reqwest::blocking::RequestBuilder {
        match &self.operator {
            Some(device) => device.request(
                method,
                format!("{}{path}", self.url.replace("http://", "https://")),
            ),
            None => client()
                .request(method, format!("{}{path}", self.url))
                .bearer_auth(self.local_key()),
        }
    }

    pub fn get(&self, path: &str) -> (u16, Value) {
        let r = self
            .request(reqwest::Method::GET, path)
            .send()
            .expect("request");
        let status = r.status().as_u16();
        (status, r.json().unwrap_or(Value::Null))
    }

    pub fn post_raw(&self, path: &str, body: &str) -> (u16, Value) {
        let r = self
            .request(reqwest::Method::POST, path)
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .expect("request");
        let status = r.status().as_u16();
        (status, r.json().unwrap_or(Value::Null))
    }

    /// Posts mutations given as (table, action, row) and returns the status and answer.
    pub fn mutate(&self, muts: &[(&str, &str, Value)]) -> (u16, Value) {
        let body = json!({"mutations": muts.iter().map(|(t, a, r)| mutation(t, a, r.clone())).collect::<Vec<_>>()});
        self.post_raw("/api/mutations", &body.to_string())
    }

    /// Like `mutate`, asserting every mutation was applied.
    pub fn apply(&self, muts: &[(&str, &str, Value)]) -> Value {
        let (status, body) = self.mutate(muts);
        assert_eq!(status, 200, "mutations refused: {body}");
        for r in body["results"].as_array().unwrap() {
            assert_eq!(r["status"], "applied", "{body}");
        }
        body
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A node's `/api/status`, or null while it does not answer (killed, frozen, starting).
pub fn status(node: &Node) -> Value {
    node.request(reqwest::Method::GET, "/api/status")
        .timeout(Duration::from_secs(2))
        .send()
        .ok()
        .and_then(|r| r.json().ok())
        .unwrap_or(Value::Null)
}

pub fn client() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap()
}

pub fn mutation(table: &str, action: &str, row: Value) -> Value {
    json!({"mid": uuid::Uuid::new_v4().to_string(), "table": table, "action": action, "row": row})
}

pub fn new_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

const SYNCED: &[&str] = &[
    "order_header",
    "order_line",
    "order_payment",
    "job_order_header",
    "job_order_detail",
    "job_order_batch",
    "pos_shift",
];

/// Every synced row of a node's SQLite file, opened read-only, as sorted text.
pub fn dump(db: &Path) -> Vec<String> {
    let conn = Connection::open_with_flags(db, OpenFlags::SQLITE_OPEN_READ_ONLY)
        .expect("open db read-only");
    let mut out = Vec::new();
    for table in SYNCED {
        let mut stmt = conn
            .prepare(&format!("SELECT * FROM {table} ORDER BY id"))
            .unwrap();
        let names: Vec<String> = stmt.column_names().iter().map(|s| s.to_string()).collect();
        let rows = stmt
            .query_map([], |r| {
                let mut cells = Vec::new();
                for (i, n) in names.iter().enumerate() {
                    let v: rusqlite::types::Value = r.get(i)?;
                    cells.push(format!("{n}={v:?}"));
                }
                Ok(format!("{table}: {}", cells.join(" ")))
            })
            .unwrap();
        for r in rows {
            out.push(r.unwrap());
        }
    }
    out
}

pub fn count(db: &Path, table: &str) -> i64 {
    let conn = Connection::open_with_flags(db, OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap();
    conn.query_row(&format!("SELECT COUNT(*) FROM {table}"), [], |r| r.get(0))
        .unwrap()
}

/// Polls until `cond` holds, panicking with `what` after `timeout`.
pub fn wait_until(timeout: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(
            start.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Waits until every till's file holds exactly the hub's rows.
pub fn assert_converges(hub: &Node, tills: &[&Node]) {
    let mut last = String::new();
    let start = Instant::now();
    loop {
        let want = dump(&hub.db());
        let mut all = true;
        for t in tills {
            let have = dump(&t.db());
            if have != want {
                all = false;
                let diff: Vec<_> = want.iter().filter(|r| !have.contains(r)).take(3).collect();
                last = format!(
                    "{} differs from hub: e.g. hub has {diff:?} ({} vs {} rows)",
                    t.url,
                    want.len(),
                    have.len()
                );
            }
        }
        if all {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "tills did not converge: {last}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A shift and an order with two lines, as a cashier would ring them up.
pub fn open_order(node: &Node, shift: &str, order: &str, order_no: i64) {
    node.apply(&[
        ("pos_shift", "save", json!({"id": shift, "node_id": "till-a", "cashier": "Mona", "opened_at": T})),
        ("order_header", "insert", json!({"id": order, "order_no": order_no, "shift_id": shift, "opened_at": T, "tax_rate_bp": 1500, "table_label": "T3"})),
        ("order_line", "insert", json!({"id": new_id(), "order_id": order, "name_en": "Hummus", "name_ar": "حمص", "qty": 2, "unit_price": 1500, "station": "cold", "created_at": T})),
        ("order_line", "insert", json!({"id": new_id(), "order_id": order, "name_en": "Lamb kofta", "name_ar": "كفتة لحم", "qty": 1, "unit_price": 4200, "station": "grill", "created_at": T})),
    ]);
}

impl Node {
    /// A number from this node's `/api/metrics` JSON, by path (`replica.rest_requests`).
    /// A Prometheus sample from `/metrics` (`name{labels}` as written there), 0 when absent.
    pub fn prometheus(&self, sample: &str) -> f64 {
        let text = self
            .request(reqwest::Method::GET, "/metrics")
            .send()
            .and_then(|r| r.text())
            .unwrap_or_default();
        text.lines()
            .find_map(|l| l.strip_prefix(sample)?.trim().parse().ok())
            .unwrap_or(0.0)
    }

    pub fn metric(&self, path: &str) -> f64 {
        let (_, m) = self.get("/api/metrics");
        let mut v = &m;
        for key in path.split('.') {
            v = &v[key];
        }
        v.as_f64()
            .unwrap_or_else(|| panic!("no metric {path} in {m}"))
    }

    /// SIGSTOP / SIGCONT: a till that stops reading without closing its connection.
    pub fn pause(&self, on: bool) {
        let sig = if on { "-STOP" } else { "-CONT" };
        let ok = Command::new("kill")
            .args([sig, &self.child.id().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill {sig}");
    }
}

/// Sends a seeded rush, step by step, each step through `nodes[till % len]`; calls `each`
/// with the step index after every step. Returns the number of mutations sent.
pub fn run_rush(orders: usize, seed: u64, nodes: &[&Node], mut each: impl FnMut(usize)) -> usize {
    let config = capsule_bench::workload::RushConfig {
        orders,
        seed,
        ..Default::default()
    };
    let mut n = 0;
    for (i, step) in capsule_bench::workload::Rush::new(config).enumerate() {
        let node = nodes[step.till % nodes.len()];
        let body = serde_json::to_string(&step.batch).unwrap();
        let (status, answer) = node.post_raw("/api/mutations", &body);
        assert_eq!(status, 200, "{} via {}: {answer}", step.what, node.url);
        n += step.batch.mutations.len();
        each(i);
    }
    n
}

// A shop of `--role auto` nodes (failover and the month test).

/// A free port for both TCP (HTTP) and UDP (gossip) on 127.0.0.1.
pub fn free_port() -> u16 {
    loop {
        let tcp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = tcp.local_addr().unwrap().port();
        if std::net::UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

pub struct Shop {
    pub dir: tempfile::TempDir,
    pub ports: Vec<u16>,
    /// Each node is paired before its first start (with a running node of the shop; the first
    /// node started with none running founds the roster), so the shop runs with TLS between
    /// its nodes, signed gossip and the route guard, as a real paired shop does.
    pub paired: bool,
    founder: std::sync::Mutex<Option<usize>>,
}

impl Shop {
    /// A paired shop of `n` nodes (none started).
    pub fn new(n: usize) -> Shop {
        Shop {
            dir: tempfile::tempdir().unwrap(),
            ports: (0..n).map(|_| free_port()).collect(),
            paired: true,
            founder: std::sync::Mutex::new(None),
        }
    }

    /// A shop from before pairing: every node open.
    pub fn unpaired(n: usize) -> Shop {
        Shop {
            paired: false,
            ..Shop::new(n)
        }
    }

    /// Pairs node `i` before its first start with a running node of the shop, or makes it the
    /// shop's founder when none runs.
    fn pair_before_first_start(&self, i: usize, name: &str, role: &str) {
        let mut founder = self.founder.lock().unwrap();
        if !self.paired || *founder == Some(i) || self.data(i).join("paired-with.json").exists() {
            return;
        }
        let host = (0..self.ports.len()).find(|&j| {
            j != i
                && client()
                    .get(format!("http://127.0.0.1:{}/healthz", self.ports[j]))
                    .timeout(Duration::from_secs(2))
                    .send()
                    .is_ok_and(|r| r.status().is_success())
        });
        let Some(j) = host else {
            founder.get_or_insert(i);
            return;
        };
        let key = std::fs::read_to_string(self.data(j).join("local.key")).unwrap();
        let url = format!("http://127.0.0.1:{}", self.ports[j]);
        let mut code = None;
        wait_until(
            Duration::from_secs(30),
            "a pairing code from the shop",
            || {
                let r = client()
                    .post(format!("{url}/api/pair/offer"))
                    .bearer_auth(&key)
                    .header("content-type", "application/json")
                    .body("{}")
                    .send();
                code = r
                    .ok()
                    .filter(|r| r.status().is_success())
                    .and_then(|r| r.json::<Value>().ok())
                    .and_then(|v| v["code"].as_str().map(str::to_string));
                code.is_some()
            },
        );
        let out = Command::new(env!("CARGO_BIN_EXE_tilld"))
            .args([
                "pair",
                "--code",
                &code.unwrap(),
                "--peer",
                &url,
                "--name",
                name,
                "--role",
                role,
            ])
            .arg("--data")
            .arg(self.data(i))
            .output()
            .expect("tilld pair runs");
        assert!(out.status.success(), "pairing {name} failed: {out:?}");
    }

    /// Node `i`'s data directory.
    pub fn data(&self, i: usize) -> PathBuf {
        self.dir.path().join(format!("node-{i}"))
    }

    /// Pairs node `i` (not started yet) with `host` as `role`.
    pub fn pair(&self, host: &Node, i: usize, name: &str, role: &str) {
        pair_with(host, &self.data(i), name, role);
    }

    /// Starts node `i` of the shop, every other node as a static peer, no mDNS.
    pub fn start(&self, i: usize, name: &str, extra: &[&str]) -> Node {
        let role = if extra.contains(&"screen") {
            "screen"
        } else {
            "hub-eligible"
        };
        self.pair_before_first_start(i, name, role);
        self.start_unpaired(i, name, extra)
    }

    /// Pairs the shop's devices the way a shop does it: the manager's PC (`host`) is switched on
    /// and every other node is paired with it; then it is switched off again (SIGTERM), ready
    /// for the test to start the shop in any order.
    pub fn provision(
        &self,
        host: usize,
        host_name: &str,
        host_args: &[&str],
        others: &[(usize, &str)],
    ) {
        let node = self.start(host, host_name, host_args);
        for (i, name) in others {
            self.pair_before_first_start(*i, name, "hub-eligible");
        }
        let pid = node.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let mut node = node;
        node.child.wait().unwrap();
    }

    /// Starts node `i` as it is, paired or not (a guest's laptop naming the shop).
    pub fn start_unpaired(&self, i: usize, name: &str, extra: &[&str]) -> Node {
        let listen = format!("127.0.0.1:{}", self.ports[i]);
        let peers: Vec<String> = self
            .ports
            .iter()
            .filter(|p| **p != self.ports[i])
            .map(|p| format!("http://127.0.0.1:{p}"))
            .collect();
        let mut args: Vec<&str> = vec![
            "--role",
            "auto",
            "--name",
            name,
            "--listen",
            &listen,
            "--no-mdns",
        ];
        for p in &peers {
            args.extend(["--peer", p.as_str()]);
        }
        args.extend(extra);
        Node::spawn(&self.data(i), &args)
    }
}

/// Waits until a follower is online and holds the shop's history (the history copy behind its
/// day snapshot is done: its pages are requests too).
pub fn wait_settled(node: &Node) {
    wait_until(
        Duration::from_secs(10),
        "online with the shop's history",
        || {
            let s = status(node);
            s["state"] == "online" && s["history_copying"].is_null()
        },
    );
}

/// Waits until `hub` is hub and every one of `others` follows it, online, holding the shop's
/// history (a node that joined copies it behind its day snapshot, and may lead only after);
/// returns how long.
pub fn wait_for_hub(hub: &Node, others: &[&Node], timeout: Duration) -> Duration {
    let start = Instant::now();
    wait_until(
        timeout,
        &format!("{} to be hub, followed by all", hub.url),
        || {
            let h = status(hub);
            h["role"] == "hub"
                && others.iter().all(|o| {
                    let s = status(o);
                    s["hub_url"] == hub.url.as_str()
                        && s["state"] == "online"
                        && s["history_copying"].is_null()
                })
        },
    );
    start.elapsed()
}

/// One sale with a client-made order id: the order, two lines and a cash payment.
pub fn sale(till: &Node, shift: &str, order: &str) -> u16 {
    let (status, answer) = till.mutate(&[
        ("order_header", "insert", json!({"id": order, "shift_id": shift, "opened_at": T})),
        ("order_line", "insert", json!({"id": new_id(), "order_id": order, "name_en": "Falafel wrap", "qty": 2, "unit_price": 1400, "created_at": T})),
        ("order_payment", "insert", json!({"id": new_id(), "order_id": order, "method": "card", "amount": 2800, "paid_at": T})),
    ]);
    assert!(
        status == 200 || status == 202,
        "a till must take every sale, hub or no hub: {status} {answer}"
    );
    status
}

pub fn orders(node: &Node) -> Vec<Value> {
    node.get("/api/tables/order_header").1["rows"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

pub fn drained(node: &Node) -> bool {
    let s = status(node);
    s["pending"] == 0 && s["state"] == "online"
}

/// Nothing `node` queued was refused by a hub (its outbox shows why if so).
pub fn assert_nothing_refused(node: &Node) {
    assert_eq!(
        status(node)["rejected"],
        0,
        "{} refused writes: {:?}",
        node.url,
        node.get("/api/outbox").1
    );
}

/// Waits until every node in `nodes` holds entity `entity` `id` (a cashier can pick a shift
/// only once their till's screen shows it).
pub fn wait_to_hold(nodes: &[&Node], entity: &str, id: &str) {
    wait_until(
        Duration::from_secs(20),
        &format!("every node to hold {entity} {id}"),
        || {
            nodes
                .iter()
                .all(|n| n.get(&format!("/api/entities/{entity}/{id}")).0 == 200)
        },
    );
}

/// Prunes the store at `db` (its node stopped) as of a week and a day from now: the closed
/// day's journal, tombstones and mutation ids go, as the node's daily schedule drops them.
pub fn prune_a_week_later(
    db: &Path,
    durability: capsule_store::Durability,
) -> capsule_store::Pruned {
    let schema = std::sync::Arc::new(capsule_protocol::Schema::builtin());
    let store = capsule_store::Store::open_with(db, schema, durability).unwrap();
    let later = capsule_protocol::now_ms() + (capsule_store::KEEP_DAYS + 1) * 24 * 3600 * 1000;
    let pruned = store.prune_history(later).unwrap();
    assert!(pruned.journal > 0, "{db:?}: nothing to prune ({pruned:?})");
    pruned
}

/// `tilld pair` for the device at `data` with `code`, shown by `host`.
pub fn pair_device(
    host: &Node,
    code: &str,
    data: &Path,
    name: &str,
    role: &str,
) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_tilld"))
        .args([
            "pair", "--code", code, "--peer", &host.url, "--name", name, "--role", role,
        ])
        .arg("--data")
        .arg(data)
        .output()
        .expect("tilld pair runs")
}

/// A new pairing code from `host` ("Add a device").
pub fn new_code(host: &Node) -> String {
    let (status, offer) = host.post_raw("/api/pair/offer", "{}");
    assert_eq!(status, 200, "{offer}");
    offer["code"].as_str().unwrap().to_string()
}

/// Pairs the device at `data` with `host` as `role`, asserting it paired.
pub fn pair_with(host: &Node, data: &Path, name: &str, role: &str) {
    let out = pair_device(host, &new_code(host), data, name, role);
    assert!(out.status.success(), "pairing {name} failed: {out:?}");
}

/// A paired device the test itself holds (hub-eligible), to reach nodes over TLS where the
/// launch key does not count; it trusts the nodes whose data directories it is told of.
pub struct Operator {
    pub data: PathBuf,
    roster: capsule_trust::Roster,
    known: std::sync::Mutex<Vec<serde_json::Map<String, Value>>>,
}

impl Operator {
    pub fn new(data: &Path) -> Operator {
        let me = capsule_trust::Identity::load_or_create(data).unwrap();
        Operator {
            data: data.to_path_buf(),
            roster: capsule_trust::Roster::new(me.device_id().clone(), vec![]),
            known: std::sync::Mutex::new(vec![]),
        }
    }

    /// Trusts the node whose data directory is `data` (and itself).
    pub fn trust(&self, data: &Path) {
        let row = |of: &capsule_trust::Identity| {
            let mut r = serde_json::Map::new();
            r.insert("id".into(), of.device_id().to_string().into());
            r.insert("role".into(), "hub-eligible".into());
            r.insert(
                "public_key".into(),
                capsule_trust::roster::encode(&of.public_key_der()).into(),
            );
            r
        };
        let mut known = self.known.lock().unwrap();
        for d in [data, self.data.as_path()] {
            known.push(row(&capsule_trust::Identity::load_or_create(d).unwrap()));
        }
        self.roster.reload(&known);
    }

    /// A TLS client as this device.
    pub fn client(&self) -> reqwest::blocking::Client {
        let me = capsule_trust::Identity::load_or_create(&self.data).unwrap();
        reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(20))
            .use_preconfigured_tls(
                capsule_trust::tls::client_config(&me, self.roster.clone())
                    .as_ref()
                    .clone(),
            )
            .build()
            .unwrap()
    }
}

/// A browser asks `hub` to pair as a screen (`name`, `role`), `approve` approves it (given the
/// approval route's path: a manager's session, or this machine's own key), and the browser
/// collects its cookie: the `name=value` it sends from then on.
pub fn pair_browser(
    hub: &Node,
    name: &str,
    role: &str,
    approve: impl FnOnce(&str) -> (u16, Value),
) -> String {
    let asked: Value = client()
        .post(format!("{}/api/pair/screen", hub.url))
        .header("content-type", "application/json")
        .body(json!({"name": name, "role": role}).to_string())
        .send()
        .unwrap()
        .json()
        .unwrap();
    let id = asked["id"].as_str().unwrap();
    let (code, body) = approve(&format!("/api/pair/screens/{id}/approve"));
    assert_eq!(code, 200, "{body}");
    let answer = client()
        .get(format!(
            "{}/api/pair/screen/{id}?poll={}",
            hub.url,
            asked["poll"].as_str().unwrap()
        ))
        .send()
        .unwrap();
    answer
        .headers()
        .get("set-cookie")
        .and_then(|c| c.to_str().ok())
        .and_then(|c| c.split(';').next())
        .expect("the approved browser's cookie")
        .to_string()
}
