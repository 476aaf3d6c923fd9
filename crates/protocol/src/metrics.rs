//! Counters and latency histograms that every node keeps, rendered as Prometheus text or JSON.
//!
//! Hand-rolled rather than the `prometheus` or `metrics` crates: we need lock-free counters,
//! latency histograms whose percentiles are exact to 0.1% (`hdrhistogram`, what the dashboard
//! and the benchmark show), fixed Prometheus buckets beside them for scraping, both text
//! formats, and nothing else.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;

/// Histogram bucket upper bounds in milliseconds.
pub const LATENCY_BUCKETS_MS: &[f64] = &[
    0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 7.5, 10.0, 15.0, 20.0, 30.0, 50.0, 75.0, 100.0,
    150.0, 200.0, 300.0, 500.0, 750.0, 1000.0, 1500.0, 2000.0, 3000.0, 5000.0, 10000.0,
];

#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }

    pub fn inc(&self) {
        self.add(1);
    }

    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Longest latency recorded exactly (an hour); longer ones count as an hour.
const MAX_RECORDED_US: u64 = 3_600_000_000;

/// A latency histogram: exact percentiles (microseconds, 3 significant digits) and the
/// Prometheus buckets [`LATENCY_BUCKETS_MS`] (plus +Inf).
#[derive(Debug)]
pub struct Histogram {
    counts: Vec<AtomicU64>,
    sum_us: AtomicU64,
    max_us: AtomicU64,
    exact: std::sync::Mutex<hdrhistogram::Histogram<u64>>,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            counts: (0..=LATENCY_BUCKETS_MS.len())
                .map(|_| AtomicU64::new(0))
                .collect(),
            sum_us: AtomicU64::new(0),
            max_us: AtomicU64::new(0),
            exact: std::sync::Mutex::new(
                hdrhistogram::Histogram::new_with_bounds(1, MAX_RECORDED_US, 3)
                    .expect("valid histogram bounds"),
            ),
        }
    }
}

/// What the dashboard shows of a histogram; percentiles are exact to 0.1%.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct HistogramSummary {
    pub count: u64,
    pub mean_ms: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

impl Histogram {
    pub fn observe_ms(&self, ms: f64) {
        let ms = ms.max(0.0);
        let i = LATENCY_BUCKETS_MS
            .iter()
            .position(|b| ms <= *b)
            .unwrap_or(LATENCY_BUCKETS_MS.len());
        self.counts[i].fetch_add(1, Ordering::Relaxed);
        let us = (ms * 1000.0) as u64;
        self.sum_us.fetch_add(us, Ordering::Relaxed);
        self.max_us.fetch_max(us, Ordering::Relaxed);
        self.exact
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .saturating_record(us.clamp(1, MAX_RECORDED_US));
    }

    pub fn observe(&self, d: std::time::Duration) {
        self.observe_ms(d.as_secs_f64() * 1000.0);
    }

    fn counts(&self) -> Vec<u64> {
        self.counts
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .collect()
    }

    pub fn summary(&self) -> HistogramSummary {
        let exact = self.exact.lock().unwrap_or_else(|p| p.into_inner());
        let count = exact.len();
        if count == 0 {
            return HistogramSummary::default();
        }
        let max_ms = self.max_us.load(Ordering::Relaxed) as f64 / 1000.0;
        let quantile = |q: f64| (exact.value_at_quantile(q) as f64 / 1000.0).min(max_ms);
        HistogramSummary {
            count,
            mean_ms: self.sum_us.load(Ordering::Relaxed) as f64 / 1000.0 / count as f64,
            p50_ms: quantile(0.5),
            p99_ms: quantile(0.99),
            max_ms,
        }
    }

    /// Appends the histogram in Prometheus text format (seconds, as Prometheus expects).
    pub fn render(&self, name: &str, help: &str, out: &mut String) {
        let counts = self.counts();
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        let mut cumulative = 0;
        for (i, b) in LATENCY_BUCKETS_MS.iter().enumerate() {
            cumulative += counts[i];
            let _ = writeln!(out, "{name}_bucket{{le=\"{}\"}} {cumulative}", b / 1000.0);
        }
        cumulative += counts[LATENCY_BUCKETS_MS.len()];
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {cumulative}");
        let _ = writeln!(
            out,
            "{name}_sum {}",
            self.sum_us.load(Ordering::Relaxed) as f64 / 1e6
        );
        let _ = writeln!(out, "{name}_count {cumulative}");
        // The exact quantiles beside the buckets (a gauge per quantile, in seconds).
        let s = self.summary();
        let _ = writeln!(
            out,
            "# HELP {name}_quantile {help} (exact quantiles)\n# TYPE {name}_quantile gauge"
        );
        for (q, ms) in [("0.5", s.p50_ms), ("0.99", s.p99_ms), ("1", s.max_ms)] {
            let _ = writeln!(out, "{name}_quantile{{quantile=\"{q}\"}} {}", ms / 1000.0);
        }
    }
}

/// Appends one counter or gauge line with its HELP and TYPE.
pub fn render_value(
    out: &mut String,
    name: &str,
    kind: &str,
    help: &str,
    labels: &str,
    value: f64,
) {
    if !out.contains(&format!("# TYPE {name} ")) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
    }
    let _ = writeln!(out, "{name}{labels} {value}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_exact_to_a_tenth_of_a_percent() {
        let h = Histogram::default();
        for _ in 0..98 {
            h.observe_ms(0.8);
        }
        h.observe_ms(30.0);
        h.observe_ms(40.0);
        let s = h.summary();
        assert_eq!(s.count, 100);
        // Bucket bounds would say 1 ms and 30 ms; the values are 0.8 ms and 30 ms.
        assert!((s.p50_ms - 0.8).abs() <= 0.8 * 0.001, "{s:?}");
        assert!((s.p99_ms - 30.0).abs() <= 30.0 * 0.001, "{s:?}");
        assert_eq!(s.max_ms, 40.0);
        // 1..=1000 ms: the median is 500 ms, within 0.1%.
        let spread = Histogram::default();
        for ms in 1..=1000 {
            spread.observe_ms(ms as f64);
        }
        let t = spread.summary();
        assert!((t.p50_ms - 500.0).abs() <= 0.5, "{t:?}");
        assert!((t.p99_ms - 990.0).abs() <= 1.0, "{t:?}");
        let mut text = String::new();
        h.render("x_seconds", "test", &mut text);
        assert!(text.contains("x_seconds_bucket{le=\"0.001\"} 98"), "{text}");
        assert!(text.contains("x_seconds_count 100"));
        assert!(
            text.contains("x_seconds_quantile{quantile=\"1\"} 0.04"),
            "{text}"
        );
    }
}
