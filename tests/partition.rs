//! A real network partition: three `tilld --role auto` nodes, each in its own network
//! namespace on one bridge. Cutting one till off (blackhole routes both ways) lets it elect
//! itself and keep selling while the manager's side sells too; when the network heals one
//! hub steps down, its writes are replayed into the winner, and every node converges with
//! every sale exactly once. Needs root and `ip` (CI runs as root); skipped with the reason
//! otherwise.

mod common;

use std::collections::HashSet;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use capsule_store::Durability;
use common::*;
use serde_json::{Value, json};

/// Runs `ip ARGS`, panicking with its message when it fails.
fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("ip runs");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Why namespaces cannot be used here, if they cannot: every kind of object the test makes
/// (a namespace, a bridge, a veth pair moved into the namespace) is tried once.
fn unavailable() -> Option<String> {
    let tag = format!("{}", std::process::id() % 10_000);
    let (ns, br, veth, peer) = (
        format!("capprobe{tag}"),
        format!("capprbr{tag}"),
        format!("capprv{tag}"),
        format!("capprp{tag}"),
    );
    let steps: [&[&str]; 4] = [
        &["netns", "add", &ns],
        &["link", "add", &br, "type", "bridge"],
        &["link", "add", &veth, "type", "veth", "peer", "name", &peer],
        &["link", "set", &peer, "netns", &ns],
    ];
    let mut why = None;
    for step in steps {
        match Command::new("ip").args(step).output() {
            Err(e) => {
                why = Some(format!("no `ip` command ({e})"));
                break;
            }
            Ok(o) if !o.status.success() => {
                why = Some(format!(
                    "`ip {}` failed ({}); run as root on a kernel with bridges and veth",
                    step.join(" "),
                    String::from_utf8_lossy(&o.stderr).trim()
                ));
                break;
            }
            Ok(_) => {}
        }
    }
    for undo in [
        &["link", "del", &veth][..],
        &["link", "del", &br],
        &["netns", "del", &ns],
    ] {
        let _ = Command::new("ip").args(undo).stderr(Stdio::null()).status();
    }
    why
}

/// A bridge and one namespace per node, removed on drop.
/// `tilld pair` of the device at `data` with the code `host` shows.
fn pair_at(host: &str, code: &str, data: &std::path::Path, name: &str) {
    let out = Command::new(env!("CARGO_BIN_EXE_tilld"))
        .args([
            "pair",
            "--code",
            code,
            "--peer",
            host,
            "--name",
            name,
            "--role",
            "hub-eligible",
        ])
        .arg("--data")
        .arg(data)
        .output()
        .unwrap();
    assert!(out.status.success(), "pairing {name}: {out:?}");
}

struct Net {
    tag: String,
    nodes: usize,
    operator: Operator,
    _operator_dir: tempfile::TempDir,
}

impl Net {
    fn new(nodes: usize) -> Net {
        let tag = format!("{}", std::process::id() % 10_000);
        let operator_dir = tempfile::tempdir().unwrap();
        let net = Net {
            tag,
            nodes,
            operator: Operator::new(operator_dir.path()),
            _operator_dir: operator_dir,
        };
        let br = net.bridge();
        ip(&["link", "add", &br, "type", "bridge"]);
        ip(&["addr", "add", "10.77.0.254/24", "dev", &br]);
        ip(&["link", "set", &br, "up"]);
        for n in 0..nodes {
            let (ns, veth, peer) = (
                net.ns(n),
                format!("cv{}n{n}", net.tag),
                format!("cp{}n{n}", net.tag),
            );
            ip(&["netns", "add", &ns]);
            ip(&["link", "add", &veth, "type", "veth", "peer", "name", &peer]);
            ip(&["link", "set", &peer, "netns", &ns]);
            ip(&["-n", &ns, "link", "set", &peer, "name", "eth0"]);
            // A machine's loopback is always up; a new namespace's is not.
            ip(&["-n", &ns, "link", "set", "lo", "up"]);
            ip(&[
                "-n",
                &ns,
                "addr",
                "add",
                &format!("{}/24", net.addr(n)),
                "dev",
                "eth0",
            ]);
            ip(&["-n", &ns, "link", "set", "eth0", "up"]);
            ip(&["-n", &ns, "link", "set", "lo", "up"]);
            ip(&["link", "set", &veth, "master", &br, "up"]);
        }
        net
    }

    fn bridge(&self) -> String {
        format!("capbr{}", self.tag)
    }

    fn ns(&self, n: usize) -> String {
        format!("capns{}n{n}", self.tag)
    }

    fn addr(&self, n: usize) -> String {
        format!("10.77.0.{}", n + 1)
    }

