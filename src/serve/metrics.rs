//! Counters and latency histograms in the Prometheus text format (`GET /metrics`).

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

/// Upper bounds of the latency buckets, in seconds.
const BUCKETS: [f64; 14] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
];

#[derive(Default)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

#[derive(Default)]
pub struct Metrics {
    requests: Mutex<BTreeMap<(String, u16), u64>>,
    latency: Mutex<BTreeMap<String, Histogram>>,
    pub cache_hits: AtomicU64,
    pub cache_misses: AtomicU64,
    pub encoder_runs: AtomicU64,
    pub decoder_runs: AtomicU64,
    pub auto_runs: AtomicU64,
    pub rejected_busy: AtomicU64,
}

/// Gauges read at scrape time.
pub struct Gauges {
    /// (lane, waiting, running, workers)
    pub lanes: Vec<(&'static str, usize, usize, usize)>,
    pub cache_entries: usize,
    pub cache_bytes: usize,
    pub cache_capacity: usize,
    pub cache_evictions: u64,
    pub logits_entries: usize,
    pub logits_bytes: usize,
    pub jobs: usize,
}

impl Metrics {
    /// One answered request: `route` is the matched route pattern (bounded cardinality).
    pub fn observe(&self, route: &str, status: u16, seconds: f64) {
        *self
            .requests
            .lock()
            .unwrap()
            .entry((route.to_string(), status))
            .or_default() += 1;
        let mut l = self.latency.lock().unwrap();
        let h = l.entry(route.to_string()).or_default();
        for (i, b) in BUCKETS.iter().enumerate() {
            if seconds <= *b {
                h.counts[i] += 1;
            }
        }
        h.count += 1;
        h.sum += seconds;
    }

    pub fn render(&self, g: &Gauges) -> String {
        let mut s = String::new();
        let counter = |s: &mut String, name: &str, help: &str, v: u64| {
            let _ = writeln!(s, "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}");
        };
        let gauge = |s: &mut String, name: &str, help: &str, v: f64| {
            let _ = writeln!(s, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}");
        };
        let _ = writeln!(
            s,
            "# HELP segrs_requests_total Requests answered, by route and status.\n# TYPE segrs_requests_total counter"
        );
        for ((route, status), n) in self.requests.lock().unwrap().iter() {
            let _ = writeln!(
                s,
                "segrs_requests_total{{route=\"{route}\",status=\"{status}\"}} {n}"
            );
        }
        let _ = writeln!(
            s,
            "# HELP segrs_request_duration_seconds Time to answer, by route.\n# TYPE segrs_request_duration_seconds histogram"
        );
        for (route, h) in self.latency.lock().unwrap().iter() {
            for (b, n) in BUCKETS.iter().zip(h.counts) {
                let _ = writeln!(
                    s,
                    "segrs_request_duration_seconds_bucket{{route=\"{route}\",le=\"{b}\"}} {n}"
                );
            }
            let _ = writeln!(
                s,
                "segrs_request_duration_seconds_bucket{{route=\"{route}\",le=\"+Inf\"}} {}\nsegrs_request_duration_seconds_sum{{route=\"{route}\"}} {}\nsegrs_request_duration_seconds_count{{route=\"{route}\"}} {}",
                h.count, h.sum, h.count
            );
        }
        let _ = writeln!(
            s,
            "# HELP segrs_queue_depth Requests waiting for a model worker, by lane.\n# TYPE segrs_queue_depth gauge"
        );
        for (lane, waiting, _, _) in &g.lanes {
            let _ = writeln!(s, "segrs_queue_depth{{lane=\"{lane}\"}} {waiting}");
        }
        let _ = writeln!(
            s,
            "# HELP segrs_workers_busy Model workers busy, by lane.\n# TYPE segrs_workers_busy gauge"
        );
        for (lane, _, running, _) in &g.lanes {
            let _ = writeln!(s, "segrs_workers_busy{{lane=\"{lane}\"}} {running}");
        }
        let _ = writeln!(
            s,
            "# HELP segrs_workers Model workers, by lane.\n# TYPE segrs_workers gauge"
        );
        for (lane, _, _, workers) in &g.lanes {
            let _ = writeln!(s, "segrs_workers{{lane=\"{lane}\"}} {workers}");
        }
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        counter(
            &mut s,
            "segrs_embedding_cache_hits_total",
            "Uploads answered from the embedding cache.",
            load(&self.cache_hits),
        );
        counter(
            &mut s,
            "segrs_embedding_cache_misses_total",
            "Uploads that needed the image encoder.",
            load(&self.cache_misses),
        );
        counter(
            &mut s,
            "segrs_embedding_cache_evictions_total",
            "Embeddings dropped to stay within --cache-mb.",
            g.cache_evictions,
        );
        gauge(
            &mut s,
            "segrs_embedding_cache_entries",
            "Images with a cached embedding.",
            g.cache_entries as f64,
        );
        gauge(
            &mut s,
            "segrs_embedding_cache_bytes",
            "Bytes held by the embedding cache.",
            g.cache_bytes as f64,
        );
        gauge(
            &mut s,
            "segrs_embedding_cache_capacity_bytes",
            "The embedding cache's bound (--cache-mb).",
            g.cache_capacity as f64,
        );
        gauge(
            &mut s,
            "segrs_logits_cache_entries",
            "Low-resolution logits kept for refinement.",
            g.logits_entries as f64,
        );
        gauge(
            &mut s,
            "segrs_logits_cache_bytes",
            "Bytes held by the logits cache.",
            g.logits_bytes as f64,
        );
        gauge(
            &mut s,
            "segrs_jobs",
            "Automatic-mask jobs kept (running or finished).",
            g.jobs as f64,
        );
        counter(
            &mut s,
            "segrs_encoder_runs_total",
            "Image encoder runs.",
            load(&self.encoder_runs),
        );
        counter(
            &mut s,
            "segrs_decoder_runs_total",
            "Prompted mask predictions (mask decoder runs).",
            load(&self.decoder_runs),
        );
        counter(
            &mut s,
            "segrs_auto_runs_total",
            "Automatic mask generator runs.",
            load(&self.auto_runs),
        );
        counter(
            &mut s,
            "segrs_rejected_busy_total",
            "Requests refused with 503 (queue full or out of time).",
            load(&self.rejected_busy),
        );
        s
    }
}
