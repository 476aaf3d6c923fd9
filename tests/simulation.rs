//! Deterministic simulation of a shop over many seeds, driving the real controller
//! (`capsule_node::control::Control`, the same code `tilld --role auto` runs) over the real
//! store (SQLite files) and the real election rule; the network, the clock and the processes
//! are replaced by a seeded scheduler that decides who reaches whom, who crashes, freezes or
//! restarts, so a failing seed replays exactly (`SIM_SEED=N cargo test --test simulation`).
//!
//! Faults: partitions, crashes and restarts from the node's own disk (after a snapshot too),
//! freezes (SIGSTOP: the node's clock runs on, it neither ticks nor gossips, and a request may
//! reach it the moment it wakes), the preferred node (the manager's PC) off every "night", a
//! claim that fails at its last step, a node restored from an old backup, and a foreign
//! lineage: a new PC (highest priority) that sets up a shop of its own, sells, then joins. Meanwhile
//! cashiers sell, send to the kitchen and take payments on every side, and the hub takes Z
//! reports.
//!
//! Checked while it runs: no write is accepted by a hub while a hub of a higher term serves
//! in its group; within one group at most one armed hub for more than a round; a hub within
//! 3 s of any fault in every group with an eligible node up. Checked after the network heals
//! and every node is back: one hub; every replica holds the same data; every acknowledged
//! sale and payment is at the hub exactly once; nothing is set aside; no order a Z counted
//! changed; no paid order reopened; terms used bounded by the faults.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use capsule_mesh::{Member, SelfUpdate};
use capsule_node::control::{Control, ControlConfig, Effect};
use capsule_protocol::{Action, Capsule, Lineage, Mutation, MutationBatch, Schema};
use capsule_store::{ApplyMode, Durability, Store, StoreError, meta};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::json;

const T: &str = "2026-11-25T12:00:00Z";
const NODES: usize = 5;
/// A kitchen screen: it follows, never leads.
const SCREEN: usize = 3;
/// A PC that sets up a shop of its own, off the network, then joins this one (another
/// lineage: its hub and its sales meet the shop's); it has the highest priority, so when the
/// two hubs meet it may well win, and the whole shop's data must survive in its hub.
const FOREIGN: usize = 4;
const CHAOS_TICKS: usize = 120;
const HEAL_TICKS: usize = 200;
/// One tick of the controller (`auto.rs` ticks every 100 ms).
const TICK: Duration = Duration::from_millis(100);
/// Ticks of silence before the others' failure detector declares a node dead (~1.2 s).
const DETECT_TICKS: usize = 12;
/// A hub within this many ticks (3 s) of the last fault.
const HUB_WITHIN_TICKS: usize = 30;
/// The manager's PC goes off every this many ticks and comes back after `NIGHT_TICKS`.
const DAY_TICKS: usize = 45;
const NIGHT_TICKS: usize = 12;

/// A Z report taken: its number, its last version, and the orders it counted.
type ZTaken = (i64, i64, BTreeMap<String, (String, Option<i64>, i64)>);

/// What a node gossips about itself, as its controller last told the mesh.
#[derive(Default, Clone)]
struct Gossip {
    fresh: i64,
    term: i64,
    hub_term: i64,
    claimed_from: i64,
    prev: Option<(String, i64)>,
    handover_to: Option<String>,
    /// What the controller last said of leading (None until it said: the configured role),
    /// as the mesh carries it (`SelfUpdate::eligible`).
    eligible: Option<bool>,
}

impl Gossip {
    fn apply(&mut self, u: &SelfUpdate) {
        if let Some(v) = u.fresh {
            self.fresh = v;
        }
        if let Some(v) = u.term {
            self.term = v;
        }
        if let Some(v) = u.hub_term {
            self.hub_term = v;
        }
        if let Some(v) = u.claimed_from {
            self.claimed_from = v;
        }
        if let Some(v) = &u.prev {
            self.prev = v.clone();
        }
        if let Some(v) = &u.handover_to {
            self.handover_to = v.clone();
        }
        if let Some(v) = u.eligible {
            self.eligible = Some(v);
        }
    }
}

struct SimNode {
    name: String,
    path: PathBuf,
    store: Option<Arc<Store>>,
    control: Option<Control>,
    gossip: Gossip,
    eligible: bool,
    priority: i64,
    /// The hub it serves as (its parts started), with its lineage.
    serving: Option<Lineage>,
    following: Option<usize>,
    /// Frozen since this tick (SIGSTOP): alive, but neither ticking nor answering.
    frozen_since: Option<usize>,
    frozen_until: usize,
    /// A copy of its data file taken earlier (a backup the shop could restore), and when.
    backup: Option<PathBuf>,
    /// It served as hub at some point since that backup (its disk may hold writes no other
    /// node has).
    led_since_backup: bool,
}

/// The virtual clock every store and controller reads.
struct SimClock {
    base: Instant,
    wall: SystemTime,
    ms: AtomicU64,
}

impl SimClock {
    fn now(&self) -> (Instant, SystemTime) {
        let d = Duration::from_millis(self.ms.load(Ordering::SeqCst));
        (self.base + d, self.wall + d)
    }
}