    /// Cuts `n` off from every other node (both ways); the test host still reaches all.
    fn isolate(&self, n: usize, on: bool) {
        let verb = if on { "add" } else { "del" };
        for m in (0..self.nodes).filter(|m| *m != n) {
            ip(&[
                "-n",
                &self.ns(n),
                "route",
                verb,
                "blackhole",
                &format!("{}/32", self.addr(m)),
            ]);
            ip(&[
                "-n",
                &self.ns(m),
                "route",
                verb,
                "blackhole",
                &format!("{}/32", self.addr(n)),
            ]);
        }
    }

    /// Starts node `n`, paired before its first start: node 0 founds the shop's roster with the
    /// test's own operator device (paired while node 0 is still open), every other node is
    /// paired with node 0 through a code the operator asks for over TLS.
    fn spawn(&self, n: usize, data: &std::path::Path, name: &str, extra: &[&str]) -> Node {
        let first_start = !data.join("node.sqlite3").exists();
        let node0 = format!("http://{}:7700", self.addr(0));
        if first_start && n > 0 {
            let offer: Value = self
                .operator
                .client()
                .post(format!(
                    "{}/api/pair/offer",
                    node0.replace("http://", "https://")
                ))
                .header("content-type", "application/json")
                .body("{}")
                .send()
                .unwrap()
                .json()
                .unwrap();
            pair_at(&node0, offer["code"].as_str().unwrap(), data, name);
        }
        let mut node = self.spawn_as_is(n, data, name, extra);
        if first_start && n == 0 {
            let mut code = String::new();
            wait_until(
                Duration::from_secs(20),
                "a code from the first node",
                || {
                    let (status, offer) = node.post_raw("/api/pair/offer", "{}");
                    code = offer["code"].as_str().unwrap_or_default().to_string();
                    status == 200
                },
            );
            pair_at(&node0, &code, &self.operator.data, "Test operator");
        }
        self.operator.trust(data);
        node.operator = Some(self.operator.client());
        node
    }

    fn spawn_as_is(&self, n: usize, data: &std::path::Path, name: &str, extra: &[&str]) -> Node {
        let listen = format!("{}:7700", self.addr(n));
        let mut args: Vec<String> = vec![
            "netns".into(),
            "exec".into(),
            self.ns(n),
            env!("CARGO_BIN_EXE_tilld").into(),
            "--role".into(),
            "auto".into(),
            "--name".into(),
            name.into(),
            "--listen".into(),
            listen,
            "--no-mdns".into(),
            "--data".into(),
            data.display().to_string(),
        ];
        for m in (0..self.nodes).filter(|m| *m != n) {
            args.push("--peer".into());
            args.push(format!("http://{}:7700", self.addr(m)));
        }
        args.extend(extra.iter().map(|s| s.to_string()));
        let mut cmd = Command::new("ip");
        cmd.args(&args).stdout(Stdio::piped()).stderr(Stdio::null());
        Node::from_command(cmd, data)
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        for n in 0..self.nodes {
            let _ = Command::new("ip")
                .args(["netns", "del", &self.ns(n)])
                .status();
        }
        let _ = Command::new("ip")
            .args(["link", "del", &self.bridge()])
            .status();
    }
}

fn sale(node: &Node, shift: &str) -> String {
    let order = new_id();
    let (code, answer) = node.mutate(&[
        ("order_header", "insert", json!({"id": order, "shift_id": shift, "opened_at": T})),
        ("order_line", "insert", json!({"id": new_id(), "order_id": order, "name_en": "Mint tea", "qty": 1, "unit_price": 900, "created_at": T})),
    ]);
    assert!(code == 200 || code == 202, "sale refused: {code} {answer}");
    order
}

#[test]
fn both_sides_of_a_partition_sell_and_every_sale_lands_once_after_it_heals() {
    partition(false);
}

/// The same a week and more after a Z: every node pruned the closed day's journal, tombstones
/// and mutation ids (what their daily schedule does) before the network splits.
#[test]
fn after_a_week_of_pruning_both_sides_of_a_partition_sell_and_every_sale_lands_once() {
    partition(true);
}

/// The nodes stopped, their stores pruned as of a week and a day from now, started again.
fn prune_all(net: &Net, dir: &std::path::Path, nodes: [Node; 3]) -> [Node; 3] {
    let names = ["Manager PC", "Till 1", "Till 2"];
    let dirs = ["m", "t1", "t2"];
    for (k, node) in nodes.into_iter().enumerate() {
        let db = node.db();
        node.kill9();
        let durability = if k == 0 {
            Durability::Full
        } else {
            Durability::Replica
        };
        prune_a_week_later(&db, durability);
    }
    let start = |k: usize, extra: &[&str]| net.spawn(k, &dir.join(dirs[k]), names[k], extra);
    [
        start(0, &["--priority", "10"]),
        start(1, &[]),
        start(2, &[]),
    ]
}

