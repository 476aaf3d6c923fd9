//! A seeded restaurant rush: orders opened at the tills, lines added and changed, sent to the
//! kitchen (a job per station), jobs bumped, batches handed off, orders paid and closed, shifts
//! opened and closed. The same seed gives the same sequence of requests.

use capsule_node::demo::menu;
use capsule_protocol::{Action, Mutation, MutationBatch};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};

#[derive(Debug, Clone)]
pub struct RushConfig {
    pub seed: u64,
    /// Orders to run from open to closed.
    pub orders: usize,
    /// Orders in progress at once (tables busy).
    pub concurrent: usize,
    /// Tills the orders are spread over (one shift each).
    pub tills: usize,
}

impl Default for RushConfig {
    fn default() -> Self {
        RushConfig {
            seed: 42,
            orders: 200,
            concurrent: 24,
            tills: 4,
        }
    }
}

/// One request of the rush: which till sends it and what it writes.
#[derive(Debug, Clone)]
pub struct Step {
    pub till: usize,
    pub what: &'static str,
    pub batch: MutationBatch,
}

struct Job {
    id: String,
    status: u8,
}

struct Round {
    id: String,
    jobs: Vec<Job>,
    handed: u8,
}

struct Order {
    id: String,
    till: usize,
    lines: Vec<(String, &'static str)>,
    unsent: Vec<usize>,
    rounds: Vec<Round>,
    additions_left: u8,
    paid: bool,
}

pub struct Rush {
    config: RushConfig,
    rng: StdRng,
    shifts: Vec<String>,
    active: Vec<Order>,
    opened: usize,
    next_no: i64,
    started: bool,
    finished: bool,
    /// Ids made so far (their clock).
    ids: u64,
}

const T0: &str = "2026-11-24T12:00:00.000Z";
/// [`T0`] in ms since the Unix epoch.
const T0_MS: u64 = 1_795_521_600_000;

impl Rush {
    pub fn new(config: RushConfig) -> Rush {
        let rng = StdRng::seed_from_u64(config.seed);
        Rush {
            config,
            rng,
            shifts: vec![],
            active: vec![],
            opened: 0,
            next_no: 1,
            started: false,
            finished: false,
            ids: 0,
        }
    }

    fn id(&mut self) -> String {
        // UUIDv7 like the tills make, from the seeded generator and a clock that moves 5 ms per
        // id (the rush's pace), so a rerun writes the same rows.
        let bytes: [u8; 10] = self.rng.random();
        self.ids += 1;
        uuid::Builder::from_unix_timestamp_millis(T0_MS + self.ids * 5, &bytes)
            .into_uuid()
            .to_string()
    }

    fn line(&mut self, order: &str, no: usize) -> (Mutation, String, &'static str) {
        let item = &menu()[self.rng.random_range(0..menu().len())];
        let id = self.id();
        let qty = self.rng.random_range(1..=3);
        let modifiers = if self.rng.random_bool(0.2) {
            json!("no onion")
        } else {
            Value::Null
        };
        let m = Mutation::new(
            "order_line",
            Action::Insert,
            json!({"id": id, "order_id": order, "line_no": no, "item_code": item.code, "name_en": item.name_en,
                   "name_ar": item.name_ar, "category": item.category, "station": item.station, "qty": qty,
                   "unit_price": item.price, "modifiers": modifiers, "created_at": T0}),
        );
        (m, id, item.station.as_str())
    }

    fn open_order(&mut self) -> Step {
        let till = self.opened % self.config.tills;
        self.opened += 1;
        let id = self.id();
        let no = self.next_no;
        self.next_no += 1;
        let mut muts = vec![Mutation::new(
            "order_header",
            Action::Insert,
            json!({"id": id, "order_no": no, "shift_id": self.shifts[till], "node_id": format!("till-{till}"),
                   "table_label": format!("T{}", no % 30 + 1), "guests": 2, "opened_at": T0,
                   "tax_rate_bp": 1500, "service_rate_bp": 1000}),
        )];
        let mut lines = Vec::new();
        for n in 0..self.rng.random_range(2..=4) {
            let (m, line, station) = self.line(&id, n + 1);
            muts.push(m);
            lines.push((line, station));
        }
        let unsent = (0..lines.len()).collect();
        let additions_left = u8::from(self.rng.random_bool(0.3));
        self.active.push(Order {
            id,
            till,
            lines,
            unsent,
            rounds: vec![],
            additions_left,
            paid: false,
        });
        Step {
            till,
            what: "open order",
            batch: MutationBatch {
                mutations: muts,
                source: None,
            },
        }
    }

