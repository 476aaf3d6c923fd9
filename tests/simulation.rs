//! Deterministic simulation of a shop over many seeds: random partitions, crashes and
//! restarts, sales rung up on every side. The real store (SQLite files) and the real election
//! rule run; the network is replaced by a seeded scheduler that decides who reaches whom, so
//! a failing seed replays exactly (`SIM_SEED=N cargo test --test simulation`).
//!
//! After the network heals and every node is back: one hub; every replica holds the same
//! data; every sale a till or hub acknowledged is at the hub exactly once; within one
//! connected group there is never more than one hub per term.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;

use capsule_mesh::{Member, Situation, Verdict, decide};
use capsule_protocol::{Action, Capsule, Lineage, Mutation, MutationBatch, Schema};
use capsule_store::{ApplyMode, Durability, Store, StoreError, meta};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::json;

const T: &str = "2026-11-25T12:00:00Z";
const NODES: usize = 4;
const CHAOS_TICKS: usize = 60;
const HEAL_TICKS: usize = 80;

struct Hub {
    lineage: Lineage,
    fenced_ticks: u32,
}

struct SimNode {
    name: String,
    path: PathBuf,
    store: Option<Arc<Store>>,
    eligible: bool,
    priority: i64,
    hub: Option<Hub>,
    following: Option<usize>,
}

struct Sim {
    _dir: tempfile::TempDir,
    rng: StdRng,
    nodes: Vec<SimNode>,
    /// `group[i]`: nodes in the same group reach each other; no one reaches another group.
    group: Vec<usize>,
    acked: Vec<String>,
    log: Vec<String>,
    /// Two hubs of one term in one group at the end of the last round.
    clashed: bool,
}

fn open(path: &PathBuf) -> Arc<Store> {
    let store = Store::open_with(path, Arc::new(Schema::builtin()), Durability::Replica).unwrap();
    store.set_authority(false);
    Arc::new(store)
}

impl Sim {
    fn new(seed: u64) -> Sim {
        // tmpfs when there is one: real SQLite files, without a disk's fsync per commit.
        let dir = if std::path::Path::new("/dev/shm").is_dir() {
            tempfile::tempdir_in("/dev/shm").unwrap()
        } else {
            tempfile::tempdir().unwrap()
        };
        let nodes = (0..NODES)
            .map(|i| {
                let path = dir.path().join(format!("node-{i}.sqlite3"));
                // Fixed node ids: ties are broken by id, so a seed replays exactly.
                let conn = capsule_store::rusqlite::Connection::open(&path).unwrap();
                conn.execute_batch(&format!(
                    "CREATE TABLE _meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
                     INSERT INTO _meta VALUES ('node_id', 'node-{i}');"
                ))
                .unwrap();
                drop(conn);
                SimNode {
                    name: format!("n{i}"),
                    store: Some(open(&path)),
                    path,
                    // The last node is a kitchen screen: it follows, never leads.
                    eligible: i + 1 < NODES,
                    priority: if i == 0 { 10 } else { 1 },
                    hub: None,
                    following: None,
                }
            })
            .collect();
        Sim {
            _dir: dir,
            rng: StdRng::seed_from_u64(seed),
            nodes,
            group: vec![0; NODES],
            acked: Vec::new(),
            log: Vec::new(),
            clashed: false,
        }
    }

    fn alive(&self, i: usize) -> bool {
        self.nodes[i].store.is_some()
    }

    fn reach(&self, a: usize, b: usize) -> bool {
        self.alive(a) && self.alive(b) && self.group[a] == self.group[b]
    }

    fn store(&self, i: usize) -> &Arc<Store> {
        self.nodes[i].store.as_ref().expect("alive")
    }

    fn member(&self, i: usize) -> Member {
        let n = &self.nodes[i];
        let s = self.store(i);
        let lineage = n
            .hub
            .as_ref()
            .map(|h| h.lineage.clone())
            .unwrap_or_default();
        Member {
            node_id: s.node_id().to_string(),
            name: n.name.clone(),
            url: n.name.clone(),
            eligible: n.eligible,
            priority: n.priority,
            fresh: s.freshness().unwrap(),
            term: s.term().unwrap(),
            hub_term: lineage.term,
            claimed_from: lineage.from_v,
            prev_hub: lineage.prev_hub,
            prev_term: lineage.prev_term,
            handover_to: None,
        }
    }

    fn index_of(&self, node_id: &str) -> usize {
        (0..NODES)
            .find(|i| self.alive(*i) && self.store(*i).node_id() == node_id)
            .expect("a live member")
    }

