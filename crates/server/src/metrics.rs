//! What a node measures about the API it serves and the stream it sends.

use std::sync::atomic::{AtomicI64, Ordering};

use capsule_protocol::metrics::{Counter, Histogram, HistogramSummary, render_value};
use serde::Serialize;

/// What a frame carries, for byte accounting per rollout mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FrameKind {
    /// Capsules (signals).
    Capsule,
    /// Full rows (legacy mode).
    Rows,
    /// Hello, lagged, too-old, reset.
    Control,
}

const KINDS: [FrameKind; 3] = [FrameKind::Capsule, FrameKind::Rows, FrameKind::Control];

impl FrameKind {
    fn index(self) -> usize {
        self as usize
    }

    pub fn as_str(self) -> &'static str {
        match self {
            FrameKind::Capsule => "capsule",
            FrameKind::Rows => "rows",
            FrameKind::Control => "control",
        }
    }
}

#[derive(Debug, Default)]
pub struct NodeMetrics {
    ws_frames_sent: [Counter; 3],
    ws_bytes_sent: [Counter; 3],
    pub frames_published: Counter,
    pub replayed_frames: Counter,
    pub lagged_disconnects: Counter,
    /// Capsule-log entries the publisher read.
    pub capsules_logged: Counter,
    /// Capsule items sent out after coalescing (once per frame, not per subscriber).
    pub capsules_sent: Counter,
    pub rows_sent: Counter,
    pub rest_pulls: Counter,
    pub rest_pull_ids: Counter,
    pub rest_pull_latency: Histogram,
    /// Body bytes of pulls, snapshots, change lists, the journal and tables as sent on the
    /// wire (after compression).
    pub rest_bytes_sent: Counter,
    pub mutations: Counter,
    pub mutation_requests: Counter,
    pub mutation_latency: Histogram,
    pub snapshots: Counter,
    pub snapshot_last_bytes: AtomicI64,
    pub snapshot_build: Histogram,
    pub changes_requests: Counter,
}

/// The JSON form of [`NodeMetrics`] (`GET /api/metrics`).
#[derive(Debug, Clone, Serialize)]
pub struct NodeMetricsJson {
    pub ws_frames_sent: std::collections::BTreeMap<&'static str, u64>,
    pub ws_bytes_sent: std::collections::BTreeMap<&'static str, u64>,
    pub frames_published: u64,
    pub replayed_frames: u64,
    pub lagged_disconnects: u64,
    pub capsules_logged: u64,
    pub capsules_sent: u64,
    /// Log entries per capsule sent: how much coalescing saved (1.0 = nothing).
    pub coalescing_ratio: f64,
    pub rows_sent: u64,
    pub rest_pulls: u64,
    pub rest_pull_ids: u64,
    pub rest_pull_latency: HistogramSummary,
    pub rest_bytes_sent: u64,
    pub mutations: u64,
    pub mutation_requests: u64,
    pub mutation_latency: HistogramSummary,
    pub snapshots: u64,
    pub snapshot_last_bytes: i64,
    pub snapshot_build: HistogramSummary,
    pub changes_requests: u64,
    /// Bytes this node's store wrote to its write-ahead log (whole pages per commit).
    pub wal_bytes_written: u64,
}

impl NodeMetrics {
    pub fn frame_sent(&self, kind: FrameKind, bytes: usize) {
        self.ws_frames_sent[kind.index()].inc();
        self.ws_bytes_sent[kind.index()].add(bytes as u64);
    }

    /// Records one part pull served for `ids` entities.
    pub fn pull_served(&self, ids: u64, took: std::time::Duration) {
        self.rest_pulls.inc();
        self.rest_pull_ids.add(ids);
        self.rest_pull_latency.observe(took);
    }

    fn coalescing_ratio(&self) -> f64 {
        let sent = self.capsules_sent.get();
        if sent == 0 {
            1.0
        } else {
            self.capsules_logged.get() as f64 / sent as f64
        }
    }

