//! What an elected node decides, tick by tick, as a state machine over its store: the
//! election's verdict carried out on the store (terms, claims, fencing, step-downs, the hub's
//! lease), with everything else — starting the hub's parts, following a hub, gossiping — handed
//! back as [`Effect`]s. `auto.rs` carries the effects out with sockets and tasks;
//! `tests/simulation.rs` carries them out in a seeded simulation. Both run this same code, so
//! the simulation tests the controller the shop runs.

use std::time::{Duration, Instant};

use capsule_mesh::{Member, SelfUpdate, Situation, Verdict};
use capsule_store::{Claim, Store};

/// After start, how long to listen before claiming the hub: long enough for a few gossip
/// rounds, so a node never claims just because it has not heard the others yet.
pub const SETTLE_AFTER_START: Duration = Duration::from_secs(2);
/// A node that has never held the shop's data (a till's first start), and was not told it may
/// start a shop (`--demo`, or a priority above a till's), waits this long for a hub before it
/// claims: a till switched on before the manager's PC must not become the hub of an empty shop
/// that the manager's PC then has to replay its whole history into.
pub const SETTLE_WHEN_FRESH: Duration = Duration::from_secs(30);
/// A handover the chosen node has not completed by then is called off (the hub is fenced
/// meanwhile; the chosen node was caught up when it began, so it claims within a few gossip
/// rounds).
pub const HANDOVER_TIMEOUT: Duration = Duration::from_secs(2);
/// A hub fenced by a higher term whose hub never shows up gives up the hub after this (a few
/// gossip rounds: the higher term's hub, if it lives and is reachable, shows by then), so the
/// shop has a hub again within 3 s of such a fault.
pub const FENCE_TIMEOUT: Duration = Duration::from_secs(1);
/// How long a hub's writes stay allowed without a tick renewing them. Shorter than the time
/// the others take to declare a silent hub dead (about 1.2 s), so a hub that stood still is
/// refusing writes before anyone else can have claimed.
pub const LEASE: Duration = Duration::from_millis(900);
/// A gap between ticks this long means the process or the machine stood still (SIGSTOP, a
/// freeze, a suspend): what it knew of the mesh is old.
pub const FREEZE_GAP: Duration = Duration::from_millis(700);
/// After such a gap, how long a hub listens to the gossip (several rounds) before it decides
/// again; it accepts no write meanwhile.
pub const RELEARN: Duration = Duration::from_secs(1);
/// First wait after a failed claim; doubles per failure in a row, up to [`CLAIM_BACKOFF_MAX`].
pub const CLAIM_BACKOFF: Duration = Duration::from_secs(1);
pub const CLAIM_BACKOFF_MAX: Duration = Duration::from_secs(30);
/// After a called-off handover, how long before another is tried.
const HANDOVER_PAUSE: Duration = Duration::from_secs(60);

/// What the controller needs to know about its node, fixed at start.
#[derive(Debug, Clone)]
pub struct ControlConfig {
    /// May lead (a full replica, not a kitchen screen).
    pub eligible: bool,
    pub priority: i64,
    /// Told it may start a shop (the demo).
    pub demo: bool,
    /// A hub hands back to the preferred node only after this long without a write.
    pub handback_quiet: Duration,
}