struct Sim {
    dir: tempfile::TempDir,
    rng: StdRng,
    clock: Arc<SimClock>,
    nodes: Vec<SimNode>,
    /// `group[i]`: nodes in the same group reach each other; no one reaches another group.
    group: Vec<usize>,
    tick_no: usize,
    chaos: bool,
    last_fault: usize,
    faults: i64,
    /// Orders acknowledged, with the node that rang each up.
    acked: Vec<(String, usize)>,
    /// Orders whose payment was acknowledged, and how many payments were.
    paid: HashSet<String>,
    payments: usize,
    /// The Z reports the shop holds, with the orders each counted as the hub held them then.
    counted: Vec<ZTaken>,
    /// Zs taken that no other node holds yet: (number, to_v, what they counted).
    z_pending: Vec<ZTaken>,
    /// Numbers of Zs overtaken by a hub elected from older data. Such a Z's record, replayed
    /// into a lineage that has taken a Z of that number since, is set aside for the manager
    /// (two printed Zs #n: neither is rewritten), the one refusal the shop may end with.
    overtaken: HashSet<i64>,
    log: Vec<String>,
    /// Two armed hubs in one group at the end of the last round.
    clashed: bool,
    /// The manager asked for a Z this tick.
    z_due: bool,
    /// When the foreign PC, set up on its own, joins the shop.
    foreign_joins_at: Option<usize>,
    /// The node a request reaches the moment it wakes from a freeze, and since when it stood
    /// still.
    woke_now: Option<(usize, usize)>,
    /// Per node: the tick it last claimed at and who was in its group then.
    claimed: Vec<Option<(usize, Vec<bool>)>>,
}

fn open(path: &PathBuf, clock: &Arc<SimClock>) -> Arc<Store> {
    let c = clock.clone();
    let store = Store::open_with(path, Arc::new(Schema::builtin()), Durability::Replica)
        .unwrap()
        .with_clock(Arc::new(move || c.now()));
    store.set_authority(false);
    Arc::new(store)
}

fn control_for(n: &SimNode, now: Instant) -> Control {
    Control::new(
        ControlConfig {
            eligible: n.eligible,
            priority: n.priority,
            demo: false,
            handback_quiet: Duration::from_millis(300),
        },
        now,
    )
}

impl Sim {
    fn new(seed: u64) -> Sim {
        // tmpfs when there is one: real SQLite files, without a disk's fsync per commit.
        let dir = if std::path::Path::new("/dev/shm").is_dir() {
            tempfile::tempdir_in("/dev/shm").unwrap()
        } else {
            tempfile::tempdir().unwrap()
        };
        let clock = Arc::new(SimClock {
            base: Instant::now(),
            wall: SystemTime::now(),
            ms: AtomicU64::new(0),
        });
        let mut sim = Sim {
            rng: StdRng::seed_from_u64(seed),
            nodes: Vec::new(),
            group: vec![0; NODES],
            tick_no: 0,
            chaos: false,
            last_fault: 0,
            faults: 0,
            acked: Vec::new(),
            paid: HashSet::new(),
            payments: 0,
            counted: Vec::new(),
            z_pending: Vec::new(),
            overtaken: HashSet::new(),
            log: vec![format!("seed {seed}")],
            clashed: false,
            woke_now: None,
            claimed: vec![None; NODES],
            z_due: false,
            foreign_joins_at: None,
            clock,
            dir,
        };
        for i in 0..NODES {
            let path = sim.dir.path().join(format!("node-{i}.sqlite3"));
            // Fixed node ids: ties are broken by id, so a seed replays exactly.
            let conn = capsule_store::rusqlite::Connection::open(&path).unwrap();
            conn.execute_batch(&format!(
                "CREATE TABLE _meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
                 INSERT INTO _meta VALUES ('node_id', 'node-{i}');"
            ))
            .unwrap();
            drop(conn);
            sim.nodes.push(SimNode {
                name: format!("n{i}"),
                path,
                store: None,
                control: None,
                gossip: Gossip::default(),
                eligible: i != SCREEN,
                // n0 is the manager's PC.
                priority: match i {
                    0 => 10,
                    FOREIGN => 20,
                    _ => 1,
                },
                serving: None,
                following: None,
                frozen_since: None,
                frozen_until: 0,
                backup: None,
                led_since_backup: false,
            });
            if i != FOREIGN {
                sim.boot(i);
            }
        }
        sim
    }

    fn now(&self) -> Instant {
        self.clock.now().0
    }

    /// Starts node `i` from its disk, as `tilld` does: a store, a controller, its gossip.
    fn boot(&mut self, i: usize) {
        let store = open(&self.nodes[i].path, &self.clock);
        let now = self.now();
        let n = &mut self.nodes[i];
        n.gossip = Gossip {
            fresh: store.freshness().unwrap(),
            term: store.term().unwrap(),
            ..Gossip::default()
        };
        n.control = Some(control_for(n, now));
        n.store = Some(store);
        n.serving = None;
        n.following = None;
        n.frozen_since = None;
    }

    fn alive(&self, i: usize) -> bool {
        self.nodes[i].store.is_some()
    }

    fn awake(&self, i: usize) -> bool {
        self.alive(i) && self.nodes[i].frozen_since.is_none()
    }

    fn reach(&self, a: usize, b: usize) -> bool {
        self.awake(a) && self.awake(b) && self.group[a] == self.group[b]
    }

    /// Whether `a` still counts `b` among the live: reachable, or frozen so recently that the
    /// failure detector has not noticed (its gossip is what it said before it froze).
    fn seen_live(&self, a: usize, b: usize) -> bool {
        if self.reach(a, b) {
            return true;
        }
        self.alive(b)
            && self.group[a] == self.group[b]
            && self.nodes[b]
                .frozen_since
                .is_some_and(|t| self.tick_no - t < DETECT_TICKS)
    }

    fn store(&self, i: usize) -> &Arc<Store> {
        self.nodes[i].store.as_ref().expect("alive")
    }