    pub fn to_json(&self) -> NodeMetricsJson {
        NodeMetricsJson {
            ws_frames_sent: KINDS
                .iter()
                .map(|k| (k.as_str(), self.ws_frames_sent[k.index()].get()))
                .collect(),
            ws_bytes_sent: KINDS
                .iter()
                .map(|k| (k.as_str(), self.ws_bytes_sent[k.index()].get()))
                .collect(),
            frames_published: self.frames_published.get(),
            replayed_frames: self.replayed_frames.get(),
            lagged_disconnects: self.lagged_disconnects.get(),
            capsules_logged: self.capsules_logged.get(),
            capsules_sent: self.capsules_sent.get(),
            coalescing_ratio: self.coalescing_ratio(),
            rows_sent: self.rows_sent.get(),
            rest_pulls: self.rest_pulls.get(),
            rest_pull_ids: self.rest_pull_ids.get(),
            rest_pull_latency: self.rest_pull_latency.summary(),
            rest_bytes_sent: self.rest_bytes_sent.get(),
            mutations: self.mutations.get(),
            mutation_requests: self.mutation_requests.get(),
            mutation_latency: self.mutation_latency.summary(),
            snapshots: self.snapshots.get(),
            snapshot_last_bytes: self.snapshot_last_bytes.load(Ordering::Relaxed),
            snapshot_build: self.snapshot_build.summary(),
            changes_requests: self.changes_requests.get(),
            wal_bytes_written: capsule_store::wal_bytes_written(),
        }
    }

    /// Appends the Prometheus text form.
    pub fn render(&self, out: &mut String) {
        for k in KINDS {
            let l = format!("{{kind=\"{}\"}}", k.as_str());
            render_value(
                out,
                "capsule_ws_frames_sent_total",
                "counter",
                "WebSocket frames sent, per frame kind (capsule = signals, rows = legacy full rows)",
                &l,
                self.ws_frames_sent[k.index()].get() as f64,
            );
        }
        for k in KINDS {
            let l = format!("{{kind=\"{}\"}}", k.as_str());
            render_value(
                out,
                "capsule_ws_bytes_sent_total",
                "counter",
                "WebSocket bytes sent, per frame kind",
                &l,
                self.ws_bytes_sent[k.index()].get() as f64,
            );
        }
        let c = |out: &mut String, name: &str, help: &str, v: u64| {
            render_value(out, name, "counter", help, "", v as f64)
        };
        c(
            out,
            "capsule_frames_published_total",
            "frames published to the stream (before fan-out)",
            self.frames_published.get(),
        );
        c(
            out,
            "capsule_replayed_frames_total",
            "frames replayed from the change log to reconnecting subscribers",
            self.replayed_frames.get(),
        );
        c(
            out,
            "capsule_lagged_disconnects_total",
            "subscribers dropped for falling behind",
            self.lagged_disconnects.get(),
        );
        c(
            out,
            "capsule_log_entries_published_total",
            "capsule log entries published",
            self.capsules_logged.get(),
        );
        c(
            out,
            "capsule_capsules_sent_total",
            "capsule items sent after coalescing",
            self.capsules_sent.get(),
        );
        c(
            out,
            "capsule_rows_sent_total",
            "full entity rows sent in legacy/both mode",
            self.rows_sent.get(),
        );
        render_value(
            out,
            "capsule_coalescing_ratio",
            "gauge",
            "log entries per capsule sent",
            "",
            self.coalescing_ratio(),
        );
        c(
            out,
            "capsule_rest_pulls_total",
            "part pull requests served (one POST /api/pull of many entities counts once)",
            self.rest_pulls.get(),
        );
        c(
            out,
            "capsule_rest_pull_ids_total",
            "entity ids requested by part pulls",
            self.rest_pull_ids.get(),
        );
        self.rest_pull_latency.render(
            "capsule_rest_pull_seconds",
            "time to serve a part pull request (a POST /api/pull: all its entities)",
            out,
        );
        c(
            out,
            "capsule_rest_bytes_sent_total",
            "body bytes of pulls, snapshots, change lists, journal and tables on the wire (after compression)",
            self.rest_bytes_sent.get(),
        );
        c(
            out,
            "capsule_mutations_total",
            "mutations received",
            self.mutations.get(),
        );
        c(
            out,
            "capsule_mutation_requests_total",
            "mutation requests received",
            self.mutation_requests.get(),
        );
        self.mutation_latency.render(
            "capsule_mutation_seconds",
            "time to apply (or forward) a mutation request",
            out,
        );
        c(
            out,
            "capsule_snapshots_total",
            "snapshots served",
            self.snapshots.get(),
        );
        render_value(
            out,
            "capsule_snapshot_last_bytes",
            "gauge",
            "size of the last snapshot served",
            "",
            self.snapshot_last_bytes.load(Ordering::Relaxed) as f64,
        );
        self.snapshot_build.render(
            "capsule_snapshot_build_seconds",
            "time to build and encode a snapshot",
            out,
        );
        c(
            out,
            "capsule_changes_requests_total",
            "GET /api/changes requests",
            self.changes_requests.get(),
        );
        c(
            out,
            "capsule_wal_bytes_written_total",
            "bytes the store wrote to its write-ahead log (whole pages per commit, before each fsync)",
            capsule_store::wal_bytes_written(),
        );
    }
}