/// One network at a time: the namespaces, the bridge and the addresses are named per process.
static ONE_NETWORK: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn partition(pruned: bool) {
    let _network = ONE_NETWORK.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(why) = unavailable() {
        eprintln!("SKIPPED: a real partition needs network namespaces: {why}");
        return;
    }
    let net = Net::new(3);
    let dir = tempfile::tempdir().unwrap();
    let manager = net.spawn(
        0,
        &dir.path().join("m"),
        "Manager PC",
        &["--priority", "10"],
    );
    let till = net.spawn(1, &dir.path().join("t1"), "Till 1", &[]);
    let cut = net.spawn(2, &dir.path().join("t2"), "Till 2", &[]);
    let all_follow = |manager: &Node, till: &Node, cut: &Node| {
        wait_until(
            Duration::from_secs(30),
            "the manager to be hub for all",
            || {
                status(manager)["role"] == "hub"
                    && [till, cut].iter().all(|t| {
                        status(t)["hub_url"] == manager.url.as_str()
                            && status(t)["state"] == "online"
                    })
            },
        );
    };
    all_follow(&manager, &till, &cut);
    let shift = new_id();
    manager.apply(&[(
        "pos_shift",
        "save",
        json!({"id": shift, "node_id": "till-1", "cashier": "Mona", "opened_at": T}),
    )]);
    wait_to_hold(&[&till, &cut], "shift", &shift);
    let mut sold = vec![sale(&till, &shift)];
    wait_until(Duration::from_secs(20), "the first sale everywhere", || {
        status(&till)["pending"] == 0 && count(&cut.db(), "order_header") == 1
    });
    let (manager, till, cut) = if pruned {
        let (code, z) = manager.post_raw("/api/reports/z", r#"{"taken_by":"Manager","number":1}"#);
        assert!(code == 200 || code == 201, "Z #1: {code} {z}");
        wait_until(Duration::from_secs(20), "every node to hold the Z", || {
            [&till, &cut].iter().all(|n| {
                n.get("/api/reports/z").1["reports"]
                    .as_array()
                    .is_some_and(|r| r.len() == 1)
            })
        });
        let [manager, till, cut] = prune_all(&net, dir.path(), [manager, till, cut]);
        all_follow(&manager, &till, &cut);
        (manager, till, cut)
    } else {
        (manager, till, cut)
    };

    net.isolate(2, true);
    let cut_at = Instant::now();
    wait_until(
        Duration::from_secs(20),
        "the cut-off till to elect itself",
        || status(&cut)["role"] == "hub",
    );
    eprintln!(
        "the cut-off side had its own hub after {:?}",
        cut_at.elapsed()
    );
    for _ in 0..5 {
        sold.push(sale(&cut, &shift));
        sold.push(sale(&till, &shift));
        sold.push(sale(&manager, &shift));
    }

    net.isolate(2, false);
    wait_until(
        Duration::from_secs(30),
        "one hub again, followed by all",
        || {
            let hubs: Vec<Value> = [&manager, &till, &cut]
                .iter()
                .map(|n| status(n))
                .filter(|s| s["role"] == "hub")
                .collect();
            hubs.len() == 1
                && [&manager, &till, &cut].iter().all(|n| {
                    let s = status(n);
                    s["pending"] == 0
                        && (s["role"] == "hub"
                            || (s["state"] == "online" && s["hub_node_id"] == hubs[0]["node_id"]))
                })
        },
    );
    let hub = [&manager, &till, &cut]
        .into_iter()
        .find(|n| status(n)["role"] == "hub")
        .unwrap();
    let others: Vec<&Node> = [&manager, &till, &cut]
        .into_iter()
        .filter(|n| n.url != hub.url)
        .collect();
    assert_converges(hub, &others);
    let rows = hub.get("/api/tables/order_header").1["rows"]
        .as_array()
        .cloned()
        .unwrap();
    let ids: Vec<&str> = rows.iter().filter_map(|r| r["id"].as_str()).collect();
    let unique: HashSet<&str> = ids.iter().copied().collect();
    assert_eq!(ids.len(), unique.len(), "an order twice");
    for o in &sold {
        assert!(
            unique.contains(o.as_str()),
            "sale {o} lost in the partition"
        );
    }
    assert_eq!(ids.len(), sold.len());
    assert_eq!(count(&hub.db(), "order_line"), sold.len() as i64);
    for n in [&manager, &till, &cut] {
        assert_eq!(status(n)["rejected"], 0, "nothing set aside on {}", n.url);
    }
}
