//! The election rule: from what one node sees of the mesh, what it should be now. A pure
//! function, so every case is tested without sockets (and under simulated partitions).
//!
//! - Exactly one hub per term among nodes that see each other: a claim takes the highest
//!   term seen + 1; two hubs that meet settle on the higher (term, priority, node id) and
//!   the other steps down.
//! - Candidates are hub-eligible nodes (full replicas, not kitchen screens); the freshest
//!   data wins, then the higher priority, then the node id (so all nodes agree).
//! - The preferred node (highest priority) back after a crash gets the hub back by a
//!   handover once it has caught up and the hub has been quiet and in office long enough.

use std::cmp::Ordering;

use capsule_protocol::defaults::MAX_TERM;

/// One node as the mesh gossips it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub node_id: String,
    pub name: String,
    /// Base URL of its HTTP API, `http://host:port`.
    pub url: String,
    /// May become hub (a full replica, not a kitchen screen).
    pub eligible: bool,
    pub priority: i64,
    /// Highest hub version its data holds.
    pub fresh: i64,
    /// Highest term it has seen.
    pub term: i64,
    /// The term it is hub of (0: not hub).
    pub hub_term: i64,
    /// As hub: the version its data held when it claimed (the old hub's writes above it are
    /// replayed into it by whoever holds them).
    pub claimed_from: i64,
    /// As hub: the hub and term its data followed when it claimed.
    pub prev_hub: Option<String>,
    pub prev_term: i64,
    /// As hub: the node it is handing the hub to.
    pub handover_to: Option<String>,
}

impl Member {
    fn believable(&self) -> bool {
        (0..=MAX_TERM).contains(&self.term) && (0..=MAX_TERM).contains(&self.hub_term)
    }

    fn hub_rank(&self) -> (i64, i64, &str) {
        (self.hub_term, self.priority, self.node_id.as_str())
    }

    fn candidate_rank(&self) -> (i64, i64, &str) {
        (self.fresh, self.priority, self.node_id.as_str())
    }
}

/// Circumstances of the deciding node that the gossip does not carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Situation {
    /// The mesh has had time to show who is there (after start, or after the hub vanished),
    /// so a claim is not made on a partial view.
    pub settled: bool,
    /// As hub: no write for a while and long enough in office to hand over without flapping.
    pub quiet: bool,
}

/// What the deciding node should do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Follow this hub.
    Follow(Member),
    /// Claim the hub with term above `seen`.
    Claim { seen: i64 },
    /// Stay hub.
    StayHub,
    /// Another hub outranks this one: stop writing as hub and follow it.
    StepDown(Member),
    /// A higher term exists but its hub is not visible yet: stop writing as hub and wait.
    Fence,
    /// Hand the hub to this (preferred, caught-up) node: stop writing and let it claim.
    HandOver(Member),
    /// No hub and not the best candidate (or not settled): wait for the best to claim.
    Wait,
}

/// Decides for `me`, given the live members it sees (not including itself). A member that
/// gossips a term no node could claim past ([`MAX_TERM`]) is not believed: it is left out.
pub fn decide(me: &Member, live: &[Member], situation: Situation) -> Verdict {
    let believable: Vec<Member>;
    let live = if live.iter().any(|m| !m.believable()) {
        believable = live.iter().filter(|m| m.believable()).cloned().collect();
        believable.as_slice()
    } else {
        live
    };
    let seen = live.iter().map(|m| m.term).fold(me.term, i64::max);
    let top_hub = live
        .iter()
        .filter(|m| m.hub_term > 0)
        .max_by(|a, b| a.hub_rank().cmp(&b.hub_rank()));
    if me.hub_term > 0 {
        if let Some(h) = top_hub
            && h.hub_rank().cmp(&me.hub_rank()) == Ordering::Greater
        {
            return Verdict::StepDown(h.clone());
        }
        if seen > me.hub_term {
            return Verdict::Fence;
        }
        if situation.quiet
            && let Some(p) = preferred(me, live)
            && p.fresh >= me.fresh
        {
            return Verdict::HandOver(p.clone());
        }
        return Verdict::StayHub;
    }
    if let Some(h) = top_hub {
        // A handover to this node: claim once everything the hub wrote is here.
        if h.handover_to.as_deref() == Some(me.node_id.as_str())
            && me.eligible
            && me.fresh >= h.fresh
        {
            return Verdict::Claim { seen };
        }
        return Verdict::Follow(h.clone());
    }
    if !me.eligible || !situation.settled {
        return Verdict::Wait;
    }
    let best = live
        .iter()
        .filter(|m| m.eligible)
        .chain(std::iter::once(me))
        .max_by(|a, b| a.candidate_rank().cmp(&b.candidate_rank()))
        .expect("me is a candidate");
    if best.node_id == me.node_id {
        Verdict::Claim { seen }
    } else {
        Verdict::Wait
    }
}