/// What the node should do outside its store, in this order.
#[derive(Debug, Clone)]
pub enum Effect {
    /// Tell the mesh these changes to what this node gossips about itself.
    Gossip(SelfUpdate),
    /// Start serving as hub of this claim (the store has it on disk and accepts writes). If
    /// the hub's parts cannot start, call [`Control::hub_start_failed`].
    ServeHub(Claim),
    /// Stop whatever runs and follow this hub (None: no hub known; sell into the outbox and
    /// send nothing anywhere until one is).
    Follow(Option<Member>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Held {
    Follower,
    Hub { since: Instant },
}

/// One node's controller: its decisions and the few things it remembers between ticks.
#[derive(Debug)]
pub struct Control {
    config: ControlConfig,
    started: Instant,
    held: Held,
    /// The hub this node follows, as last told (so a repeated verdict is not a new effect).
    following: Option<(String, i64)>,
    last_tick: Option<Instant>,
    /// When it last woke from standing still; no decision (and no write) until [`RELEARN`]
    /// has passed.
    woke_at: Option<Instant>,
    /// The hub's stream position and when it last moved (for "quiet").
    last_write: (i64, Instant),
    handover: Option<(String, Instant)>,
    no_handover_until: Option<Instant>,
    fenced_at: Option<Instant>,
    claim_failures: u32,
    no_claim_until: Option<Instant>,
    told_fresh: i64,
    told_term: i64,
    /// Whether the mesh was last told this node may lead (None: not told yet).
    told_eligible: Option<bool>,
}

impl Control {
    pub fn new(config: ControlConfig, now: Instant) -> Control {
        Control {
            config,
            started: now,
            held: Held::Follower,
            following: None,
            last_tick: None,
            woke_at: None,
            last_write: (0, now),
            handover: None,
            no_handover_until: None,
            fenced_at: None,
            claim_failures: 0,
            no_claim_until: None,
            told_fresh: -1,
            told_term: -1,
            told_eligible: None,
        }
    }

    /// Claims that failed in a row (the next waits longer after each).
    pub fn claim_failures(&self) -> u32 {
        self.claim_failures
    }

    /// Whether this hub is handing the hub over (fenced, waiting for the named node to claim;
    /// it serves again after [`HANDOVER_TIMEOUT`] if that node does not).
    pub fn handing_over(&self) -> bool {
        self.handover.is_some()
    }

    /// Whether this node is serving as hub.
    pub fn is_hub(&self) -> bool {
        matches!(self.held, Held::Hub { .. })
    }

    /// One tick: `me` and `live` as the mesh shows them now, `hub_seq` the hub's stream
    /// position while this node is hub.
    pub fn tick(
        &mut self,
        store: &Store,
        me: &Member,
        live: &[Member],
        hub_seq: Option<i64>,
        now: Instant,
    ) -> anyhow::Result<Vec<Effect>> {
        let mut out = Vec::new();
        if self.stood_still(store, now) {
            return Ok(out);
        }
        let fresh = store.freshness()?;
        if fresh != self.told_fresh {
            self.told_fresh = fresh;
            out.push(Effect::Gossip(SelfUpdate {
                fresh: Some(fresh),
                ..SelfUpdate::default()
            }));
        }
        // A node still copying the shop's history may not lead, and says so, so the others
        // neither wait for it nor hand the hub over to it. Nor may one whose last claim failed,
        // until its wait is over: the best candidate failing claim after claim (a failing disk)
        // kept the shop without a hub while the others waited for it (simulation seed 1080).
        let backing_off = self.no_claim_until.is_some_and(|t| now < t);
        let may_lead = self.config.eligible && !backing_off && store.history_complete()?;
        if self.told_eligible != Some(may_lead) {
            self.told_eligible = Some(may_lead);
            out.push(Effect::Gossip(SelfUpdate {
                eligible: Some(may_lead),
                ..SelfUpdate::default()
            }));
        }
        let me = &Member {
            eligible: me.eligible && may_lead,
            ..me.clone()
        };
        let situation = Situation {
            settled: self.settled(store, now)?,
            quiet: self.quiet(hub_seq, now),
        };
        let verdict = capsule_mesh::decide(me, live, situation);
        self.act(store, verdict, now, &mut out)?;
        if self.is_hub() && self.fenced_at.is_none() && self.handover.is_none() {
            store.hold_authority_for(LEASE);
        }
        Ok(out)
    }

    /// The hub's parts could not start after a claim: the claim is given up (writes refused,
    /// the node follows nobody) and the next claim waits, longer after each failure in a row.
    pub fn hub_start_failed(&mut self, store: &Store, now: Instant) -> anyhow::Result<Vec<Effect>> {
        let mut out = Vec::new();
        self.give_up_hub(store, None, &mut out)?;
        self.back_off_claims(now);
        Ok(out)
    }

    /// Whether the node just woke from standing still: then a hub stops writing at once and
    /// nothing is decided until it has heard the mesh again for [`RELEARN`].
    fn stood_still(&mut self, store: &Store, now: Instant) -> bool {
        let gap = self
            .last_tick
            .map_or(Duration::ZERO, |t| now.saturating_duration_since(t));
        self.last_tick = Some(now);
        if gap >= FREEZE_GAP {
            tracing::warn!(
                stood_still_ms = gap.as_millis() as u64,
                "this node stood still; listening to the shop before deciding again"
            );
            store.set_authority(false);
            self.woke_at = Some(now);
        }
        match self.woke_at {
            Some(w) if now.saturating_duration_since(w) < RELEARN => true,
            Some(_) => {
                self.woke_at = None;
                // Its decision below re-arms a hub that is still the rightful one.
                if self.is_hub() && self.fenced_at.is_none() && self.handover.is_none() {
                    self.fenced_at = Some(now);
                }
                false
            }
            None => false,
        }
    }

    /// Whether the node has listened long enough to claim the hub: a few gossip rounds, or
    /// for a node that never held the shop's data, much longer.
    fn settled(&self, store: &Store, now: Instant) -> anyhow::Result<bool> {
        let up = now.saturating_duration_since(self.started);
        if up < SETTLE_AFTER_START {
            return Ok(false);
        }
        if up >= SETTLE_WHEN_FRESH || self.config.demo || self.config.priority > 1 {
            return Ok(true);
        }
        // Held the shop's data: it followed a hub, or led one (a hub that stepped down
        // forgets whom it followed, not what it holds).
        Ok(store.followed_hub()?.0.is_some() || store.freshness()? > 0)
    }

    fn quiet(&mut self, hub_seq: Option<i64>, now: Instant) -> bool {
        let (Held::Hub { since }, Some(seq)) = (self.held, hub_seq) else {
            return false;
        };
        if seq != self.last_write.0 {
            self.last_write = (seq, now);
        }
        let quiet_for = self.config.handback_quiet;
        self.no_handover_until.is_none_or(|t| now >= t)
            && now.saturating_duration_since(self.last_write.1) >= quiet_for
            && now.saturating_duration_since(since) >= quiet_for * 3
    }

    fn act(
        &mut self,
        store: &Store,
        verdict: Verdict,
        now: Instant,
        out: &mut Vec<Effect>,
    ) -> anyhow::Result<()> {
        match verdict {
            Verdict::Follow(hub) => {
                self.note_term(store, hub.term, out)?;
                if self.is_hub() || store.was_hub()? {
                    // Back from a crash as hub (or a hub that missed its own step-down): what
                    // it holds goes to the hub now, compared by mid once its journal is here.
                    self.give_up_hub(store, Some(hub), out)?;
                } else {
                    self.follow(Some(hub), out);
                }
            }
            Verdict::Wait => {}
            Verdict::Claim { seen } => self.claim(store, seen, now, out)?,
            Verdict::StayHub => {
                if self.fenced_at.take().is_some() && self.handover.is_none() {
                    // The higher term that fenced it went away without a hub (or it woke and
                    // found itself still the hub): serve again.
                    store.set_authority(true);
                }
                if let Some((to, at)) = &self.handover
                    && now.saturating_duration_since(*at) >= HANDOVER_TIMEOUT
                {
                    tracing::warn!(to = %to, "handover not taken up; staying hub");
                    self.call_off_handover(store, now, out);
                }
            }
            Verdict::StepDown(winner) => {
                self.note_term(store, winner.hub_term, out)?;
                if self.is_hub() {
                    self.give_up_hub(store, Some(winner), out)?;
                } else {
                    self.follow(Some(winner), out);
                }
            }
            Verdict::Fence => {
                store.set_authority(false);
                let since = *self.fenced_at.get_or_insert(now);
                if now.saturating_duration_since(since) >= FENCE_TIMEOUT {
                    // The higher term's hub never showed: give the hub up and let the
                    // election run again (this node may well win it, with a new term).
                    self.give_up_hub(store, None, out)?;
                }
            }
            Verdict::HandOver(to) => match &self.handover {
                None => {
                    tracing::info!(to = %to.name, "handing the hub back to the preferred node");
                    store.set_authority(false);
                    out.push(Effect::Gossip(SelfUpdate {
                        handover_to: Some(Some(to.node_id.clone())),
                        ..SelfUpdate::default()
                    }));
                    self.handover = Some((to.node_id, now));
                }
                Some((_, at)) if now.saturating_duration_since(*at) >= HANDOVER_TIMEOUT => {
                    self.call_off_handover(store, now, out);
                }
                Some(_) => {}
            },
        }
        Ok(())
    }

    fn call_off_handover(&mut self, store: &Store, now: Instant, out: &mut Vec<Effect>) {
        self.handover = None;
        self.no_handover_until = Some(now + HANDOVER_PAUSE);
        store.set_authority(true);
        out.push(Effect::Gossip(SelfUpdate {
            handover_to: Some(None),
            ..SelfUpdate::default()
        }));
    }

    fn note_term(&mut self, store: &Store, term: i64, out: &mut Vec<Effect>) -> anyhow::Result<()> {
        let known = store.note_term(term)?;
        if known != self.told_term {
            self.told_term = known;
            out.push(Effect::Gossip(SelfUpdate {
                term: Some(known),
                ..SelfUpdate::default()
            }));
        }
        Ok(())
    }

    /// Claims the hub, all or nothing ([`Store::claim_hub`]); a claim that fails leaves
    /// nothing behind and the next one waits. A node whose journal is still being copied does
    /// not claim at all.
    fn claim(
        &mut self,
        store: &Store,
        seen: i64,
        now: Instant,
        out: &mut Vec<Effect>,
    ) -> anyhow::Result<()> {
        if self.no_claim_until.is_some_and(|t| now < t) || !store.claim_ready()? {
            return Ok(());
        }
        let claim = match store.claim_hub(seen) {
            Ok(claim) => claim,
            Err(e) => {
                tracing::error!(error = %e, "cannot claim the hub");
                self.back_off_claims(now);
                return Ok(());
            }
        };
        self.claim_failures = 0;
        self.no_claim_until = None;
        self.held = Held::Hub { since: now };
        self.following = None;
        self.handover = None;
        self.fenced_at = None;
        self.told_term = claim.term;
        store.hold_authority_for(LEASE);
        out.push(Effect::Gossip(SelfUpdate {
            term: Some(claim.term),
            hub_term: Some(claim.term),
            claimed_from: Some(claim.from_version),
            handover_to: Some(None),
            prev: Some(claim.prev_hub.clone().map(|h| (h, claim.prev_term))),
            ..SelfUpdate::default()
        }));
        out.push(Effect::ServeHub(claim));
        Ok(())
    }

    fn back_off_claims(&mut self, now: Instant) {
        let wait = CLAIM_BACKOFF
            .saturating_mul(1 << self.claim_failures.min(5))
            .min(CLAIM_BACKOFF_MAX);
        self.claim_failures += 1;
        self.no_claim_until = Some(now + wait);
    }

    /// Stops being hub (writes fenced, the data to come afresh from `winner`, what it lacks
    /// replayed into it), then follows `winner` or nobody.
    fn give_up_hub(
        &mut self,
        store: &Store,
        winner: Option<Member>,
        out: &mut Vec<Effect>,
    ) -> anyhow::Result<()> {
        store.step_down()?;
        tracing::warn!(
            winner = winner.as_ref().map(|w| w.name.as_str()),
            "stepped down as hub; what the new hub lacks is replayed into it"
        );
        out.push(Effect::Gossip(SelfUpdate {
            hub_term: Some(0),
            claimed_from: Some(0),
            handover_to: Some(None),
            prev: Some(None),
            ..SelfUpdate::default()
        }));
        self.held = Held::Follower;
        self.handover = None;
        self.fenced_at = None;
        self.following = None;
        self.follow(winner, out);
        Ok(())
    }

    fn follow(&mut self, hub: Option<Member>, out: &mut Vec<Effect>) {
        if hub.is_some() {
            // The shop has a hub again: earlier failed claims say nothing of the next one.
            self.claim_failures = 0;
            self.no_claim_until = None;
        }
        let key = hub.as_ref().map(|h| (h.node_id.clone(), h.hub_term));
        if self.following == key && key.is_some() {
            return;
        }
        self.following = key;
        out.push(Effect::Follow(hub));
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::time::SystemTime;

    use capsule_protocol::Schema;
    use capsule_store::Durability;

    use super::*;

    /// A store and a controller on one virtual clock.
    struct Node {
        _dir: tempfile::TempDir,
        store: Store,
        control: Control,
        ms: Arc<AtomicU64>,
        base: Instant,
    }

    fn node(priority: i64) -> Node {
        let dir = tempfile::tempdir().unwrap();
        let ms = Arc::new(AtomicU64::new(0));
        let (base, wall) = (Instant::now(), SystemTime::now());
        let clock = ms.clone();
        let store = Store::open_with(
            dir.path().join("n.sqlite3"),
            Arc::new(Schema::builtin()),
            Durability::Replica,
        )
        .unwrap()
        .with_clock(Arc::new(move || {
            let d = Duration::from_millis(clock.load(Ordering::SeqCst));
            (base + d, wall + d)
        }));
        store.set_authority(false);
        let control = Control::new(
            ControlConfig {
                eligible: true,
                priority,
                demo: true,
                handback_quiet: Duration::from_secs(10),
            },
            base,
        );
        Node {
            _dir: dir,
            store,
            control,
            ms,
            base,
        }
    }

    impl Node {
        fn me(&self, hub_term: i64) -> Member {
            Member {
                node_id: self.store.node_id().to_string(),
                name: "me".into(),
                url: "http://me".into(),
                eligible: true,
                priority: 10,
                fresh: self.store.freshness().unwrap(),
                term: self.store.term().unwrap(),
                hub_term,
                claimed_from: 0,
                prev_hub: None,
                prev_term: 0,
                handover_to: None,
            }
        }

        /// Moves the clock to `at_ms` and ticks with `live` in view.
        fn tick_at(&mut self, at_ms: u64, hub_term: i64, live: &[Member]) -> Vec<Effect> {
            self.ms.store(at_ms, Ordering::SeqCst);
            let now = self.base + Duration::from_millis(at_ms);
            let me = self.me(hub_term);
            self.control
                .tick(&self.store, &me, live, Some(0), now)
                .unwrap()
        }

        /// Ticks every 100 ms from 0 until it claims; returns the time and the term.
        fn become_hub(&mut self) -> (u64, i64) {
            for t in (0..10_000).step_by(100) {
                for e in self.tick_at(t, 0, &[]) {
                    if let Effect::ServeHub(c) = e {
                        return (t, c.term);
                    }
                }
            }
            panic!("never claimed");
        }

        /// Ticks every 100 ms from `from` to `to`.
        fn run(&mut self, from: u64, to: u64, hub_term: i64, live: &[Member]) -> Vec<Effect> {
            let mut all = Vec::new();
            for t in (from..=to).step_by(100) {
                all.extend(self.tick_at(t, hub_term, live));
            }
            all
        }
    }

    fn other_hub(term: i64) -> Member {
        Member {
            node_id: "zz-other".into(),
            name: "Till".into(),
            url: "http://till".into(),
            eligible: true,
            priority: 1,
            fresh: 0,
            term,
            hub_term: term,
            claimed_from: 0,
            prev_hub: None,
            prev_term: 0,
            handover_to: None,
        }
    }

    /// Loads a snapshot of `scope` from an empty hub into `n`'s store, as a joining node does.
    fn load_from_a_hub(n: &Node, scope: capsule_store::Scope) {
        let dir = tempfile::tempdir().unwrap();
        let hub = Store::open(dir.path().join("hub.sqlite3"), Arc::new(Schema::builtin())).unwrap();
        let mut doc = Vec::new();
        hub.write_snapshot(scope, &mut doc).unwrap();
        n.store.load_snapshot_from(&doc[..]).unwrap();
    }

    /// Found by simulation seed 1080: the best candidate's claims failed four times in a row
    /// (its wait grew to 8 s) while every other node waited for it: no hub for 30 ticks.
    #[test]
    fn a_node_whose_claim_failed_stands_aside_until_its_wait_is_over() {
        let mut n = node(10);
        n.store.fail_next_claim();
        let effects = n.run(0, 2_500, 0, &[]);
        assert!(n.control.claim_failures() == 1, "the claim did not fail");
        assert!(!effects.iter().any(|e| matches!(e, Effect::ServeHub(_))));
        let told: Vec<Option<bool>> = effects
            .iter()
            .filter_map(|e| match e {
                Effect::Gossip(u) => u.eligible.map(Some),
                _ => None,
            })
            .collect();
        assert_eq!(
            told.last(),
            Some(&Some(false)),
            "the others were not told to go on without it"
        );
        // Its wait over (1 s after the first failure), it may lead again, and claims.
        let effects = n.run(2_600, 5_000, 0, &[]);
        assert!(
            effects
                .iter()
                .any(|e| matches!(e, Effect::Gossip(u) if u.eligible == Some(true)))
        );
        assert!(effects.iter().any(|e| matches!(e, Effect::ServeHub(_))));
    }

    #[test]
    fn a_node_still_copying_the_history_neither_claims_nor_lets_others_wait_for_it() {
        let mut n = node(10);
        load_from_a_hub(&n, capsule_store::Scope::Day);
        let effects = n.run(0, 20_000, 0, &[]);
        assert!(
            !effects.iter().any(|e| matches!(e, Effect::ServeHub(_))),
            "a node without the shop's history became hub"
        );
        assert!(
            effects
                .iter()
                .any(|e| matches!(e, Effect::Gossip(u) if u.eligible == Some(false))),
            "the others were not told it may not lead"
        );
        // Not even when the hub hands over to it.
        let mut hub = other_hub(3);
        hub.handover_to = Some(n.store.node_id().to_string());
        let effects = n.run(20_100, 25_000, 0, &[hub]);
        assert!(!effects.iter().any(|e| matches!(e, Effect::ServeHub(_))));
        // With its history whole it may lead again.
        load_from_a_hub(&n, capsule_store::Scope::Full);
        let effects = n.run(25_100, 40_000, 0, &[]);
        assert!(
            effects
                .iter()
                .any(|e| matches!(e, Effect::Gossip(u) if u.eligible == Some(true)))
        );
        assert!(effects.iter().any(|e| matches!(e, Effect::ServeHub(_))));
    }

    #[test]
    fn a_hub_that_stood_still_takes_no_write_until_it_has_listened_then_follows_the_new_hub() {
        let mut n = node(10);
        let effects = n.run(0, 2500, 0, &[]);
        assert!(
            effects
                .iter()
                .any(|e| matches!(e, Effect::ServeHub(c) if c.term == 1))
        );
        assert!(n.store.is_authority());
        n.run(2600, 3000, 1, &[]);
        // Frozen 10 s; meanwhile a till became hub of term 2.
        assert!(
            !n.store.is_authority(),
            "the lease ran out while it stood still"
        );
        let woke = n.tick_at(13_000, 1, &[other_hub(2)]);
        assert!(woke.is_empty(), "decided before listening: {woke:?}");
        assert!(!n.store.is_authority());
        let later = n.run(13_100, 14_200, 1, &[other_hub(2)]);
        assert!(
            later
                .iter()
                .any(|e| matches!(e, Effect::Follow(Some(h)) if h.node_id == "zz-other")),
            "{later:?}"
        );
        assert!(!n.store.is_authority());
        assert!(!n.control.is_hub());
    }

    #[test]
    fn a_hub_that_stood_still_and_is_still_the_hub_serves_again() {
        let mut n = node(10);
        n.become_hub();
        n.run(2100, 3000, 1, &[]);
        n.tick_at(8_000, 1, &[]);
        assert!(!n.store.is_authority());
        n.run(8_100, 9_200, 1, &[]);
        assert!(
            n.store.is_authority(),
            "nobody else claimed: it serves again"
        );
    }

    #[test]
    fn a_failed_claim_uses_no_term_and_waits_longer_each_time() {
        let mut n = node(10);
        n.store.fail_next_claim();
        let effects = n.run(0, 2000, 0, &[]);
        assert!(effects.iter().all(|e| !matches!(e, Effect::ServeHub(_))));
        assert_eq!(n.store.term().unwrap(), 0);
        assert_eq!(n.control.claim_failures(), 1);
        // Backing off: no claim for a second.
        n.store.fail_next_claim();
        n.run(2100, 2900, 0, &[]);
        assert_eq!(n.control.claim_failures(), 1);
        n.run(3000, 3000, 0, &[]);
        assert_eq!(n.control.claim_failures(), 2);
        // Then two seconds; then it claims term 1, the first real one.
        assert!(
            n.run(3100, 4900, 0, &[])
                .iter()
                .all(|e| !matches!(e, Effect::ServeHub(_)))
        );
        let claimed = n.tick_at(5000, 0, &[]);
        assert!(
            claimed
                .iter()
                .any(|e| matches!(e, Effect::ServeHub(c) if c.term == 1)),
            "{claimed:?}"
        );
    }

    #[test]
    fn a_hub_fenced_by_a_higher_term_without_a_hub_gives_up_within_a_second() {
        let mut n = node(10);
        n.become_hub();
        let mut ghost = other_hub(0);
        ghost.term = 5;
        n.run(2600, 2700, 1, std::slice::from_ref(&ghost));
        assert!(!n.store.is_authority(), "fenced at once");
        let effects = n.run(2800, 3800, 1, std::slice::from_ref(&ghost));
        assert!(
            effects.iter().any(|e| matches!(e, Effect::Follow(None))),
            "{effects:?}"
        );
    }
}