    fn member(&self, i: usize) -> Member {
        let n = &self.nodes[i];
        let g = &n.gossip;
        Member {
            node_id: format!("node-{i}"),
            name: n.name.clone(),
            url: n.name.clone(),
            eligible: n.eligible && g.eligible.unwrap_or(true),
            priority: n.priority,
            fresh: g.fresh,
            term: g.term,
            hub_term: g.hub_term,
            claimed_from: g.claimed_from,
            prev_hub: g.prev.as_ref().map(|p| p.0.clone()),
            prev_term: g.prev.as_ref().map_or(0, |p| p.1),
            handover_to: g.handover_to.clone(),
        }
    }

    fn index_of(&self, node_id: &str) -> usize {
        node_id
            .strip_prefix("node-")
            .and_then(|n| n.parse().ok())
            .expect("a node id of the simulation")
    }

    fn fault(&mut self, what: String) {
        self.last_fault = self.tick_no;
        self.faults += 1;
        self.log.push(format!("[{}] {what}", self.tick_no));
    }

    /// Random faults during service.
    fn chaos(&mut self) {
        match self.rng.random_range(0..30) {
            0 => {
                let split = self.rng.random_range(1..NODES);
                let mut order: Vec<usize> = (0..NODES).collect();
                for i in (1..NODES).rev() {
                    order.swap(i, self.rng.random_range(0..=i));
                }
                for (k, i) in order.into_iter().enumerate() {
                    self.group[i] = usize::from(k >= split);
                }
                self.fault(format!("partition {:?}", self.group));
            }
            1 => {
                self.group = vec![0; NODES];
                self.fault("heal".into());
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
            4 => {
                let i = self.rng.random_range(0..NODES);
                if self.awake(i) {
                    let ticks = self.rng.random_range(3..40);
                    self.nodes[i].frozen_since = Some(self.tick_no);
                    self.nodes[i].frozen_until = self.tick_no + ticks;
                    self.fault(format!("freeze {} for {ticks} ticks", self.nodes[i].name));
                }
            }
            5 => self.z_due = true,
            6 => {
                let i = self.rng.random_range(0..SCREEN);
                if self.awake(i) {
                    let to = self.dir.path().join(format!("backup-{i}.sqlite3"));
                    capsule_store::backup_file(&self.nodes[i].path, &to).unwrap();
                    self.nodes[i].backup = Some(to);
                    self.nodes[i].led_since_backup = self.nodes[i].serving.is_some();
                    self.log
                        .push(format!("[{}] backup {}", self.tick_no, self.nodes[i].name));
                }
            }
            7 => {
                let i = self.rng.random_range(0..SCREEN);
                if !self.alive(i)
                    && let Some(b) = self.nodes[i].backup.take()
                {
                    // A new file, as a restore onto a replaced PC would be.
                    let path = self
                        .dir
                        .path()
                        .join(format!("node-{i}-restored-{}.sqlite3", self.tick_no));
                    std::fs::copy(&b, &path).unwrap();
                    self.nodes[i].path = path;
                    self.fault(format!(
                        "{} restored from an old backup",
                        self.nodes[i].name
                    ));
                    self.restart(i);
                }
            }
            8 if !self.alive(FOREIGN) && self.foreign_joins_at.is_none() => {
                self.boot(FOREIGN);
                self.group[FOREIGN] = 2;
                self.foreign_joins_at = Some(self.tick_no + self.rng.random_range(10..40));
                self.fault("a new PC sets up a shop of its own, off the network".into());
            }
            _ => {}
        }
        if self.foreign_joins_at == Some(self.tick_no) && self.alive(FOREIGN) {
            self.group[FOREIGN] = self.group[0];
            self.fault("the other shop's PC joins this one".into());
        }
        // The manager's PC is switched off every night and on every morning.
        if self.tick_no.is_multiple_of(DAY_TICKS) && self.alive(0) {
            self.crash(0);
        } else if self.tick_no % DAY_TICKS == NIGHT_TICKS && !self.alive(0) {
            self.restart(0);
        }
    }

    fn crash(&mut self, i: usize) {
        // A backup may replace this node's disk only if nothing lived on that disk alone (a
        // write only one disk held is lost with it, backup or not): it led no hub since the
        // backup, and nothing of its own waits to be sent.
        let s = self.store(i);
        let led_since = self.nodes[i].led_since_backup;
        if led_since || self.nodes[i].serving.is_some() || s.outbox_counts().unwrap() != (0, 0) {
            self.nodes[i].backup = None;
        }
        let n = &mut self.nodes[i];
        n.store = None;
        n.control = None;
        n.serving = None;
        n.following = None;
        n.frozen_since = None;
        let name = n.name.clone();
        self.fault(format!("crash {name}"));
    }

    fn restart(&mut self, i: usize) {
        self.boot(i);
        let name = self.nodes[i].name.clone();
        self.fault(format!("restart {name}"));
    }

    /// Frozen nodes whose time is up wake; a request reaches each before it has ticked.
    fn thaw(&mut self) {
        for i in 0..NODES {
            if let Some(since) = self.nodes[i].frozen_since
                && self.tick_no >= self.nodes[i].frozen_until
            {
                self.nodes[i].frozen_since = None;
                let name = self.nodes[i].name.clone();
                self.fault(format!("thaw {name}"));
                if self.nodes[i].eligible {
                    self.woke_now = Some((i, since));
                    self.sell_at(i);
                    self.woke_now = None;
                }
            }
        }
    }

    fn batch(mutations: Vec<Mutation>) -> MutationBatch {
        MutationBatch {
            mutations,
            source: None,
        }
    }

    /// Writes at node `i` as a cashier would: as hub when it serves as one, else locally
    /// (queued for the hub). True when acknowledged. A hub that just woke from standing still
    /// must not accept while a hub of a higher term serves that claimed in its group while it
    /// stood still (two groups that meet when a partition heals do, for a round, until they
    /// see each other: availability first; the loser's writes are replayed, and the clash
    /// check bounds it).
    fn write_at(&mut self, i: usize, batch: &MutationBatch, what: &str) -> bool {
        // A hub that claimed, in this node's group, while this node stood still.
        let claimed_meanwhile = |j: usize| match (self.woke_now, &self.claimed[j]) {
            (Some((w, since)), Some((at, group))) => w == i && *at >= since && group[i],
            _ => false,
        };
        let s = self.store(i).clone();
        if let Some(l) = &self.nodes[i].serving {
            match s.apply(
                batch,
                &ApplyMode::Authoritative {
                    source: s.node_id().into(),
                },
            ) {
                Ok(_) => {
                    let term = l.term;
                    if let Some(j) = (0..NODES).filter(|j| claimed_meanwhile(*j)).find(|j| {
                        *j != i
                            && self.reach(i, *j)
                            && self.nodes[*j]
                                .serving
                                .as_ref()
                                .is_some_and(|o| o.term > term)
                            && self.store(*j).is_authority()
                    }) {
                        panic!(
                            "{what} accepted by {} (term {term}) while {} serves a higher term in its group; {}",
                            self.nodes[i].name,
                            self.nodes[j].name,
                            self.log.join("; ")
                        );
                    }
                    true
                }
                // A hub fenced (or not yet sure it is still hub) refuses: the cashier sees an
                // error, not an acknowledgement. A closed day refuses too, and so does a node
                // that has not received the shift yet (its screen would not offer it).
                Err(
                    StoreError::NotHub(_) | StoreError::Conflict(_) | StoreError::MissingParent(_),
                ) => false,
                Err(e) => panic!("{what} at hub {} failed: {e}", self.nodes[i].name),
            }
        } else {
            let prefix = self.nodes[i].name.to_uppercase();
            match s.apply_local(batch, &prefix) {
                Ok(_) => true,
                Err(StoreError::Conflict(_) | StoreError::MissingParent(_)) => false,
                Err(e) => panic!("{what} at {} failed: {e}", self.nodes[i].name),
            }
        }
    }

    /// A cashier rings up an open order with one line on node `i`.
    fn sell_at(&mut self, i: usize) {
        let order = uuid::Uuid::from_u128(self.rng.random()).to_string();
        let batch = Sim::batch(vec![
            mutation(
                "order_header",
                json!({"id": order, "shift_id": "S1", "opened_at": T}),
            ),
            mutation(
                "order_line",
                json!({"id": format!("{order}-l"), "order_id": order, "name_en": "Tea", "qty": 1, "unit_price": 500, "created_at": T}),
            ),
        ]);
        if self.write_at(i, &batch, "a sale") {
            self.log.push(format!(
                "[{}] sale {} at {}{}",
                self.tick_no,
                &order[..8],
                self.nodes[i].name,
                if self.nodes[i].serving.is_some() {
                    " (hub)"
                } else {
                    ""
                }
            ));
            self.acked.push((order, i));
        }
    }

    /// Orders open in node `i`'s own view.
    fn open_orders_at(&self, i: usize) -> Vec<String> {
        self.store(i)
            .table_rows("order_header")
            .unwrap()
            .iter()
            .filter(|r| matches!(r["status"].as_str(), Some("open" | "sent")))
            .filter_map(|r| r["id"].as_str().map(str::to_string))
            .collect()
    }

    /// The cashier who rang an order up takes its payment (as their screen shows it open).
    fn pay_at(&mut self, i: usize) {
        let open: HashSet<String> = self.open_orders_at(i).into_iter().collect();
        let mine: Vec<String> = self
            .acked
            .iter()
            .filter(|(o, at)| *at == i && open.contains(o) && !self.paid.contains(o))
            .map(|(o, _)| o.clone())
            .collect();
        if mine.is_empty() {
            return;
        }
        let order = mine[self.rng.random_range(0..mine.len())].clone();
        let batch = Sim::batch(vec![
            mutation(
                "order_payment",
                json!({"id": format!("{order}-p"), "order_id": order, "method": "cash", "amount": 500, "paid_at": T}),
            ),
            Mutation::new(
                "order_header",
                Action::Merge,
                json!({"id": order, "status": "paid", "updated_at": T}),
            ),
        ]);
        if self.write_at(i, &batch, "a payment") {
            self.log.push(format!(
                "[{}] paid {} at {}",
                self.tick_no,
                &order[..8],
                self.nodes[i].name
            ));
            self.paid.insert(order);
            self.payments += 1;
        }
    }

    /// Another cashier sends an order their screen shows open to the kitchen (perhaps paid
    /// elsewhere meanwhile: that stale "sent" must never reopen it).
    fn send_at(&mut self, i: usize) {
        let open = self.open_orders_at(i);
        if open.is_empty() {
            return;
        }
        let order = open[self.rng.random_range(0..open.len())].clone();
        let batch = Sim::batch(vec![Mutation::new(
            "order_header",
            Action::Merge,
            json!({"id": order, "status": "sent", "updated_at": T}),
        )]);
        if self.write_at(i, &batch, "a send to the kitchen") {
            self.log.push(format!(
                "[{}] sent {} at {}",
                self.tick_no,
                &order[..8],
                self.nodes[i].name
            ));
        }
    }

    /// The manager takes a Z report at the hub, when the shop is whole (one group, one hub:
    /// a Z taken on the losing side of a partition is replayed into the winner, which files
    /// its orders in its own day, a limitation the README states); what it counts is noted.
    fn take_z(&mut self) {
        let hubs: Vec<usize> = (0..NODES)
            .filter(|h| {
                self.awake(*h) && self.nodes[*h].serving.is_some() && self.store(*h).is_authority()
            })
            .collect();
        let copies = (0..NODES)
            .filter(|i| {
                self.awake(*i) && self.nodes[*i].eligible && self.nodes[*i].serving.is_none()
            })
            .count();
        if hubs.len() != 1 || copies == 0 {
            return;
        }
        if (0..NODES).any(|i| self.alive(i) && self.group[i] != self.group[hubs[0]]) {
            return;
        }
        let h = hubs[0];
        let s = self.store(h).clone();
        let (report, m) = s.plan_z_report(Some("Manager")).unwrap();
        match s.apply(
            &Sim::batch(vec![m]),
            &ApplyMode::Authoritative {
                source: s.node_id().into(),
            },
        ) {
            Ok(_) => {}
            Err(StoreError::NotHub(_)) => return,
            Err(e) => panic!("Z at {} failed: {e}", self.nodes[h].name),
        }
        let mut counted = BTreeMap::new();
        for r in s.table_rows("order_header").unwrap() {
            let Some(v) = r["finished_v"].as_i64() else {
                continue;
            };
            if v > report.to_v {
                continue;
            }
            let id = r["id"].as_str().unwrap().to_string();
            let row = (
                r["status"].as_str().unwrap_or("").to_string(),
                r["finished_v"].as_i64(),
                r["total"].as_i64().unwrap_or(0),
            );
            if let Some(before) = self.counted.iter().find_map(|z| z.2.get(&id)) {
                assert_eq!(
                    before,
                    &row,
                    "order {id} a Z counted changed before the next Z; {}",
                    self.log.join("; ")
                );
            }
            counted.insert(id, row);
        }
        self.log.push(format!(
            "[{}] Z #{} at {} counts {}",
            self.tick_no,
            report.number.unwrap_or(0),
            self.nodes[h].name,
            counted.len()
        ));
        self.z_pending
            .push((report.number.unwrap_or(0), report.to_v, counted));
    }

    /// A hub claimed by node `i` from data without a Z the shop took (its holders down, across
    /// a partition, or kitchen screens, which never lead), or one that outranks the hub that
    /// took it: when they meet, the Z's orders are replayed into this hub's lineage, which
    /// files them in a day of its own (the known limit ARCHITECTURE.md states). Such a Z is no
    /// longer checked.
    fn note_overtaken(&mut self, i: usize, how: &str) {
        let holds = |store: &Store, number: i64, to_v: i64| {
            store
                .table_rows("z_report")
                .unwrap()
                .iter()
                .any(|z| z["number"] == number && z["to_v"] == to_v)
        };
        let s = self.store(i).clone();
        for pending in [false, true] {
            let list = if pending {
                std::mem::take(&mut self.z_pending)
            } else {
                std::mem::take(&mut self.counted)
            };
            let mut kept = Vec::new();
            for z in list {
                if holds(&s, z.0, z.1) {
                    kept.push(z);
                } else {
                    self.overtaken.insert(z.0);
                    self.log.push(format!(
                        "[{}] Z #{} overtaken by {}'s hub, {how}",
                        self.tick_no, z.0, self.nodes[i].name
                    ));
                }
            }
            if pending {
                self.z_pending = kept;
            } else {
                self.counted = kept;
            }
        }
    }

    /// A Z is the shop's once another node holds it; one whose hub died before anyone copied
    /// it can be overtaken by a hub elected from older data, which files its orders in a day
    /// of its own (a limitation the README states): only Zs the shop holds are checked.
    fn note_z_copies(&mut self) {
        let pending = std::mem::take(&mut self.z_pending);
        for (number, to_v, counted) in pending {
            let copied = (0..NODES).filter(|i| self.awake(*i)).any(|i| {
                self.nodes[i].serving.is_none()
                    && self
                        .store(i)
                        .table_rows("z_report")
                        .unwrap()
                        .iter()
                        .any(|z| z["number"] == number && z["to_v"] == to_v)
            });
            if copied {
                self.counted.push((number, to_v, counted));
            } else if (0..NODES).any(|h| {
                self.awake(h)
                    && self.nodes[h].serving.is_some()
                    && self
                        .store(h)
                        .table_rows("z_report")
                        .unwrap()
                        .iter()
                        .any(|z| z["number"] == number && z["to_v"] == to_v)
            }) {
                self.z_pending.push((number, to_v, counted));
            } else {
                self.log
                    .push(format!("[{}] Z #{number} lost with its hub", self.tick_no));
            }
        }
    }

    /// Every live node that is not frozen runs its controller on what it sees, and the
    /// simulation carries out the effects as `auto.rs` does.
    fn elect(&mut self) {
        let now = self.now();
        for i in 0..NODES {
            if !self.awake(i) {
                continue;
            }
            let me = self.member(i);
            let live: Vec<Member> = (0..NODES)
                .filter(|j| *j != i && self.seen_live(i, *j))
                .map(|j| self.member(j))
                .collect();
            let s = self.store(i).clone();
            // Sometimes a claim fails at its last step: nothing of it may remain.
            if self.chaos && self.rng.random_ratio(1, 60) {
                s.fail_next_claim();
            }
            let hub_seq = self.nodes[i]
                .serving
                .as_ref()
                .map(|_| s.meta_i64(meta::STREAM_SEQ).unwrap());
            let mut control = self.nodes[i].control.take().expect("alive");
            let failed = control.claim_failures();
            let effects = control.tick(&s, &me, &live, hub_seq, now).unwrap();
            if control.claim_failures() > failed {
                let name = self.nodes[i].name.clone();
                self.fault(format!("{name}'s claim fails"));
            }
            self.nodes[i].control = Some(control);
            self.carry_out(i, effects);
        }
        // Within a group that sees itself, at most one armed hub once a round is over: two
        // meet only when a partition heals, and one steps down at once.
        let mut seen: HashMap<usize, usize> = HashMap::new();
        let mut clash = None;
        for i in (0..NODES).filter(|i| self.awake(*i)) {
            if self.nodes[i].serving.is_some()
                && self.store(i).is_authority()
                && let Some(other) = seen.insert(self.group[i], i)
            {
                clash = Some((other, i));
            }
        }
        if let Some((a, b)) = clash {
            assert!(
                !self.clashed,
                "{} and {} both armed hubs in one group for two rounds; {}",
                self.nodes[a].name,
                self.nodes[b].name,
                self.log.join("; ")
            );
        }
        self.clashed = clash.is_some();
    }

    fn carry_out(&mut self, i: usize, effects: Vec<Effect>) {
        for effect in effects {
            match effect {
                Effect::Gossip(u) => self.nodes[i].gossip.apply(&u),
                Effect::ServeHub(claim) => {
                    self.note_overtaken(i, "claimed from older data");
                    self.log.push(format!(
                        "[{}] {} claims term {}",
                        self.tick_no, self.nodes[i].name, claim.term
                    ));
                    self.nodes[i].serving = Some(claim.lineage());
                    self.nodes[i].following = None;
                    self.nodes[i].led_since_backup = true;
                    let group = (0..NODES).map(|j| self.group[j] == self.group[i]).collect();
                    self.claimed[i] = Some((self.tick_no, group));
                }
                Effect::Follow(hub) => {
                    let stepped_down = self.nodes[i].serving.take().is_some();
                    self.nodes[i].following = hub.map(|h| self.index_of(&h.node_id));
                    // A hub that steps down for a winner whose data lacks its Zs (a hub of a
                    // higher term that stood still while this one served the shop, seed 1216):
                    // the same known limit as a claim from older data.
                    if stepped_down
                        && let Some(w) = self.nodes[i].following
                        && self.nodes[w].store.is_some()
                    {
                        self.note_overtaken(w, "that outranked it");
                    }
                }
            }
        }
    }

    /// Followers that reach their hub drain their outbox into it and catch up from it; a hub
    /// applies what reached its own outbox (`auto.rs`'s `adopt_late_writes`).
    fn replicate(&mut self) {
        for i in 0..NODES {
            if self.awake(i) && self.nodes[i].serving.is_some() {
                self.store(i).adopt_outbox().unwrap();
            }
        }
        for i in 0..NODES {
            let Some(h) = self.nodes[i].following else {
                continue;
            };
            if self.nodes[i].serving.is_some() || !self.reach(i, h) {
                continue;
            }
            let Some(hub_lineage) = self.nodes[h].serving.clone() else {
                continue;
            };
            let (till, hub) = (self.store(i).clone(), self.store(h).clone());
            if !hub.is_authority() {
                continue;
            }
            sync(&till, &hub, &hub_lineage, true);
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
                    Ok(applied) => {
                        // As the till does: what the hub took only in part is re-read.
                        let partial = till
                            .outbox_confirmed(&next.request, &applied.results)
                            .unwrap();
                        for (entity, id) in partial {
                            let pull = hub
                                .pull_many(&entity, std::slice::from_ref(&id), None)
                                .unwrap();
                            till.merge_pulled_over_local(&pull).unwrap();
                            if std::env::var_os("SIM_DEBUG").is_some() {
                                eprintln!("[{}] n{i} re-read {entity} {id}", self.tick_no, i = i);
                            }
                        }
                    }
                    // As the till does: retry later (its parent is on its way).
                    Err(StoreError::NotHub(_) | StoreError::MissingParent(_)) => break,
                    Err(e) => {
                        till.outbox_rejected(&next.request, &e.to_string()).unwrap();
                    }
                }
            }
            sync(&till, &hub, &hub_lineage, true);
        }
    }

    /// Every group with an eligible node up has an armed hub within 3 s of the last fault.
    fn check_hub_present(&self) {
        if self.tick_no - self.last_fault < HUB_WITHIN_TICKS {
            return;
        }
        for g in 0..3 {
            let members: Vec<usize> = (0..NODES)
                .filter(|i| self.awake(*i) && self.group[*i] == g)
                .collect();
            if !members.iter().any(|i| self.nodes[*i].eligible) {
                continue;
            }
            // A hub handing over to the manager's PC is fenced for the tick or two until the PC
            // claims (the handback's planned gap; it serves again after 2 s if the PC does not).
            let hub = members.iter().any(|i| {
                self.nodes[*i].serving.is_some()
                    && (self.store(*i).is_authority()
                        || self.nodes[*i]
                            .control
                            .as_ref()
                            .is_some_and(|c| c.handing_over()))
            });
            assert!(
                hub,
                "group {g} {:?} without a hub {} ticks after the last fault; {}\n{}",
                members,
                self.tick_no - self.last_fault,
                self.log.join("; "),
                self.nodes_state()
            );
        }
    }

    /// Each node's place and queue, for failure messages.
    fn nodes_state(&self) -> String {
        let nodes: Vec<String> = (0..NODES)
            .map(|i| {
                let n = &self.nodes[i];
                let Some(s) = n.store.as_ref() else {
                    return format!("{}: down", n.name);
                };
                format!(
                    "{}: serving {:?} following {:?} term {} gossip hub_term {} fresh {} armed {} journal whole {} outbox {:?}",
                    n.name,
                    n.serving.as_ref().map(|l| l.term),
                    n.following,
                    s.term().unwrap(),
                    n.gossip.hub_term,
                    n.gossip.fresh,
                    s.is_authority(),
                    s.claim_ready().unwrap(),
                    s.outbox_counts().unwrap()
                ) + &format!("\n   {:?}", n.control) + &s
                    .outbox_list()
                    .unwrap()
                    .iter()
                    .take(3)
                    .map(|e| format!("\n   {} {} {} {:?}", e.state, e.table, e.action, e.error))
                    .collect::<String>()
            })
            .collect();
        nodes.join("\n")
    }

    /// One hub, every outbox empty, every replica equal to it.
    fn settled(&self) -> bool {
        let hubs: Vec<usize> = (0..NODES)
            .filter(|i| self.nodes[*i].serving.is_some())
            .collect();
        if hubs.len() != 1 || !self.store(hubs[0]).is_authority() {
            return false;
        }
        if (0..NODES).any(|i| self.store(i).outbox_counts().unwrap() != (0, 0)) {
            return false;
        }
        let digest = self.store(hubs[0]).digest().unwrap();
        (0..NODES).all(|i| self.store(i).digest().unwrap() == digest)
    }

    fn tick(&mut self) {
        self.tick_no += 1;
        self.clock
            .ms
            .fetch_add(TICK.as_millis() as u64, Ordering::SeqCst);
        if self.chaos {
            self.chaos();
            for _ in 0..self.rng.random_range(0..3) {
                let i = self.rng.random_range(0..NODES);
                if !self.awake(i) || !self.nodes[i].eligible {
                    continue;
                }
                match self.rng.random_range(0..4) {
                    0 | 1 => self.sell_at(i),
                    2 => self.pay_at(i),
                    _ => self.send_at(i),
                }
            }
        }
        self.thaw();
        self.elect();
        self.replicate();
        // The manager's Z, at the end of a tick; the tills copy it at once (within
        // milliseconds, where a tick is 100).
        if std::mem::take(&mut self.z_due) {
            self.take_z();
            self.replicate();
        }
        self.note_z_copies();
        self.trace();
        self.check_hub_present();
    }

    /// With SIM_DEBUG=TEXT: each tick, where the rows and queued writes mentioning TEXT are.
    fn trace(&self) {
        let Ok(needle) = std::env::var("SIM_DEBUG") else {
            return;
        };
        for (i, n) in self.nodes.iter().enumerate() {
            let c = capsule_store::rusqlite::Connection::open(&n.path).unwrap();
            let q = |sql: &str| -> Vec<String> {
                // A node not started yet has no tables.
                let Ok(mut st) = c.prepare(sql) else {
                    return Vec::new();
                };
                st.query_map([format!("%{needle}%")], |r| r.get::<_, String>(0))
                    .unwrap()
                    .map(|r| r.unwrap())
                    .collect()
            };
            let rows = q(
                "SELECT status || ' _v=' || _v || ' fin=' || IFNULL(finished_v, '-') FROM order_header WHERE id LIKE ?1",
            );
            let outbox = q(
                "SELECT state || ':' || substr(mutation, 1, 120) FROM _outbox WHERE mutation LIKE ?1",
            );
            let shadow = q("SELECT substr(rows, 1, 80) FROM _shadow WHERE id LIKE ?1");
            eprintln!(
                "[{}] n{i}{}{} g{} f{:?} rows {rows:?} outbox {outbox:?} shadow {shadow:?}",
                self.tick_no,
                n.serving
                    .as_ref()
                    .map_or(String::new(), |l| format!(" HUB{}", l.term)),
                if self.alive(i) { "" } else { " DEAD" },
                self.group[i],
                n.following,
            );
        }
    }
}

