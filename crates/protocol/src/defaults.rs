//! The defaults every node shares, in one place: timings of the stream and of following it,
//! and the request sizes both sides agree on. The CLI, the hub and the followers read them
//! from here.

use std::time::Duration;

/// The hub's coalescing window for the capsule stream.
pub const COALESCE: Duration = Duration::from_millis(250);
/// A follower pulls each entity at most once per this window.
pub const PULL_WINDOW: Duration = Duration::from_millis(100);
/// The hub pings each idle subscriber this often...
pub const PING_EVERY: Duration = Duration::from_secs(1);
/// ...and a follower that hears nothing for this long treats the link as dead (a frozen hub
/// or a pulled cable, which never closes the socket).
pub const SILENCE: Duration = Duration::from_millis(2500);
/// Most ids one batch pull may name (the hub refuses more).
pub const MAX_IDS_PER_PULL: usize = 500;
/// Ids a follower puts in one batch pull.
pub const IDS_PER_PULL: usize = 200;
/// Most entities (wants) one `POST /api/pull` may name...
pub const MAX_PULL_WANTS: usize = 32;
/// ...and most ids over all of them (the hub refuses more; a follower sends up to this).
pub const MAX_IDS_PER_REQUEST: usize = 1000;
/// Ids a follower puts in one `POST /api/pull` over all its entities.
pub const IDS_PER_REQUEST: usize = MAX_IDS_PER_REQUEST;
/// Largest `POST /api/pull` body once decompressed (1,000 ids with their versions fit many
/// times over; a zstd bomb stops here).
pub const MAX_PULL_BODY: usize = 1024 * 1024;

/// The highest term a shop can reach: a hub of term T issues versions from T·2³², and every
/// version must stay below 2⁵³ (browsers hold them exactly). A term above it in a peer's
/// gossip is not one any node could ever claim past, so every node ignores it: one bad
/// number must not leave the shop unable to elect a hub.
pub const MAX_TERM: i64 = (1 << 21) - 1;

/// The most an order's subtotal, discounts or total may come to, in minor units (100 billion
/// of a two-digit currency). Every report sums a day's orders in 64 bits: at this bound a day
/// of 400,000 orders still adds up, so no order a till can ring up ever blocks an X or Z
/// report (what the columns' own ranges allowed did: three orders of 500 lines at the top
/// price with 100% tax and service).
pub const MAX_ORDER_TOTAL: i64 = 10_000_000_000_000;
