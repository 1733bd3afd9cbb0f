//! Latency and throughput per function, like Jepsen's `perf` summary.
//!
//! Latencies are of calls that completed ok; `fail` and `info` latencies
//! mostly measure refusals and timeouts, so they are counted, not ranked.

use super::history::{Call, Outcome, F};
use serde::Serialize;
use std::collections::BTreeMap;

/// Latency percentiles in milliseconds (nearest rank).
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Percentiles {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub max: f64,
}

impl Percentiles {
    /// `None` for an empty sample.
    pub fn of(latencies_ns: &mut [u64]) -> Option<Percentiles> {
        if latencies_ns.is_empty() {
            return None;
        }
        latencies_ns.sort_unstable();
        let at = |q: f64| {
            let rank = (q * latencies_ns.len() as f64).ceil() as usize;
            latencies_ns[rank.clamp(1, latencies_ns.len()) - 1] as f64 / 1e6
        };
        Some(Percentiles {
            p50: at(0.50),
            p90: at(0.90),
            p99: at(0.99),
            max: at(1.0),
        })
    }
}

/// Counts and latencies of one group of calls.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Summary {
    pub ok: usize,
    pub fail: usize,
    /// `info` and never-completed calls.
    pub info: usize,
    /// Ok calls per second over the whole history.
    pub ok_per_s: f64,
    /// All calls per second over the whole history.
    pub calls_per_s: f64,
    pub latency: Option<Percentiles>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Stats {
    pub duration_s: f64,
    pub per_f: BTreeMap<F, Summary>,
    pub overall: Summary,
}

/// Computes stats over calls; the duration spans first invocation to last
/// event.
pub fn stats(calls: &[Call]) -> Stats {
    let start = calls.iter().map(|c| c.invoke_ns).min().unwrap_or(0);
    let end = calls
        .iter()
        .map(|c| c.complete_ns.unwrap_or(c.invoke_ns))
        .max()
        .unwrap_or(0);
    let duration_s = end.saturating_sub(start) as f64 / 1e9;
    let summarize = |group: &mut dyn Iterator<Item = &Call>| {
        let mut s = Summary::default();
        let mut latencies = Vec::new();
        let mut total = 0usize;
        for c in group {
            total += 1;
            match c.outcome {
                Outcome::Ok => {
                    s.ok += 1;
                    latencies.extend(c.latency_ns());
                }
                Outcome::Fail => s.fail += 1,
                Outcome::Info | Outcome::Pending => s.info += 1,
            }
        }
        if duration_s > 0.0 {
            s.ok_per_s = s.ok as f64 / duration_s;
            s.calls_per_s = total as f64 / duration_s;
        }
        s.latency = Percentiles::of(&mut latencies);
        s
    };
    let mut fs: Vec<F> = calls.iter().map(|c| c.f).collect();
    fs.sort_unstable();
    fs.dedup();
    let per_f = fs
        .into_iter()
        .map(|f| (f, summarize(&mut calls.iter().filter(|c| c.f == f))))
        .collect();
    Stats {
        duration_s,
        per_f,
        overall: summarize(&mut calls.iter()),
    }
}

impl Stats {
    /// A fixed-width table, one row per function plus `all`.
    pub fn render_table(&self) -> String {
        let mut out = format!(
            "{:<6} {:>8} {:>7} {:>7} {:>8} {:>9} {:>9} {:>9} {:>9}\n",
            "f", "ok", "fail", "info", "ok/s", "p50 ms", "p90 ms", "p99 ms", "max ms"
        );
        let rows = self
            .per_f
            .iter()
            .map(|(f, s)| (f.to_string(), s))
            .chain(std::iter::once(("all".to_string(), &self.overall)));
        for (name, s) in rows {
            let lat = |p: fn(&Percentiles) -> f64| {
                s.latency
                    .as_ref()
                    .map_or("-".to_string(), |l| format!("{:.1}", p(l)))
            };
            out.push_str(&format!(
                "{:<6} {:>8} {:>7} {:>7} {:>8.1} {:>9} {:>9} {:>9} {:>9}\n",
                name,
                s.ok,
                s.fail,
                s.info,
                s.ok_per_s,
                lat(|l| l.p50),
                lat(|l| l.p90),
                lat(|l| l.p99),
                lat(|l| l.max),
            ));
        }
        out.push_str(&format!("duration {:.1} s\n", self.duration_s));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::harness::history::OpType;
    use crate::harness::testkit::{Hist, MS};
    use serde_json::{json, Value};

    #[test]
    fn percentiles_use_nearest_rank() {
        let mut lat: Vec<u64> = (1..=100).rev().map(|ms| ms * MS).collect();
        let p = Percentiles::of(&mut lat).unwrap();
        assert_eq!((p.p50, p.p90, p.p99, p.max), (50.0, 90.0, 99.0, 100.0));
        let mut one = vec![7 * MS];
        let p = Percentiles::of(&mut one).unwrap();
        assert_eq!((p.p50, p.max), (7.0, 7.0));
        assert_eq!(Percentiles::of(&mut []), None);
    }

    #[test]
    fn counts_and_rates_per_function_and_overall() {
        let mut h = Hist::new();
        // 100 ok reads with latencies 1..=100 ms, over 10 s.
        for i in 0..100u64 {
            let start = i * 100 * MS;
            h.call_ns(
                i,
                F::Read,
                "r",
                Value::Null,
                OpType::Ok,
                json!(1),
                start,
                start + (i + 1) * MS,
            );
        }
        h.fail(1000, F::Write, "r", json!(1), 10, 20)
            .info(1001, F::Write, "r", json!(2), 10, 5000)
            .pending(1002, F::Cas, "r", json!({"expect": 1, "value": 3}), 9000);
        let s = stats(&h.calls());
        assert!((s.duration_s - 10.0).abs() < 1e-9, "{}", s.duration_s);
        let read = &s.per_f[&F::Read];
        assert_eq!((read.ok, read.fail, read.info), (100, 0, 0));
        assert!((read.ok_per_s - 10.0).abs() < 1e-9);
        let lat = read.latency.unwrap();
        assert_eq!((lat.p50, lat.p99, lat.max), (50.0, 99.0, 100.0));
        let write = &s.per_f[&F::Write];
        assert_eq!((write.ok, write.fail, write.info), (0, 1, 1));
        assert_eq!(write.latency, None);
        assert_eq!(s.per_f[&F::Cas].info, 1);
        assert_eq!((s.overall.ok, s.overall.fail, s.overall.info), (100, 1, 2));
        assert!((s.overall.calls_per_s - 10.3).abs() < 1e-9);

        let table = s.render_table();
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 6, "{table}");
        assert!(lines[0].starts_with("f "), "{table}");
        let cols = |l: &str| l.split_whitespace().map(str::to_owned).collect::<Vec<_>>();
        assert_eq!(
            cols(lines[1]),
            ["read", "100", "0", "0", "10.0", "50.0", "90.0", "99.0", "100.0"]
        );
        assert_eq!(
            cols(lines[2]),
            ["write", "0", "1", "1", "0.0", "-", "-", "-", "-"]
        );
        assert_eq!(cols(lines[4])[..4], ["all", "100", "1", "2"]);
    }

    #[test]
    fn an_empty_history_has_empty_stats() {
        let s = stats(&[]);
        assert_eq!(s.overall, Summary::default());
        assert!(s.render_table().contains("all"));
    }
}