/// What a till's follow task does on (re)connecting and after each burst, through the same
/// store calls: catch up by version when its data is a prefix of the hub's, else snapshot;
/// record the hub's mids; move its position.
fn sync(till: &Store, hub: &Store, lineage: &Lineage, keep_mids: bool) {
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
    // Replicas that may lead copy the hub's journal up to their data, then compare what a
    // snapshot set aside with it.
    if keep_mids {
        let after = till.meta_i64(meta::JOURNAL_VERSION).unwrap();
        if after < top {
            till.record_journal(
                &hub.journal_since(after, top, 100_000).unwrap().entries,
                Some(top),
            )
            .unwrap();
        }
        till.reconcile_aside().unwrap();
    }
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
    while !(0..NODES).any(|i| sim.nodes[i].serving.is_some()) {
        sim.tick();
        assert!(sim.tick_no < 100, "no first hub");
    }
    let hub = (0..NODES)
        .find(|i| sim.nodes[*i].serving.is_some())
        .unwrap();
    let s = sim.store(hub).clone();
    s.apply(
        &Sim::batch(vec![Mutation::new(
            "pos_shift",
            Action::Save,
            json!({"id": "S1", "node_id": "n0", "cashier": "Mona", "opened_at": T}),
        )]),
        &ApplyMode::Authoritative {
            source: "n0".into(),
        },
    )
    .unwrap();
    for _ in 0..3 {
        sim.tick();
    }
    let start_term = (0..NODES)
        .filter(|i| sim.alive(*i))
        .map(|i| sim.store(i).term().unwrap())
        .max()
        .unwrap();
    sim.chaos = true;
    for _ in 0..CHAOS_TICKS {
        sim.tick();
    }
    // Heal, everyone back and awake, service continues quietly until all is settled.
    sim.chaos = false;
    sim.group = vec![0; NODES];
    for i in 0..NODES {
        if sim.nodes[i].frozen_since.is_some() {
            sim.nodes[i].frozen_until = sim.tick_no;
        }
    }
    sim.thaw();
    for i in 0..NODES {
        if !sim.alive(i) {
            sim.restart(i);
        }
    }
    sim.fault("heal all".into());
    for _ in 0..HEAL_TICKS {
        sim.tick();
        if sim.settled() {
            break;
        }
    }
    check(&sim, seed, start_term);
}