    /// Random faults during service.
    fn chaos(&mut self) {
        match self.rng.random_range(0..20) {
            0 => {
                let split = self.rng.random_range(1..NODES);
                let mut order: Vec<usize> = (0..NODES).collect();
                for i in (1..NODES).rev() {
                    order.swap(i, self.rng.random_range(0..=i));
                }
                for (k, i) in order.into_iter().enumerate() {
                    self.group[i] = usize::from(k >= split);
                }
                self.log.push(format!("partition {:?}", self.group));
            }
            1 => {
                self.group = vec![0; NODES];
                self.log.push("heal".into());
            }
            2 => {
                let i = self.rng.random_range(0..NODES);
                if self.alive(i) {
                    self.crash(i);
                }
            }
            3 => {
                let i = self.rng.random_range(0..NODES);
                if !self.alive(i) {
                    self.restart(i);
                }
            }
            _ => {}
        }
    }

    fn crash(&mut self, i: usize) {
        let n = &mut self.nodes[i];
        n.store = None;
        n.hub = None;
        n.following = None;
        self.log.push(format!("crash {}", n.name));
    }

    fn restart(&mut self, i: usize) {
        let n = &mut self.nodes[i];
        n.store = Some(open(&n.path));
        self.log.push(format!("restart {}", n.name));
    }

    /// A cashier rings up a sale on a random node; it counts once the node answered.
    fn sell(&mut self) {
        let i = self.rng.random_range(0..NODES);
        if !self.alive(i) || !self.nodes[i].eligible {
            return;
        }
        let order = uuid::Uuid::from_u128(self.rng.random()).to_string();
        let batch = MutationBatch {
            mutations: vec![
                mutation(
                    "order_header",
                    json!({"id": order, "shift_id": "S1", "opened_at": T}),
                ),
                mutation(
                    "order_line",
                    json!({"id": format!("{order}-l"), "order_id": order, "name_en": "Tea", "qty": 1, "unit_price": 500, "created_at": T}),
                ),
                mutation(
                    "order_payment",
                    json!({"id": format!("{order}-p"), "order_id": order, "method": "cash", "amount": 500, "paid_at": T}),
                ),
            ],
            source: None,
        };
        let s = self.store(i).clone();
        let ok = if self.nodes[i].hub.is_some() {
            // A hub fenced by a higher term refuses (the cashier sees an error, not an ack).
            match s.apply(
                &batch,
                &ApplyMode::Authoritative {
                    source: s.node_id().into(),
                },
            ) {
                Ok(_) => true,
                Err(StoreError::NotHub(_)) => false,
                Err(e) => panic!("a sale at hub {} failed: {e}", self.nodes[i].name),
            }
        } else {
            s.apply_local(&batch, &self.nodes[i].name.to_uppercase())
                .map_err(|e| format!("a sale at {} failed: {e}", self.nodes[i].name))
                .unwrap();
            true
        };
        if ok {
            self.log.push(format!(
                "sale {} at {}{}",
                &order[..8],
                self.nodes[i].name,
                if self.nodes[i].hub.is_some() {
                    " (hub)"
                } else {
                    ""
                }
            ));
            self.acked.push(order);
        }
    }