    fn send_to_kitchen(&mut self, i: usize) -> Vec<Mutation> {
        let round_id = self.id();
        let (order_id, kind, no) = {
            let o = &self.active[i];
            (
                o.id.clone(),
                if o.rounds.is_empty() {
                    "initial"
                } else {
                    "addition"
                },
                o.rounds.len() + 1,
            )
        };
        let mut muts = vec![Mutation::new(
            "job_order_batch",
            Action::Insert,
            json!({"id": round_id, "order_id": order_id, "batch_no": no, "kind": kind, "created_at": T0}),
        )];
        let unsent: Vec<usize> = std::mem::take(&mut self.active[i].unsent);
        let mut stations: Vec<&'static str> =
            unsent.iter().map(|l| self.active[i].lines[*l].1).collect();
        stations.sort_unstable();
        stations.dedup();
        let mut jobs = Vec::new();
        for station in stations {
            let job = self.id();
            muts.push(Mutation::new(
                "job_order_header",
                Action::Insert,
                json!({"id": job, "order_id": order_id, "batch_id": round_id, "station": station, "created_at": T0}),
            ));
            let here: Vec<String> = unsent
                .iter()
                .filter(|l| self.active[i].lines[**l].1 == station)
                .map(|l| self.active[i].lines[*l].0.clone())
                .collect();
            for line_id in here {
                let detail = self.id();
                muts.push(Mutation::new(
                    "job_order_detail",
                    Action::Insert,
                    json!({"id": detail, "job_id": job, "order_line_id": line_id, "name_en": "item", "qty": 1}),
                ));
            }
            jobs.push(Job { id: job, status: 0 });
        }
        for l in &unsent {
            let line_id = self.active[i].lines[*l].0.clone();
            muts.push(Mutation::new(
                "order_line",
                Action::Merge,
                json!({"id": line_id, "status": "sent", "batch_id": round_id}),
            ));
        }
        muts.push(Mutation::new(
            "order_header",
            Action::Merge,
            json!({"id": order_id, "status": "sent"}),
        ));
        self.active[i].rounds.push(Round {
            id: round_id,
            jobs,
            handed: 0,
        });
        muts
    }

    /// The next thing that happens to order `i`, or None when it is finished.
    fn advance(&mut self, i: usize) -> Option<(&'static str, Vec<Mutation>)> {
        let o = &self.active[i];
        let order_id = o.id.clone();
        if !o.unsent.is_empty() {
            if self.rng.random_bool(0.25) {
                // The guest changes their mind before it goes to the kitchen.
                let line = o.lines[o.unsent[0]].0.clone();
                let qty = self.rng.random_range(1..=4);
                return Some((
                    "change line",
                    vec![Mutation::new(
                        "order_line",
                        Action::Merge,
                        json!({"id": line, "qty": qty}),
                    )],
                ));
            }
            return Some(("send to kitchen", self.send_to_kitchen(i)));
        }
        // Kitchen work on the latest round: bump one job one step.
        let round = o.rounds.len() - 1;
        if let Some(j) = o.rounds[round].jobs.iter().position(|j| j.status < 2) {
            let job = &mut self.active[i].rounds[round].jobs[j];
            job.status += 1;
            let status = if job.status == 1 { "cooking" } else { "ready" };
            let id = job.id.clone();
            return Some((
                "bump job",
                vec![Mutation::new(
                    "job_order_header",
                    Action::Merge,
                    json!({"id": id, "status": status}),
                )],
            ));
        }
        let r = &mut self.active[i].rounds[round];
        if r.handed < 2 {
            r.handed += 1;
            let status = if r.handed == 1 { "assembled" } else { "served" };
            let id = r.id.clone();
            return Some((
                "hand off",
                vec![Mutation::new(
                    "job_order_batch",
                    Action::Merge,
                    json!({"id": id, "status": status}),
                )],
            ));
        }
        if self.active[i].additions_left > 0 {
            self.active[i].additions_left -= 1;
            let n = self.active[i].lines.len() + 1;
            let (m, line, station) = self.line(&order_id, n);
            self.active[i].lines.push((line, station));
            self.active[i].unsent.push(n - 1);
            return Some(("add line", vec![m]));
        }
        if !self.active[i].paid {
            self.active[i].paid = true;
            let pay = self.id();
            let method = if self.rng.random_bool(0.5) {
                "cash"
            } else {
                "card"
            };
            // The amount is what the hub computed; the rush pays a round figure and the order's
            // balance shows the difference, which is all the sync path cares about.
            let amount = self.rng.random_range(50..400) * 100;
            return Some((
                "pay",
                vec![
                    Mutation::new(
                        "order_payment",
                        Action::Insert,
                        json!({"id": pay, "order_id": order_id, "method": method, "amount": amount, "tendered": amount, "paid_at": T0}),
                    ),
                    Mutation::new(
                        "order_header",
                        Action::Merge,
                        json!({"id": order_id, "status": "paid"}),
                    ),
                ],
            ));
        }
        None
    }
}

impl Iterator for Rush {
    type Item = Step;

