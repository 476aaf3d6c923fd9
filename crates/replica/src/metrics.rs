//! What a till measures about following the hub: traffic in, pulls, merges, end-to-end lag.

use std::sync::atomic::{AtomicI64, Ordering};

use capsule_protocol::metrics::{Counter, Histogram, HistogramSummary, render_value};
use serde::Serialize;

#[derive(Debug, Default)]
pub struct ReplicaMetrics {
    pub ws_frames_received: Counter,
    pub ws_bytes_received: Counter,
    /// Of which legacy full-row frames.
    pub ws_rows_bytes_received: Counter,
    pub capsules_received: Counter,
    pub rest_requests: Counter,
    pub rest_bytes: Counter,
    /// Bytes of the requests' paths and queries (a pull names its ids there).
    pub rest_request_bytes: Counter,
    pub rest_failures: Counter,
    pub pull_latency: Histogram,
    pub merge_latency: Histogram,
    /// Hub commit -> merged here.
    pub e2e_lag: Histogram,
    pub snapshots: Counter,
    pub snapshot_bytes: Counter,
    pub gap_repairs: Counter,
    /// Entities pulled whole because a child delta did not fit the copy here.
    pub full_repulls: Counter,
    pub reconnects: Counter,
    /// Pages of the shop's history copied after a day snapshot.
    pub history_pages: Counter,
    pub last_seq: AtomicI64,
    pub hub_seq: AtomicI64,
}

#[derive(Debug, Clone, Serialize)]
pub struct ReplicaMetricsJson {
    pub ws_frames_received: u64,
    pub ws_bytes_received: u64,
    pub ws_rows_bytes_received: u64,
    pub capsules_received: u64,
    pub rest_requests: u64,
    pub rest_bytes: u64,
    pub rest_request_bytes: u64,
    pub rest_failures: u64,
    pub pull_latency: HistogramSummary,
    pub merge_latency: HistogramSummary,
    pub e2e_lag: HistogramSummary,
    pub snapshots: u64,
    pub snapshot_bytes: u64,
    pub gap_repairs: u64,
    pub full_repulls: u64,
    pub reconnects: u64,
    pub history_pages: u64,
    pub last_seq: i64,
    pub hub_seq: i64,
    pub lag: i64,
}

impl ReplicaMetrics {
    pub fn to_json(&self) -> ReplicaMetricsJson {
        let last = self.last_seq.load(Ordering::Relaxed);
        let hub = self.hub_seq.load(Ordering::Relaxed);
        ReplicaMetricsJson {
            ws_frames_received: self.ws_frames_received.get(),
            ws_bytes_received: self.ws_bytes_received.get(),
            ws_rows_bytes_received: self.ws_rows_bytes_received.get(),
            capsules_received: self.capsules_received.get(),
            rest_requests: self.rest_requests.get(),
            rest_bytes: self.rest_bytes.get(),
            rest_request_bytes: self.rest_request_bytes.get(),
            rest_failures: self.rest_failures.get(),
            pull_latency: self.pull_latency.summary(),
            merge_latency: self.merge_latency.summary(),
            e2e_lag: self.e2e_lag.summary(),
            snapshots: self.snapshots.get(),
            snapshot_bytes: self.snapshot_bytes.get(),
            gap_repairs: self.gap_repairs.get(),
            full_repulls: self.full_repulls.get(),
            reconnects: self.reconnects.get(),
            history_pages: self.history_pages.get(),
            last_seq: last,
            hub_seq: hub,
            lag: (hub - last).max(0),
        }
    }

    pub fn render(&self, out: &mut String) {
        let c = |out: &mut String, name: &str, help: &str, v: u64| {
            render_value(out, name, "counter", help, "", v as f64)
        };
        c(
            out,
            "capsule_replica_ws_frames_received_total",
            "frames received from the hub",
            self.ws_frames_received.get(),
        );
        c(
            out,
            "capsule_replica_ws_bytes_received_total",
            "bytes received from the hub's stream",
            self.ws_bytes_received.get(),
        );
        c(
            out,
            "capsule_replica_ws_rows_bytes_received_total",
            "bytes of legacy full-row frames received",
            self.ws_rows_bytes_received.get(),
        );
        c(
            out,
            "capsule_replica_history_pages_total",
            "pages of the shop's history copied after a day snapshot",
            self.history_pages.get(),
        );
        c(
            out,
            "capsule_replica_capsules_received_total",
            "capsules received",
            self.capsules_received.get(),
        );
        c(
            out,
            "capsule_replica_rest_requests_total",
            "REST requests made to the hub (pulls, changes, snapshots)",
            self.rest_requests.get(),
        );
        c(
            out,
            "capsule_replica_rest_bytes_total",
            "bytes received over REST",
            self.rest_bytes.get(),
        );
        c(
            out,
            "capsule_replica_rest_request_bytes_total",
            "bytes of REST requests sent (paths, queries and bodies as sent)",
            self.rest_request_bytes.get(),
        );
        c(
            out,
            "capsule_replica_rest_failures_total",
            "REST requests that failed",
            self.rest_failures.get(),
        );
        self.pull_latency.render(
            "capsule_replica_pull_seconds",
            "time of one pull request (a POST /api/pull: a whole burst)",
            out,
        );
        self.merge_latency.render(
            "capsule_replica_merge_seconds",
            "time to merge one pulled batch",
            out,
        );
        self.e2e_lag.render(
            "capsule_replica_e2e_lag_seconds",
            "hub commit to merged on this till",
            out,
        );
        c(
            out,
            "capsule_replica_snapshots_total",
            "snapshots taken",
            self.snapshots.get(),
        );
        c(
            out,
            "capsule_replica_gap_repairs_total",
            "stream gaps repaired from the change log",
            self.gap_repairs.get(),
        );
        c(
            out,
            "capsule_replica_full_repulls_total",
            "entities pulled whole because a child delta did not fit the local copy",
            self.full_repulls.get(),
        );
        c(
            out,
            "capsule_replica_reconnects_total",
            "connections to the hub made",
            self.reconnects.get(),
        );
        let j = self.to_json();
        render_value(
            out,
            "capsule_replica_seq",
            "gauge",
            "last stream position merged",
            "",
            j.last_seq as f64,
        );
        render_value(
            out,
            "capsule_replica_lag",
            "gauge",
            "stream positions behind the hub",
            "",
            j.lag as f64,
        );
    }

    pub(crate) fn set_seq(&self, last: i64) {
        self.last_seq.store(last, Ordering::Relaxed);
        self.hub_seq.fetch_max(last, Ordering::Relaxed);
    }
}