    /// Every live node runs the election on what it sees and acts as the node does.
    fn elect(&mut self) {
        for i in 0..NODES {
            if !self.alive(i) {
                continue;
            }
            let me = self.member(i);
            let live: Vec<Member> = (0..NODES)
                .filter(|j| *j != i && self.reach(i, *j))
                .map(|j| self.member(j))
                .collect();
            let verdict = decide(
                &me,
                &live,
                Situation {
                    settled: true,
                    quiet: false,
                },
            );
            let s = self.store(i).clone();
            match verdict {
                Verdict::Follow(h) => {
                    s.note_term(h.term).unwrap();
                    if s.was_hub().unwrap() {
                        s.step_down(Some(&h.lineage())).unwrap();
                    }
                    self.nodes[i].following = Some(self.index_of(&h.node_id));
                }
                Verdict::Claim { seen } => {
                    let claim = s.claim_hub(seen).unwrap();
                    self.log
                        .push(format!("{} claims term {}", self.nodes[i].name, claim.term));
                    self.nodes[i].hub = Some(Hub {
                        lineage: claim.lineage(),
                        fenced_ticks: 0,
                    });
                    self.nodes[i].following = None;
                }
                Verdict::StepDown(w) => {
                    s.step_down(Some(&w.lineage())).unwrap();
                    self.log
                        .push(format!("{} steps down for {}", self.nodes[i].name, w.name));
                    self.nodes[i].hub = None;
                    self.nodes[i].following = Some(self.index_of(&w.node_id));
                }
                Verdict::Fence => {
                    s.set_authority(false);
                    let hub = self.nodes[i].hub.as_mut().expect("a hub is fenced");
                    hub.fenced_ticks += 1;
                    if hub.fenced_ticks >= 3 {
                        s.step_down(None).unwrap();
                        self.nodes[i].hub = None;
                    }
                }
                Verdict::StayHub => {
                    let hub = self.nodes[i].hub.as_mut().expect("a hub stays");
                    hub.fenced_ticks = 0;
                    s.set_authority(true);
                    s.adopt_outbox().unwrap();
                }
                Verdict::HandOver(_) | Verdict::Wait => {}
            }
        }
        // Within a group that sees itself, at most one hub per term once a round is over:
        // two of one term meet only when a partition heals, and step down to one at once.
        let mut seen: HashMap<(usize, i64), usize> = HashMap::new();
        let mut clash = None;
        for i in (0..NODES).filter(|i| self.alive(*i)) {
            if let Some(h) = &self.nodes[i].hub
                && let Some(other) = seen.insert((self.group[i], h.lineage.term), i)
            {
                clash = Some((other, i));
            }
        }
        if let Some((a, b)) = clash {
            assert!(
                !self.clashed,
                "{} and {} both hub of one term in one group for two rounds; {}",
                self.nodes[a].name,
                self.nodes[b].name,
                self.log.join("; ")
            );
        }
        self.clashed = clash.is_some();
    }

    /// Followers that reach their hub drain their outbox into it and catch up from it.
    fn replicate(&mut self) {
        for i in 0..NODES {
            let Some(h) = self.nodes[i].following else {
                continue;
            };
            if self.nodes[i].hub.is_some() || !self.reach(i, h) {
                continue;
            }
            let Some(hub_lineage) = self.nodes[h].hub.as_ref().map(|x| x.lineage.clone()) else {
                continue;
            };
            let (till, hub) = (self.store(i).clone(), self.store(h).clone());
            if !hub.is_authority() {
                continue;
            }
            sync(&till, &hub, &hub_lineage);
            for _ in 0..4 {
                let Some(next) = till.outbox_next(till.node_id()).unwrap() else {
                    break;
                };
                match hub.apply(
                    &next.batch,
                    &ApplyMode::Authoritative {
                        source: till.node_id().into(),
                    },
                ) {
                    Ok(applied) => till
                        .outbox_confirmed(&next.request, &applied.results)
                        .unwrap(),
                    // As the till does: retry later (its parent is on its way).
                    Err(StoreError::NotHub(_) | StoreError::MissingParent(_)) => break,
                    Err(e) => {
                        till.outbox_rejected(&next.request, &e.to_string()).unwrap();
                    }
                }
            }
            sync(&till, &hub, &hub_lineage);
        }
    }

    /// One hub, every outbox empty, every replica equal to it.
    fn settled(&self) -> bool {
        let hubs: Vec<usize> = (0..NODES)
            .filter(|i| self.nodes[*i].hub.is_some())
            .collect();
        if hubs.len() != 1 {
            return false;
        }
        if (0..NODES).any(|i| self.store(i).outbox_counts().unwrap() != (0, 0)) {
            return false;
        }
        let digest = self.store(hubs[0]).digest().unwrap();
        (0..NODES).all(|i| self.store(i).digest().unwrap() == digest)
    }

    /// With SIM_DEBUG=TEXT: where the writes mentioning TEXT are, on every node.
    fn trace(&self, when: &str) {
        let Ok(needle) = std::env::var("SIM_DEBUG") else {
            return;
        };
        for n in &self.nodes {
            let c = capsule_store::rusqlite::Connection::open(&n.path).unwrap();
            let q = |sql: &str| -> Vec<String> {
                let mut st = c.prepare(sql).unwrap();
                st.query_map([format!("%{needle}%")], |r| r.get::<_, String>(0))
                    .unwrap()
                    .map(|r| r.unwrap())
                    .collect()
            };
            let j = q(
                "SELECT v || ':' || substr(mutation, 60, 40) FROM _journal WHERE mutation LIKE ?1",
            );
            let o = q("SELECT state || ':' || tbl FROM _outbox WHERE mutation LIKE ?1");
            let rows = q("SELECT id || ' _v=' || _v FROM order_header WHERE id LIKE ?1");
            let known = q(
                "SELECT m.mid FROM _mutation m JOIN _journal j ON j.mid = m.mid WHERE j.mutation LIKE ?1",
            );
            eprintln!(
                "[{when}] {}: journal {j:?} outbox {o:?} rows {rows:?} known {}",
                n.name,
                known.len()
            );
        }
    }