/// What must hold once the shop has settled.
fn check(sim: &Sim, seed: u64, start_term: i64) {
    let context = || format!("seed {seed}: {}\n{}", sim.log.join("; "), sim.nodes_state());
    let hubs: Vec<usize> = (0..NODES)
        .filter(|i| sim.nodes[*i].serving.is_some())
        .collect();
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
            .filter(|e| {
                // An overtaken Z's record whose number the winner has taken since.
                !(e.table == "z_report"
                    && hub.table_rows("z_report").unwrap().iter().any(|z| {
                        let n = z["number"].as_i64().unwrap_or(0);
                        sim.overtaken.contains(&n)
                            && e.error.as_deref().is_some_and(|why| {
                                why.contains(&format!("'z-{n:06}' is immutable"))
                            })
                    }))
            })
            .map(|e| format!("{} {} {}: {:?}", e.table, e.action, e.mid, e.error))
            .collect();
        assert!(
            pending == 0 && refused.is_empty(),
            "{} drained, none refused ({pending} pending, {rejected} set aside): {refused:?}; {}",
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
    let rows = hub.table_rows("order_header").unwrap();
    let by_id: HashMap<String, &capsule_protocol::Row> = rows
        .iter()
        .map(|r| (r["id"].as_str().unwrap().to_string(), r))
        .collect();
    assert_eq!(by_id.len(), rows.len(), "an order twice; {}", context());
    for (o, _) in &sim.acked {
        assert!(
            by_id.contains_key(o),
            "acknowledged sale {o} lost; {}",
            context()
        );
    }
    assert_eq!(
        rows.len(),
        sim.acked.len(),
        "a sale nobody acknowledged; {}",
        context()
    );
    for o in &sim.paid {
        if by_id[o]["status"] != "paid" && std::env::var_os("SIM_DEBUG").is_some() {
            for i in 0..NODES {
                let c = capsule_store::rusqlite::Connection::open(&sim.nodes[i].path).unwrap();
                let mut st = c
                    .prepare("SELECT v, mutation FROM _journal WHERE mutation LIKE ?1 ORDER BY v")
                    .unwrap();
                let rows: Vec<(i64, String)> = st
                    .query_map([format!("%{o}%")], |r| Ok((r.get(0)?, r.get(1)?)))
                    .unwrap()
                    .map(|r| r.unwrap())
                    .collect();
                for (v, m) in rows {
                    eprintln!("n{i} journal v={v} {m}");
                }
            }
        }
        assert_eq!(
            by_id[o]["status"],
            "paid",
            "paid order {o} reopened; {}",
            context()
        );
    }
    for (o, (status, finished_v, total)) in sim.counted.iter().flat_map(|z| &z.2) {
        let r = by_id[o];
        assert_eq!(
            (
                r["status"].as_str().unwrap(),
                r["finished_v"].as_i64(),
                r["total"].as_i64().unwrap_or(0)
            ),
            (status.as_str(), *finished_v, *total),
            "order {o} a Z counted changed; {}",
            context()
        );
    }
    let lines = hub.table_rows("order_line").unwrap().len();
    let payments = hub.table_rows("order_payment").unwrap().len();
    assert_eq!(
        (lines, payments),
        (rows.len(), sim.payments),
        "a line or payment lost or doubled; {}",
        context()
    );
    // Terms rise with real failures only: a few per fault at most, never in a loop.
    let term = (0..NODES)
        .map(|i| sim.store(i).term().unwrap())
        .max()
        .unwrap();
    assert!(
        term - start_term <= 1 + 2 * sim.faults,
        "{} terms used for {} faults; {}",
        term - start_term,
        sim.faults,
        context()
    );
}

#[test]
fn a_shop_under_partitions_crashes_freezes_and_nightly_restarts_loses_and_reopens_nothing() {
    if let Some(seed) = std::env::var("SIM_SEED").ok().and_then(|s| s.parse().ok()) {
        run(seed);
        return;
    }
    let seeds: u64 = std::env::var("SIM_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(300);
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

/// Seeds that failed on intermediate code of issue 22's work, each on a bug fixed since (a
/// store test names each fix too): 79 and 81, a replay and a duplicate of a stale "sent" kept
/// on a till's screen and published by its claim; 222 and 243, a Z overtaken by a hub elected
/// from older data; 556, a queued write's base from another history read as newer than the new
/// hub's payment; 573, a write made over the till's own waiting write taken as having seen the
/// hub's payment; 131, an overtaken Z's record replayed into a lineage that had taken its own
/// Z of that number (set aside for the manager, neither Z rewritten). 1080 and 1336 (session
/// 7): the best candidate's claims failed four times in a row and the others waited for it, no
/// hub for 30 ticks (a node whose claim failed now stands aside until its wait is over, and the
/// simulation's gossip carries what a node says of leading, as the mesh does). 663: a handback
/// that began 30 ticks after a fault was counted as a shop without a hub. 1216: a Z taken
/// while a hub of a higher term stood still, overtaken when it woke (the known limit).
#[test]
fn seeds_that_found_bugs_stay_fixed() {
    for seed in [79, 81, 131, 222, 243, 556, 573, 663, 1080, 1216, 1336] {
        run(seed);
    }
}
