//! A budget for the log lines the gossip library writes: a guest on the shop's network can
//! make it warn once per datagram (garbage to the gossip port, another cluster's messages),
//! which filled 59 MB of stderr in one flood. Its lines pass at most [`PER_MINUTE`] a minute;
//! the rest are counted (`/metrics`) and summed up in one line a minute ([`log_summary`]).

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tracing::subscriber::Interest;
use tracing::{Metadata, Subscriber};
use tracing_subscriber::layer::{Context, Filter};

/// Gossip log lines written per minute; more are counted, not written.
pub const PER_MINUTE: u32 = 10;
const WINDOW: Duration = Duration::from_secs(60);

static SEEN: AtomicU64 = AtomicU64::new(0);
static DROPPED: AtomicU64 = AtomicU64::new(0);
static INVALID_DATAGRAMS: AtomicU64 = AtomicU64::new(0);

struct Window {
    started: Instant,
    written: u32,
    /// Dropped since the last summary line.
    unsummed: u64,
    summed_at: Instant,
}

static WINDOW_STATE: Mutex<Option<Window>> = Mutex::new(None);

/// The filter the node's log output goes through.
pub struct GossipLogBudget;

fn from_gossip(meta: &Metadata<'_>) -> bool {
    meta.is_event() && meta.target().starts_with("chitchat")
}

impl<S: Subscriber> Filter<S> for GossipLogBudget {
    fn enabled(&self, meta: &Metadata<'_>, _: &Context<'_, S>) -> bool {
        if !from_gossip(meta) {
            return true;
        }
        SEEN.fetch_add(1, Ordering::Relaxed);
        // The transport's one warning per undecodable datagram names its length field.
        if meta.fields().field("payload_len").is_some() {
            INVALID_DATAGRAMS.fetch_add(1, Ordering::Relaxed);
        }
        let now = Instant::now();
        let mut guard = WINDOW_STATE.lock().unwrap_or_else(|p| p.into_inner());
        let w = guard.get_or_insert(Window {
            started: now,
            written: 0,
            unsummed: 0,
            summed_at: now,
        });
        if now.duration_since(w.started) >= WINDOW {
            w.started = now;
            w.written = 0;
        }
        if w.written < PER_MINUTE {
            w.written += 1;
            true
        } else {
            w.unsummed += 1;
            DROPPED.fetch_add(1, Ordering::Relaxed);
            false
        }
    }

    fn callsite_enabled(&self, meta: &'static Metadata<'static>) -> Interest {
        if from_gossip(meta) {
            // Asked per event, so each one is counted.
            Interest::sometimes()
        } else {
            Interest::always()
        }
    }
}

/// Writes one line for the gossip lines dropped since the last such line, at most once a
/// minute (call it often; it is cheap when there is nothing to say).
pub fn log_summary() {
    let dropped = {
        let mut guard = WINDOW_STATE.lock().unwrap_or_else(|p| p.into_inner());
        let Some(w) = guard.as_mut() else { return };
        if w.unsummed == 0 || w.summed_at.elapsed() < WINDOW {
            return;
        }
        w.summed_at = Instant::now();
        std::mem::take(&mut w.unsummed)
    };
    tracing::warn!(
        dropped,
        invalid_datagrams_total = INVALID_DATAGRAMS.load(Ordering::Relaxed),
        "gossip: {dropped} more log lines in the last minute were counted, not written (a device on the network sending the gossip port what it cannot read?)"
    );
}

/// The counters as Prometheus text (with the signed gossip's drops).
pub fn render(out: &mut String) {
    crate::secure::render(out);
    for (name, help, v) in [
        (
            "capsule_gossip_log_events_total",
            "log lines the gossip library wanted to write",
            &SEEN,
        ),
        (
            "capsule_gossip_log_dropped_total",
            "gossip log lines counted but not written (over the budget)",
            &DROPPED,
        ),
        (
            "capsule_gossip_invalid_datagrams_total",
            "datagrams to the gossip port that were not gossip",
            &INVALID_DATAGRAMS,
        ),
    ] {
        capsule_protocol::metrics::render_value(
            out,
            name,
            "counter",
            help,
            "",
            v.load(Ordering::Relaxed) as f64,
        );
    }
}