    fn tick(&mut self, chaos: bool) {
        if chaos {
            self.chaos();
            for _ in 0..self.rng.random_range(0..3) {
                self.sell();
            }
        }
        let before = self.log.len();
        self.elect();
        self.replicate();
        if self.log.len() > before {
            let what = self.log[before..].join(", ");
            self.trace(&what);
        }
    }
}

/// What a till's follow task does on (re)connecting and after each burst, through the same
/// store calls: catch up by version when its data is a prefix of the hub's, else snapshot;
/// record the hub's mids; move its position.
fn sync(till: &Store, hub: &Store, lineage: &Lineage) {
    let (local_hub, local_term) = till.followed_hub().unwrap();
    let same = local_hub.as_deref() == Some(hub.node_id()) && local_term == lineage.term;
    if !same && local_hub.is_some() {
        till.outbox_requeue_sent().unwrap();
    }
    let fresh = till.freshness().unwrap();
    let prefix = same
        || (lineage.prev_hub == local_hub
            && lineage.prev_term == local_term
            && fresh <= lineage.from_v);
    let mut top = fresh;
    let mut snapshot = local_hub.is_none() || !prefix;
    if !snapshot {
        match hub.changed_since(fresh, 5000) {
            Ok(changed) => {
                top = top.max(changed.v);
                for c in changed.items {
                    merge(till, hub, c);
                }
            }
            Err(StoreError::Gone(_)) => snapshot = true,
            Err(e) => panic!("changed_since: {e}"),
        }
    }
    if snapshot {
        let snap = hub.snapshot().unwrap();
        top = snap.v;
        till.load_snapshot(&snap).unwrap();
    }
    let after = till.meta_i64(meta::JOURNAL_VERSION).unwrap();
    till.record_journal(&hub.journal_since(after, top, 100_000).unwrap().entries)
        .unwrap();
    till.set_meta(meta::HUB_NODE_ID, hub.node_id()).unwrap();
    till.set_meta(meta::HUB_TERM, &lineage.term.to_string())
        .unwrap();
    till.advance_position(0, top).unwrap();
}

fn merge(till: &Store, hub: &Store, c: Capsule) {
    if c.gone {
        till.apply_gone(&c).unwrap();
        return;
    }
    // As a till does: child parts as deltas above the lowest part version held here, and
    // the whole entity again when a delta does not fit the local copy.
    let have = till
        .part_versions(&c.entity, &c.id)
        .unwrap()
        .and_then(|pv| pv.values().min().copied())
        .unwrap_or(0);
    let ids = std::slice::from_ref(&c.id);
    let pull = hub.pull_many_since(&c.entity, ids, None, &[have]).unwrap();
    if !till.merge_pulled(&pull).unwrap().incomplete.is_empty() {
        let whole = hub.pull_many(&c.entity, ids, None).unwrap();
        till.merge_pulled(&whole).unwrap();
    }
}

/// A few rows on which two replicas differ, for the failure message.
fn diff(a: &Store, b: &Store) -> String {
    let (sa, sb) = (a.snapshot().unwrap(), b.snapshot().unwrap());
    let mut out = Vec::new();
    for (table, rows) in &sa.tables {
        let other: HashSet<String> = sb.tables[table]
            .iter()
            .map(|r| serde_json::to_string(r).unwrap())
            .collect();
        let mine: HashSet<String> = rows
            .iter()
            .map(|r| serde_json::to_string(r).unwrap())
            .collect();
        for r in mine.difference(&other).take(2) {
            out.push(format!("hub {table}: {r}"));
        }
        for r in other.difference(&mine).take(2) {
            out.push(format!("node {table}: {r}"));
        }
    }
    out.join("\n")
}

fn mutation(table: &str, row: serde_json::Value) -> Mutation {
    Mutation::new(table, Action::Insert, row)
}