    fn next(&mut self) -> Option<Step> {
        if !self.started {
            self.started = true;
            let mut muts = Vec::new();
            for t in 0..self.config.tills {
                let id = self.id();
                muts.push(Mutation::new(
                    "pos_shift",
                    Action::Insert,
                    json!({"id": id, "node_id": format!("till-{t}"), "cashier": format!("Cashier {t}"), "opened_at": T0, "opening_float": 50_000}),
                ));
                self.shifts.push(id);
            }
            return Some(Step {
                till: 0,
                what: "open shifts",
                batch: MutationBatch {
                    mutations: muts,
                    source: None,
                },
            });
        }
        let can_open =
            self.opened < self.config.orders && self.active.len() < self.config.concurrent;
        if self.active.is_empty() {
            if can_open {
                return Some(self.open_order());
            }
            if self.finished {
                return None;
            }
            self.finished = true;
            let muts = self
                .shifts
                .iter()
                .map(|s| {
                    Mutation::new(
                        "pos_shift",
                        Action::Merge,
                        json!({"id": s, "status": "closed", "closed_at": T0}),
                    )
                })
                .collect();
            return Some(Step {
                till: 0,
                what: "close shifts",
                batch: MutationBatch {
                    mutations: muts,
                    source: None,
                },
            });
        }
        if can_open && self.rng.random_bool(0.3) {
            return Some(self.open_order());
        }
        let i = self.rng.random_range(0..self.active.len());
        let till = self.active[i].till;
        match self.advance(i) {
            Some((what, mutations)) => Some(Step {
                till,
                what,
                batch: MutationBatch {
                    mutations,
                    source: None,
                },
            }),
            None => {
                let o = self.active.swap_remove(i);
                let close = Mutation::new(
                    "order_header",
                    Action::Merge,
                    json!({"id": o.id, "status": "closed", "closed_at": T0}),
                );
                Some(Step {
                    till: o.till,
                    what: "close order",
                    batch: MutationBatch {
                        mutations: vec![close],
                        source: None,
                    },
                })
            }
        }
    }
}

/// The shift every write-throughput order belongs to.
pub const THROUGHPUT_SHIFT: &str = "bench-shift";

/// The write that opens [`THROUGHPUT_SHIFT`] before a write-throughput run.
pub fn throughput_shift_insert() -> Value {
    json!({"mutations": [{"mid": uuid::Uuid::now_v7().to_string(), "table": "pos_shift",
        "action": "insert", "row": {"id": THROUGHPUT_SHIFT, "node_id": "bench", "cashier": "Bench",
        "opened_at": "2026-11-25T08:00:00Z", "opening_float": 0}}]})
}

/// One write-throughput request: a new order (unique mid and id) from writer `writer`.
pub fn throughput_order_insert(writer: usize) -> Value {
    json!({
        "source": format!("writer-{writer}"),
        "mutations": [{
            "mid": uuid::Uuid::now_v7().to_string(),
            "table": "order_header",
            "action": "insert",
            "row": {
                "id": uuid::Uuid::now_v7().to_string(),
                "shift_id": THROUGHPUT_SHIFT,
                "opened_at": "2026-11-25T12:00:00Z",
                "table_label": "T1",
                "tax_rate_bp": 1500,
            }
        }]
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_gives_the_same_rush() {
        let a: Vec<String> = Rush::new(RushConfig::default())
            .map(|s| {
                serde_json::to_string(&s.batch.mutations.iter().map(|m| &m.row).collect::<Vec<_>>())
                    .unwrap()
            })
            .collect();
        let b: Vec<String> = Rush::new(RushConfig::default())
            .map(|s| {
                serde_json::to_string(&s.batch.mutations.iter().map(|m| &m.row).collect::<Vec<_>>())
                    .unwrap()
            })
            .collect();
        assert_eq!(a, b);
        assert!(a.len() > 1000, "a rush of 200 orders has {} steps", a.len());
    }

    #[test]
    fn every_step_is_valid_and_the_rush_applies_cleanly() {
        let dir = tempfile::tempdir().unwrap();
        let store = capsule_store::Store::open(
            dir.path().join("r.sqlite3"),
            std::sync::Arc::new(capsule_protocol::Schema::builtin()),
        )
        .unwrap();
        let mode = capsule_store::ApplyMode::Authoritative {
            source: "bench".into(),
        };
        for step in Rush::new(RushConfig {
            orders: 40,
            ..RushConfig::default()
        }) {
            store
                .apply(&step.batch, &mode)
                .unwrap_or_else(|e| panic!("{}: {e}", step.what));
        }
        let orders = store.table_rows("order_header").unwrap();
        assert_eq!(orders.len(), 40);
        assert!(orders.iter().all(|o| o["status"] == "closed"));
        let batches = store.table_rows("job_order_batch").unwrap();
        assert!(
            batches.iter().all(|b| b["status"] == "served"),
            "every round is served"
        );
    }
}