/// An eligible live node with a higher priority than the hub's, the highest of them.
fn preferred<'a>(me: &Member, live: &'a [Member]) -> Option<&'a Member> {
    live.iter()
        .filter(|m| m.eligible && m.priority > me.priority)
        .max_by(|a, b| (a.priority, &a.node_id).cmp(&(b.priority, &b.node_id)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(id: &str, priority: i64, fresh: i64) -> Member {
        Member {
            node_id: id.into(),
            name: id.into(),
            url: format!("http://{id}"),
            eligible: true,
            priority,
            fresh,
            term: 0,
            hub_term: 0,
            claimed_from: 0,
            prev_hub: None,
            prev_term: 0,
            handover_to: None,
        }
    }

    fn hub(id: &str, priority: i64, term: i64) -> Member {
        Member {
            term,
            hub_term: term,
            ..node(id, priority, 0)
        }
    }

    const SETTLED: Situation = Situation {
        settled: true,
        quiet: false,
    };

    #[test]
    fn the_freshest_candidate_claims_then_priority_breaks_ties() {
        let manager = node("manager", 10, 100);
        let till = node("till", 1, 101);
        assert_eq!(
            decide(&till, std::slice::from_ref(&manager), SETTLED),
            Verdict::Claim { seen: 0 }
        );
        assert_eq!(decide(&manager, &[till], SETTLED), Verdict::Wait);
        let till = node("till", 1, 100);
        assert_eq!(
            decide(&manager, std::slice::from_ref(&till), SETTLED),
            Verdict::Claim { seen: 0 }
        );
        assert_eq!(decide(&till, &[manager], SETTLED), Verdict::Wait);
    }

    #[test]
    fn nobody_claims_before_the_view_settles_and_screens_never_do() {
        let till = node("till", 1, 5);
        assert_eq!(decide(&till, &[], Situation::default()), Verdict::Wait);
        let screen = Member {
            eligible: false,
            fresh: 999,
            ..node("screen", 100, 5)
        };
        assert_eq!(decide(&screen, &[], SETTLED), Verdict::Wait);
        // A freshest screen does not stop an eligible till from claiming.
        assert_eq!(
            decide(&till, &[screen], SETTLED),
            Verdict::Claim { seen: 0 }
        );
    }

    #[test]
    fn a_claim_is_above_every_term_seen() {
        let mut me = node("a", 1, 5);
        me.term = 3;
        let mut other = node("b", 1, 1);
        other.term = 7;
        assert_eq!(decide(&me, &[other], SETTLED), Verdict::Claim { seen: 7 });
    }

    #[test]
    fn everyone_follows_the_hub_and_two_hubs_settle_on_one() {
        let h = hub("b", 1, 4);
        assert_eq!(
            decide(&node("a", 5, 9), std::slice::from_ref(&h), SETTLED),
            Verdict::Follow(h.clone())
        );
        // After a partition heals: same term, higher priority wins; higher term wins first.
        let a = hub("a", 5, 4);
        assert_eq!(
            decide(&h, std::slice::from_ref(&a), SETTLED),
            Verdict::StepDown(a.clone())
        );
        assert_eq!(
            decide(&a, std::slice::from_ref(&h), SETTLED),
            Verdict::StayHub
        );
        let newer = hub("c", 0, 5);
        assert_eq!(
            decide(&a, std::slice::from_ref(&newer), SETTLED),
            Verdict::StepDown(newer)
        );
    }

    #[test]
    fn a_term_past_the_last_one_a_shop_can_reach_is_ignored() {
        let me = hub("a", 1, 4);
        let mut liar = node("b", 1000, 0);
        liar.term = MAX_TERM + 1;
        assert_eq!(
            decide(&me, std::slice::from_ref(&liar), SETTLED),
            Verdict::StayHub
        );
        liar.hub_term = i64::MAX;
        liar.term = i64::MAX;
        assert_eq!(decide(&me, &[liar], SETTLED), Verdict::StayHub);
        let mut till = node("c", 1, 0);
        till.term = 4;
        let mut liar = node("b", 1000, 0);
        liar.term = i32::MAX as i64;
        assert_eq!(
            decide(&till, &[liar, me.clone()], SETTLED),
            Verdict::Follow(me)
        );
    }

    #[test]
    fn a_hub_that_sees_a_higher_term_without_its_hub_is_fenced() {
        let me = hub("a", 1, 4);
        let mut other = node("b", 1, 0);
        other.term = 5;
        assert_eq!(decide(&me, &[other], SETTLED), Verdict::Fence);
    }

    #[test]
    fn the_preferred_node_gets_the_hub_back_only_caught_up_and_quiet() {
        let mut till_hub = hub("till", 1, 2);
        till_hub.fresh = 50;
        let manager = node("manager", 10, 49);
        let quiet = Situation {
            settled: true,
            quiet: true,
        };
        // Behind: no handover yet.
        assert_eq!(
            decide(&till_hub, std::slice::from_ref(&manager), quiet),
            Verdict::StayHub
        );
        let manager = node("manager", 10, 50);
        // Busy: no handover during the rush.
        assert_eq!(
            decide(&till_hub, std::slice::from_ref(&manager), SETTLED),
            Verdict::StayHub
        );
        assert_eq!(
            decide(&till_hub, std::slice::from_ref(&manager), quiet),
            Verdict::HandOver(manager.clone())
        );
        // The manager claims once the handover names it and it holds everything.
        till_hub.handover_to = Some("manager".into());
        let mut behind = manager.clone();
        behind.fresh = 49;
        assert_eq!(
            decide(&behind, std::slice::from_ref(&till_hub), SETTLED),
            Verdict::Follow(till_hub.clone())
        );
        assert_eq!(
            decide(&manager, std::slice::from_ref(&till_hub), SETTLED),
            Verdict::Claim { seen: 2 }
        );
    }
}