fn run(seed: u64) {
    let mut sim = Sim::new(seed);
    // Opening: the manager's PC becomes hub and opens the shift everyone sells into.
    sim.tick(false);
    let hub = (0..NODES)
        .find(|i| sim.nodes[*i].hub.is_some())
        .expect("a first hub");
    let s = sim.store(hub).clone();
    s.apply(
        &MutationBatch {
            mutations: vec![Mutation::new(
                "pos_shift",
                Action::Save,
                json!({"id": "S1", "node_id": "n0", "cashier": "Mona", "opened_at": T}),
            )],
            source: None,
        },
        &ApplyMode::Authoritative {
            source: "n0".into(),
        },
    )
    .unwrap();
    for _ in 0..3 {
        sim.tick(false);
    }
    for _ in 0..CHAOS_TICKS {
        sim.tick(true);
    }
    // Heal, everyone back, service continues quietly until all is settled.
    sim.group = vec![0; NODES];
    for i in 0..NODES {
        if !sim.alive(i) {
            sim.restart(i);
        }
    }
    sim.log.push("heal all".into());
    for _ in 0..HEAL_TICKS {
        sim.tick(false);
        if sim.settled() {
            break;
        }
    }
    let context = || format!("seed {seed}: {}", sim.log.join("; "));
    let hubs: Vec<usize> = (0..NODES).filter(|i| sim.nodes[*i].hub.is_some()).collect();
    assert_eq!(hubs.len(), 1, "one hub after healing; {}", context());
    let hub = sim.store(hubs[0]);
    let digest = hub.digest().unwrap();
    for i in 0..NODES {
        let s = sim.store(i);
        let (pending, rejected) = s.outbox_counts().unwrap();
        let refused: Vec<String> = s
            .outbox_list()
            .unwrap()
            .into_iter()
            .filter(|e| e.state == "rejected")
            .map(|e| format!("{} {} {}: {:?}", e.table, e.action, e.mid, e.error))
            .collect();
        if rejected > 0 && std::env::var_os("SIM_DEBUG").is_some() {
            let needle = std::env::var("SIM_DEBUG").unwrap();
            for n in &sim.nodes {
                let c = capsule_store::rusqlite::Connection::open(&n.path).unwrap();
                let mut st = c
                    .prepare("SELECT mid, v, mutation FROM _journal WHERE mutation LIKE ?1")
                    .unwrap();
                let rows: Vec<(String, i64, String)> = st
                    .query_map([format!("%{needle}%")], |r| {
                        Ok((r.get(0)?, r.get(1)?, r.get(2)?))
                    })
                    .unwrap()
                    .map(|r| r.unwrap())
                    .collect();
                for (mid, v, m) in rows {
                    let known: Vec<String> = sim
                        .nodes
                        .iter()
                        .map(|o| {
                            let c = capsule_store::rusqlite::Connection::open(&o.path).unwrap();
                            let k: bool = c
                                .query_row(
                                    "SELECT EXISTS(SELECT 1 FROM _mutation WHERE mid = ?1)",
                                    [&mid],
                                    |r| r.get(0),
                                )
                                .unwrap();
                            format!("{}:{k}", o.name)
                        })
                        .collect();
                    eprintln!(
                        "journal of {}: v={v} {} known {known:?}",
                        n.name,
                        &m[..60.min(m.len())]
                    );
                }
            }
        }
        assert_eq!(
            (pending, rejected),
            (0, 0),
            "{} drained, none refused: {refused:?}; {}",
            sim.nodes[i].name,
            context()
        );
        if s.digest().unwrap() != digest {
            panic!(
                "{} differs from the hub: {}; {}",
                sim.nodes[i].name,
                diff(hub, s),
                context()
            );
        }
    }
    let orders: Vec<String> = hub
        .table_rows("order_header")
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_string())
        .collect();
    let unique: HashSet<&String> = orders.iter().collect();
    assert_eq!(unique.len(), orders.len(), "an order twice; {}", context());
    for o in &sim.acked {
        assert!(
            unique.contains(o),
            "acknowledged sale {o} lost; {}",
            context()
        );
    }
    assert_eq!(
        orders.len(),
        sim.acked.len(),
        "a sale nobody acknowledged; {}",
        context()
    );
    let lines = hub.table_rows("order_line").unwrap().len();
    let payments = hub.table_rows("order_payment").unwrap().len();
    assert_eq!(
        (lines, payments),
        (orders.len(), orders.len()),
        "{}",
        context()
    );
}

#[test]
fn a_shop_under_partitions_and_crashes_converges_without_losing_or_doubling_a_sale() {
    if let Some(seed) = std::env::var("SIM_SEED").ok().and_then(|s| s.parse().ok()) {
        run(seed);
        return;
    }
    let seeds: u64 = std::env::var("SIM_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(500);
    // Seeds are independent: spread over the cores (each seed replays alone exactly).
    let workers = std::thread::available_parallelism()
        .map_or(2, |n| n.get())
        .min(4) as u64;
    std::thread::scope(|scope| {
        for w in 0..workers {
            scope.spawn(move || {
                for seed in (w..seeds).step_by(workers as usize) {
                    run(seed);
                }
            });
        }
    });
}
