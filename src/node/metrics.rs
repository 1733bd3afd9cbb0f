//! Counters and the request-latency histogram a node serves at `GET /metrics`
//! (Prometheus text format 0.0.4).

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

/// Upper bounds of the latency buckets, in seconds.
const BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0,
];

#[derive(Default)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

/// A metric family for [`Metrics::render`]: name, help, type, `(labels, value)` samples.
pub type Family<'a> = (&'a str, &'a str, &'a str, Vec<(String, f64)>);

#[derive(Default)]
pub struct Metrics {
    /// (object, outcome) → latency histogram.
    requests: Mutex<BTreeMap<(String, String), Histogram>>,
    pub elections: AtomicU64,
}

impl Metrics {
    pub fn observe_request(&self, object: &str, outcome: &str, latency: Duration) {
        let secs = latency.as_secs_f64();
        let mut map = self.requests.lock().unwrap_or_else(|p| p.into_inner());
        let h = map
            .entry((object.to_string(), outcome.to_string()))
            .or_default();
        h.count += 1;
        h.sum += secs;
        for (i, bound) in BUCKETS.iter().enumerate() {
            if secs <= *bound {
                h.counts[i] += 1;
            }
        }
    }

    /// Renders the histogram; `extra` adds node-level counters and gauges
    /// `(name, help, type, [(labels, value)])`.
    pub fn render(&self, extra: &[Family<'_>]) -> String {
        let mut out = String::new();
        for (name, help, kind, samples) in extra {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} {kind}");
            for (labels, value) in samples {
                if labels.is_empty() {
                    let _ = writeln!(out, "{name} {value}");
                } else {
                    let _ = writeln!(out, "{name}{{{labels}}} {value}");
                }
            }
        }
        let _ = writeln!(
            out,
            "# HELP keel_request_duration_seconds Ingress request latency by object and outcome."
        );
        let _ = writeln!(out, "# TYPE keel_request_duration_seconds histogram");
        let map = self.requests.lock().unwrap_or_else(|p| p.into_inner());
        for ((object, outcome), h) in map.iter() {
            let labels = format!("object=\"{object}\",outcome=\"{outcome}\"");
            for (i, bound) in BUCKETS.iter().enumerate() {
                let _ = writeln!(
                    out,
                    "keel_request_duration_seconds_bucket{{{labels},le=\"{bound}\"}} {}",
                    h.counts[i]
                );
            }
            let _ = writeln!(
                out,
                "keel_request_duration_seconds_bucket{{{labels},le=\"+Inf\"}} {}",
                h.count
            );
            let _ = writeln!(
                out,
                "keel_request_duration_seconds_sum{{{labels}}} {}",
                h.sum
            );
            let _ = writeln!(
                out,
                "keel_request_duration_seconds_count{{{labels}}} {}",
                h.count
            );
        }
        out
    }

    pub fn elections(&self) -> u64 {
        self.elections.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative() {
        let m = Metrics::default();
        m.observe_request("Counter", "ok", Duration::from_micros(700));
        m.observe_request("Counter", "ok", Duration::from_millis(30));
        let text = m.render(&[("keel_x", "help", "counter", vec![(String::new(), 3.0)])]);
        assert!(text.contains("keel_x 3"), "{text}");
        assert!(text.contains(r#"keel_request_duration_seconds_bucket{object="Counter",outcome="ok",le="0.001"} 1"#), "{text}");
        assert!(
            text.contains(
                r#"keel_request_duration_seconds_bucket{object="Counter",outcome="ok",le="0.05"} 2"#
            ),
            "{text}"
        );
        assert!(
            text.contains(
                r#"keel_request_duration_seconds_count{object="Counter",outcome="ok"} 2"#
            ),
            "{text}"
        );
    }
}
