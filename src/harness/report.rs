//! The end of a run: `summary.txt` for people, `summary.json` for tools.
//!
//! Everything here is computed from the recorded history, nemesis log and
//! checker results, never from the harness' own counters, so a summary can
//! be rebuilt from the files of a finished run.

use super::checker::{overall, render_results, CheckResult, Validity};
use super::history::{Call, Outcome};
use super::nemesis::{Fault, FaultTimeline, NemesisEvent, PowerLossDrop};
use super::stats::Stats;
use crate::types::NodeId;
use serde::Serialize;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::PathBuf;

/// Calls on nodes while they were cut off from the majority (or down).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct MinorityCalls {
    /// Invoked while the node was cut off.
    pub calls: usize,
    /// Served, and both invoked and completed while the node was cut off:
    /// a minority that serves is suspicious (reads and writes go through
    /// the log, which needs a majority). Approximate at the edges: a heal
    /// is logged once done, so a call served in the few milliseconds
    /// between the heal and its log line counts here.
    pub served_while_cut: usize,
    /// Completed unserved (fail or info) while the node was cut off,
    /// including calls invoked just before the cut.
    pub failed_while_cut: usize,
}

/// Per node, how calls fared while the node was *not* on the majority
/// side: the evidence that the nemesis really cut it off.
pub fn minority_calls(calls: &[Call], faults: &FaultTimeline) -> BTreeMap<NodeId, MinorityCalls> {
    let mut out: BTreeMap<NodeId, MinorityCalls> = BTreeMap::new();
    let cut = |t: u64, n: NodeId| !faults.majority_side(t).contains(&n);
    for c in calls {
        let at_invoke = cut(c.invoke_ns, c.node);
        let at_complete = c.complete_ns.is_some_and(|t| cut(t, c.node));
        if !at_invoke && !at_complete {
            continue;
        }
        let e = out.entry(c.node).or_default();
        e.calls += usize::from(at_invoke);
        if at_complete {
            if c.served() {
                e.served_while_cut += usize::from(at_invoke);
            } else {
                e.failed_while_cut += 1;
            }
        }
    }
    out
}

/// Calls a node received while a fault was active and it was on the
/// majority side, and how many were served. The availability checker
/// looks at the majority side as a whole; this shows a node whose
/// ingress alone could not serve (in a bridge, say).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct NodeAvailability {
    pub calls: usize,
    pub served: usize,
}

pub fn majority_calls_by_node(
    calls: &[Call],
    faults: &FaultTimeline,
) -> BTreeMap<NodeId, NodeAvailability> {
    let mut out: BTreeMap<NodeId, NodeAvailability> = BTreeMap::new();
    for c in calls {
        if faults.state_at(c.invoke_ns).is_healthy()
            || !faults.majority_side(c.invoke_ns).contains(&c.node)
        {
            continue;
        }
        let e = out.entry(c.node).or_default();
        e.calls += 1;
        e.served += usize::from(c.served());
    }
    out
}

/// Recovery after one heal: per node, ms from the window's end to the
/// node's first served call completing after it (`None`: none before the
/// next fault started or the history ended).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct WindowRecovery {
    /// Seconds since the first call.
    pub healed_at_s: f64,
    pub faults: Vec<String>,
    pub recovery_ms: BTreeMap<String, Option<f64>>,
}

/// Recovery after every heal, not only the final one the heal checker
/// judges: a cluster that recovers late from one window in six shows here.
pub fn window_recoveries(calls: &[Call], faults: &FaultTimeline) -> Vec<WindowRecovery> {
    let t0 = calls.iter().map(|c| c.invoke_ns).min().unwrap_or(0);
    let windows = faults.windows();
    let mut out = Vec::new();
    for (i, w) in windows.iter().enumerate() {
        let Some(end) = w.end_ns else { continue };
        let until = windows.get(i + 1).map_or(u64::MAX, |n| n.start_ns);
        let mut per_node = BTreeMap::new();
        for node in faults.all_nodes() {
            let first = calls
                .iter()
                .filter(|c| c.node == node && c.served())
                .filter_map(|c| c.complete_ns)
                .filter(|&t| t >= end && t < until)
                .min();
            per_node.insert(node.to_string(), first.map(|t| (t - end) as f64 / 1e6));
        }
        out.push(WindowRecovery {
            healed_at_s: end.saturating_sub(t0) as f64 / 1e9,
            faults: w.faults.clone(),
            recovery_ms: per_node,
        });
    }
    out
}

/// How much one node served during a fault window, against the healthy
/// stretch before it: what the gray-failure targets are stated in.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct NodeThroughput {
    /// Ok completions per second in the healthy stretch before the window.
    pub baseline_ok_s: f64,
    /// Ok completions per second over the whole window.
    pub during_ok_s: f64,
    /// The same from [`SETTLE`] after the window's start to its end (none:
    /// the window was not longer).
    pub settled_ok_s: Option<f64>,
}

/// One fault window's throughput per node.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct WindowThroughput {
    /// Seconds since the first call.
    pub at_s: f64,
    pub faults: Vec<String>,
    pub per_node: BTreeMap<String, NodeThroughput>,
}

/// How long into a fault the "settled" throughput starts.
pub const SETTLE: std::time::Duration = std::time::Duration::from_secs(3);

/// Per fault window and node: ok completions per second before (from the
/// previous window's end, or the first call), during, and from [`SETTLE`]
/// into the window on. Windows without an end or a baseline are skipped.
pub fn window_throughput(calls: &[Call], faults: &FaultTimeline) -> Vec<WindowThroughput> {
    let t0 = calls.iter().map(|c| c.invoke_ns).min().unwrap_or(0);
    let rate = |node: NodeId, from: u64, to: u64| {
        let ok = calls
            .iter()
            .filter(|c| c.node == node && c.outcome == Outcome::Ok)
            .filter_map(|c| c.complete_ns)
            .filter(|&t| t >= from && t < to)
            .count();
        ok as f64 / ((to - from) as f64 / 1e9)
    };
    let mut out = Vec::new();
    let mut healthy_from = t0;
    for w in faults.windows() {
        let Some(end) = w.end_ns else { continue };
        let settled = w.start_ns + SETTLE.as_nanos() as u64;
        if w.start_ns > healthy_from && end > w.start_ns {
            let per_node = faults
                .all_nodes()
                .into_iter()
                .map(|node| {
                    let t = NodeThroughput {
                        baseline_ok_s: rate(node, healthy_from, w.start_ns),
                        during_ok_s: rate(node, w.start_ns, end),
                        settled_ok_s: (end > settled).then(|| rate(node, settled, end)),
                    };
                    (node.to_string(), t)
                })
                .collect();
            out.push(WindowThroughput {
                at_s: w.start_ns.saturating_sub(t0) as f64 / 1e9,
                faults: w.faults.clone(),
                per_node,
            });
        }
        healthy_from = end;
    }
    out
}

/// One power loss, from the nemesis log.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PowerLossRecord {
    /// Seconds since the first call (the clock of `window_recovery`).
    pub at_s: f64,
    /// The nodes that lost power.
    pub nodes: Vec<NodeId>,
    /// Whether a torn write was asked for.
    pub tear: bool,
    /// How long the nemesis waited for unsynced writes before it struck.
    pub waited_ms: Option<u64>,
    /// What each node's mount dropped.
    pub dropped: Vec<PowerLossDrop>,
}

impl PowerLossRecord {
    /// Unsynced bytes dropped on all its nodes.
    pub fn bytes_dropped(&self) -> u64 {
        self.dropped.iter().map(|d| d.report.bytes_dropped).sum()
    }
}

/// Every power loss in the nemesis log, in time order.
pub fn power_losses(events: &[NemesisEvent], calls: &[Call]) -> Vec<PowerLossRecord> {
    let t0 = calls.iter().map(|c| c.invoke_ns).min().unwrap_or(0);
    let mut out: Vec<(u64, PowerLossRecord)> = events
        .iter()
        .filter_map(|e| match &e.fault {
            Fault::PowerLoss {
                nodes,
                tear,
                waited_ms,
                dropped,
            } => Some((
                e.time_ns,
                PowerLossRecord {
                    at_s: e.time_ns.saturating_sub(t0) as f64 / 1e9,
                    nodes: nodes.clone(),
                    tear: *tear,
                    waited_ms: *waited_ms,
                    dropped: dropped.clone(),
                },
            )),
            _ => None,
        })
        .collect();
    out.sort_by_key(|(t, _)| *t);
    out.into_iter().map(|(_, r)| r).collect()
}

fn render_drop(d: &PowerLossDrop) -> String {
    let r = &d.report;
    let mut s = format!(
        "{} dropped {} B in {} files, {} dirs, {} inodes",
        d.node, r.bytes_dropped, r.files_reverted, r.dirs_reverted, r.inodes_dropped
    );
    if let Some(t) = &r.torn {
        s.push_str(&format!(
            "; torn write kept {} of {} B at offset {}",
            t.kept, t.write_len, t.offset
        ));
    }
    s
}

#[derive(Clone, Debug, Serialize)]
pub struct RunSummary {
    pub seed: u64,
    pub workload: String,
    pub nemesis: String,
    pub mode: String,
    pub dir: PathBuf,
    pub concurrency: usize,
    pub rate: Option<f64>,
    pub time_s: f64,
    pub fault_s: f64,
    pub heal_s: f64,
    pub post_heal_s: f64,
    pub request_timeout_ms: u64,
    /// UTC wall clock at `time_ns` 0 (node logs are stamped in UTC).
    pub clock_zero_utc: String,
    /// Invocations (including final reads).
    pub ops: usize,
    pub ok: usize,
    pub fail: usize,
    pub info: usize,
    /// 4xx answers other than a cas' 412 and unreadable 200s.
    pub bugs: usize,
    pub bug_samples: Vec<String>,
    pub fault_windows: usize,
    /// Nemesis actions that could not be carried out.
    pub nemesis_errors: Vec<String>,
    /// Node processes that exited without being told to.
    pub node_exits: Vec<String>,
    /// Per node, ms from the final heal to its first served call.
    pub recovery_ms: BTreeMap<String, Option<f64>>,
    /// Served fraction of calls to majority-side nodes during faults.
    pub availability: Option<f64>,
    /// Per node, calls during faults while on the majority side.
    pub majority_calls: BTreeMap<String, NodeAvailability>,
    /// Recovery after each heal (the last is the final heal).
    pub window_recovery: Vec<WindowRecovery>,
    /// Throughput per node during each fault against the stretch before.
    pub window_throughput: Vec<WindowThroughput>,
    pub minority_calls: BTreeMap<String, MinorityCalls>,
    /// Datagrams each node's socket filter dropped (loopback chaos mode).
    pub dropped_datagrams: BTreeMap<String, u64>,
    /// Whether the nodes' data directories were on powerfs mounts.
    pub on_powerfs: bool,
    /// Every power loss and what it dropped.
    pub power_losses: Vec<PowerLossRecord>,
    /// Each node's powerfs counters at the end of the run.
    pub powerfs_stats: BTreeMap<String, crate::powerfs::Stats>,
    pub stats: Stats,
    pub results: Vec<CheckResult>,
    pub valid: Validity,
}

impl RunSummary {
    /// Fills in the parts derived from the history and the checkers.
    pub fn derive(&mut self, calls: &[Call], faults: &FaultTimeline, results: Vec<CheckResult>) {
        self.ops = calls.len();
        self.ok = calls.iter().filter(|c| c.outcome == Outcome::Ok).count();
        self.fail = calls.iter().filter(|c| c.outcome == Outcome::Fail).count();
        self.info = calls.iter().filter(|c| c.is_unknown()).count();
        self.fault_windows = faults.windows().len();
        self.minority_calls = minority_calls(calls, faults)
            .into_iter()
            .map(|(n, m)| (n.to_string(), m))
            .collect();
        self.stats = super::stats::stats(calls);
        self.window_recovery = window_recoveries(calls, faults);
        self.window_throughput = window_throughput(calls, faults);
        self.majority_calls = majority_calls_by_node(calls, faults)
            .into_iter()
            .map(|(n, a)| (n.to_string(), a))
            .collect();
        let find = |name: &str| results.iter().find(|r| r.name == name);
        self.recovery_ms = find("heal")
            .and_then(|r| r.details["nodes"].as_array())
            .map(|nodes| {
                nodes
                    .iter()
                    .filter_map(|n| {
                        let id: NodeId = serde_json::from_value(n["node"].clone()).ok()?;
                        Some((id.to_string(), n["recovery_ms"].as_f64()))
                    })
                    .collect()
            })
            .unwrap_or_default();
        self.availability =
            find("availability").and_then(|r| r.details["served_fraction"].as_f64());
        self.valid = overall(&results);
        self.results = results;
    }

    /// Whether the run passes: valid, or unknown when that is allowed.
    pub fn passed(&self, allow_unknown: bool) -> bool {
        match self.valid {
            Validity::Valid => true,
            Validity::Unknown => allow_unknown,
            Validity::Invalid => false,
        }
    }

    pub fn render(&self) -> String {
        let mut s = String::new();
        let line = |s: &mut String, t: String| {
            s.push_str(&t);
            s.push('\n');
        };
        line(
            &mut s,
            format!(
                "keel-jepsen: workload {} / nemesis {} / seed {} / {} mode",
                self.workload, self.nemesis, self.seed, self.mode
            ),
        );
        line(
            &mut s,
            format!(
                "run dir: {} (time_ns 0 = {} UTC)",
                self.dir.display(),
                self.clock_zero_utc
            ),
        );
        line(
            &mut s,
            format!(
                "schedule: {:.0} s with {:.0} s faults every {:.0} s, then {:.0} s after the final heal; {} clients{}; request timeout {} ms",
                self.time_s,
                self.fault_s,
                self.fault_s + self.heal_s,
                self.post_heal_s,
                self.concurrency,
                self.rate.map_or(String::new(), |r| format!(" at {r} ops/s")),
                self.request_timeout_ms
            ),
        );
        line(
            &mut s,
            format!(
                "ops: {} invoked, {} ok, {} fail, {} info; {} fault windows; {:.1} ok/s",
                self.ops,
                self.ok,
                self.fail,
                self.info,
                self.fault_windows,
                self.stats.overall.ok_per_s
            ),
        );
        if let Some(l) = &self.stats.overall.latency {
            line(
                &mut s,
                format!(
                    "latency (ok): p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
                    l.p50, l.p99, l.max
                ),
            );
        }
        let rec: Vec<String> = self
            .recovery_ms
            .iter()
            .map(|(n, r)| match r {
                Some(ms) => format!("{n} {ms:.0} ms"),
                None => format!("{n} never"),
            })
            .collect();
        line(
            &mut s,
            format!("recovery after the final heal: {}", rec.join(", ")),
        );
        if !self.window_recovery.is_empty() {
            let worst: Vec<String> = self
                .window_recovery
                .iter()
                .map(|w| {
                    let ms: Vec<Option<f64>> = w.recovery_ms.values().copied().collect();
                    if ms.iter().any(Option::is_none) {
                        format!("{:.0}s: never", w.healed_at_s)
                    } else {
                        let max = ms.into_iter().flatten().fold(0.0, f64::max);
                        format!("{:.0}s: {max:.0}", w.healed_at_s)
                    }
                })
                .collect();
            line(
                &mut s,
                format!("slowest node after each heal (ms): {}", worst.join(", ")),
            );
        }
        for w in &self.window_throughput {
            let nodes: Vec<String> = w
                .per_node
                .iter()
                .map(|(n, t)| {
                    let pct = |v: Option<f64>| match v {
                        Some(v) if t.baseline_ok_s > 0.0 => {
                            format!("{:.0}%", 100.0 * v / t.baseline_ok_s)
                        }
                        _ => "-".into(),
                    };
                    format!(
                        "{n} {:.0} -> {:.0} ({}; {} from {}s in)",
                        t.baseline_ok_s,
                        t.during_ok_s,
                        pct(Some(t.during_ok_s)),
                        pct(t.settled_ok_s),
                        SETTLE.as_secs()
                    )
                })
                .collect();
            line(
                &mut s,
                format!(
                    "ok/s before -> during the fault at {:.0}s ({}): {}",
                    w.at_s,
                    w.faults.join("+"),
                    nodes.join(", ")
                ),
            );
        }
        if let Some(a) = self.availability {
            line(
                &mut s,
                format!(
                    "availability (majority side, during faults): {:.1}%",
                    a * 100.0
                ),
            );
        }
        if !self.majority_calls.is_empty() {
            let m: Vec<String> = self
                .majority_calls
                .iter()
                .map(|(n, a)| format!("{n} {}/{}", a.served, a.calls))
                .collect();
            line(
                &mut s,
                format!(
                    "served per node on the majority side during faults: {}",
                    m.join(", ")
                ),
            );
        }
        if !self.minority_calls.is_empty() {
            let m: Vec<String> = self
                .minority_calls
                .iter()
                .map(|(n, m)| {
                    format!(
                        "{n} {} invoked, {} served / {} failed while cut",
                        m.calls, m.served_while_cut, m.failed_while_cut
                    )
                })
                .collect();
            line(
                &mut s,
                format!("calls to cut-off or down nodes: {}", m.join(", ")),
            );
        }
        if !self.dropped_datagrams.is_empty() {
            let d: Vec<String> = self
                .dropped_datagrams
                .iter()
                .map(|(n, c)| format!("{n} {c}"))
                .collect();
            line(
                &mut s,
                format!("datagrams dropped by the fault filter: {}", d.join(", ")),
            );
        }
        if self.on_powerfs {
            let singles = self
                .power_losses
                .iter()
                .filter(|p| p.nodes.len() == 1)
                .count();
            let torn = self
                .power_losses
                .iter()
                .flat_map(|p| &p.dropped)
                .filter(|d| d.report.torn.is_some())
                .count();
            line(
                &mut s,
                format!(
                    "power losses: {} ({} of one node, {} of more); {} unsynced bytes dropped; {} torn writes",
                    self.power_losses.len(),
                    singles,
                    self.power_losses.len() - singles,
                    self.power_losses.iter().map(|p| p.bytes_dropped()).sum::<u64>(),
                    torn
                ),
            );
            for p in &self.power_losses {
                let nodes: Vec<String> = p.nodes.iter().map(|n| n.to_string()).collect();
                let drops: Vec<String> = p.dropped.iter().map(render_drop).collect();
                line(
                    &mut s,
                    format!(
                        "  {:.1}s {}{}{}: {}",
                        p.at_s,
                        nodes.join(","),
                        if p.tear { " (tear)" } else { "" },
                        p.waited_ms
                            .map_or(String::new(), |w| format!(" after {w} ms aiming")),
                        drops.join("; ")
                    ),
                );
            }
            if !self.powerfs_stats.is_empty() {
                let st: Vec<String> = self
                    .powerfs_stats
                    .iter()
                    .map(|(n, st)| {
                        format!(
                            "{n} {} writes / {} fsyncs / {} dir fsyncs",
                            st.writes, st.fsyncs, st.fsyncdirs
                        )
                    })
                    .collect();
                line(&mut s, format!("powerfs at the end: {}", st.join(", ")));
            }
        }
        if self.bugs > 0 {
            line(
                &mut s,
                format!("UNEXPECTED ANSWERS (harness or service bug): {}", self.bugs),
            );
            for b in &self.bug_samples {
                line(&mut s, format!("  {b}"));
            }
        }
        for e in &self.nemesis_errors {
            line(&mut s, format!("nemesis error: {e}"));
        }
        for e in &self.node_exits {
            line(&mut s, format!("NODE EXIT: {e}"));
        }
        s.push('\n');
        s.push_str(&self.stats.render_table());
        s.push('\n');
        s.push_str(&render_results(&self.results));
        s
    }
}

/// `YYYY-MM-DDTHH:MM:SS.mmm` (UTC), the node logs' format.
pub fn timestamp_ms(unix_ms: u64) -> String {
    let t = timestamp(unix_ms / 1000);
    format!(
        "{}-{}-{}T{}:{}:{}.{:03}",
        &t[0..4],
        &t[4..6],
        &t[6..8],
        &t[9..11],
        &t[11..13],
        &t[13..15],
        unix_ms % 1000
    )
}

/// `YYYYMMDDTHHMMSS` (UTC) for run directory names.
pub fn timestamp(unix_secs: u64) -> String {
    let days = (unix_secs / 86_400) as i64;
    let rem = unix_secs % 86_400;
    // Civil-from-days (H. Hinnant), valid for any date after 1970.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}{m:02}{d:02}T{:02}{:02}{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// A result's details as pretty JSON, for error messages.
pub fn details(results: &[CheckResult], name: &str) -> Value {
    results
        .iter()
        .find(|r| r.name == name)
        .map(|r| r.details.clone())
        .unwrap_or(Value::Null)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::harness::checker::check_all;
    use crate::harness::history::{pair, OpType, F};
    use crate::harness::testkit::{isolate_n3_2s_to_5s, Hist};

    #[test]
    fn timestamps_are_utc_calendar_dates() {
        assert_eq!(timestamp(0), "19700101T000000");
        assert_eq!(timestamp(951_782_400), "20000229T000000");
        assert_eq!(timestamp(1_700_000_000), "20231114T221320");
        assert_eq!(timestamp_ms(1_700_000_000_042), "2023-11-14T22:13:20.042");
    }

    fn run() -> (Vec<Call>, FaultTimeline, Vec<CheckResult>) {
        let events = isolate_n3_2s_to_5s();
        let mut h = Hist::new();
        h.steady(3, 0, 16_000, 100, |node, t| {
            if node == 3 && (2000..5000).contains(&t) {
                OpType::Info
            } else {
                OpType::Ok
            }
        });
        h.on(1)
            .ok(1000, F::Add, "s", serde_json::json!(1), Value::Null, 10, 20)
            .ok(
                1001,
                F::Read,
                "s",
                Value::Null,
                serde_json::json!([1]),
                15_500,
                15_600,
            );
        let ops = h.ops();
        let results = check_all(&ops, &events, 3);
        (
            pair(&ops).unwrap(),
            FaultTimeline::new(&events, 3).unwrap(),
            results,
        )
    }

    fn empty() -> RunSummary {
        RunSummary {
            seed: 7,
            workload: "set".into(),
            nemesis: "partition-random-node".into(),
            mode: "loopback".into(),
            dir: PathBuf::from("/tmp/x"),
            concurrency: 3,
            rate: None,
            time_s: 10.0,
            fault_s: 3.0,
            heal_s: 2.0,
            post_heal_s: 10.0,
            request_timeout_ms: 2000,
            clock_zero_utc: timestamp_ms(0),
            ops: 0,
            ok: 0,
            fail: 0,
            info: 0,
            bugs: 0,
            bug_samples: vec![],
            fault_windows: 0,
            nemesis_errors: vec![],
            node_exits: vec![],
            recovery_ms: BTreeMap::new(),
            availability: None,
            window_recovery: vec![],
            window_throughput: vec![],
            majority_calls: BTreeMap::new(),
            minority_calls: BTreeMap::new(),
            dropped_datagrams: BTreeMap::new(),
            on_powerfs: false,
            power_losses: vec![],
            powerfs_stats: BTreeMap::new(),
            stats: Stats::default(),
            results: vec![],
            valid: Validity::Unknown,
        }
    }

    #[test]
    fn power_losses_are_listed_with_what_each_mount_dropped() {
        use crate::powerfs::{PowerLossReport, TornWrite};
        let report = |bytes, torn: Option<u64>| PowerLossReport {
            bytes_dropped: bytes,
            files_reverted: 2,
            dirs_reverted: 1,
            inodes_dropped: 0,
            handles_invalidated: 4,
            torn: torn.map(|kept| TornWrite {
                ino: 9,
                offset: 4096,
                data: vec![],
                write_len: 100,
                kept,
            }),
        };
        let at = |t: u64, fault| NemesisEvent {
            fault,
            nemesis: Some("power-loss".into()),
            time_ns: t,
        };
        let events = vec![
            at(
                3_000_000_000,
                Fault::PowerLoss {
                    nodes: vec![NodeId(2)],
                    tear: true,
                    waited_ms: Some(3),
                    dropped: vec![PowerLossDrop {
                        node: NodeId(2),
                        report: report(5000, Some(17)),
                    }],
                },
            ),
            at(4_000_000_000, Fault::Restart { node: NodeId(2) }),
            at(4_000_000_000, Fault::Heal),
            at(
                1_000_000_000,
                Fault::PowerLoss {
                    nodes: vec![NodeId(1), NodeId(3)],
                    tear: false,
                    waited_ms: None,
                    dropped: vec![
                        PowerLossDrop {
                            node: NodeId(1),
                            report: report(10, None),
                        },
                        PowerLossDrop {
                            node: NodeId(3),
                            report: report(0, None),
                        },
                    ],
                },
            ),
        ];
        let (calls, _, _) = run();
        let t0 = calls.iter().map(|c| c.invoke_ns).min().unwrap();
        let p = power_losses(&events, &calls);
        assert_eq!(p.len(), 2);
        // In time order, on the clock of the first call.
        assert_eq!(p[0].nodes, vec![NodeId(1), NodeId(3)]);
        assert!((p[0].at_s - (1e9 - t0 as f64) / 1e9).abs() < 1e-9);
        assert_eq!(p[0].bytes_dropped(), 10);
        assert_eq!(p[1].bytes_dropped(), 5000);
        let mut s = empty();
        s.on_powerfs = true;
        s.power_losses = p;
        let text = s.render();
        assert!(
            text.contains(
                "power losses: 2 (1 of one node, 1 of more); 5010 unsynced bytes dropped; 1 torn writes"
            ),
            "{text}"
        );
        assert!(
            text.contains("N2 dropped 5000 B in 2 files, 1 dirs, 0 inodes; torn write kept 17 of 100 B at offset 4096"),
            "{text}"
        );
        assert!(text.contains("N1,N3: N1 dropped 10 B"), "{text}");
        assert!(
            text.contains("N2 (tear) after 3 ms aiming: N2 dropped"),
            "{text}"
        );
        let json = serde_json::to_value(&s).unwrap();
        assert_eq!(json["power_losses"][1]["dropped"][0]["torn"]["kept"], 17);
        assert_eq!(json["power_losses"][1]["dropped"][0]["node"], 2);
    }

    #[test]
    fn the_summary_reports_recovery_availability_and_the_cut_node() {
        let (calls, faults, results) = run();
        let minority = minority_calls(&calls, &faults);
        assert_eq!(minority.len(), 1, "{minority:?}");
        let n3 = &minority[&NodeId(3)];
        assert!(n3.calls > 0);
        assert_eq!(n3.served_while_cut, 0);
        assert!(n3.failed_while_cut > 0);

        let mut s = empty();
        s.derive(&calls, &faults, results);
        assert_eq!(s.valid, Validity::Valid, "{}", s.render());
        assert!(s.passed(false));
        assert_eq!(s.recovery_ms.len(), 3);
        assert!(s.recovery_ms["N3"].is_some());
        assert_eq!(s.availability, Some(1.0));
        assert_eq!(s.fault_windows, 1);
        // One heal at 5 s; every node's next served call completes 10 ms
        // after an invocation at or after it.
        assert_eq!(s.window_recovery.len(), 1);
        // N1 and N2 served every call during the fault; N3 was cut off.
        assert_eq!(s.majority_calls.len(), 2);
        assert_eq!(s.majority_calls["N1"].calls, s.majority_calls["N1"].served);
        assert!(s.majority_calls["N1"].calls >= 30);
        let w = &s.window_recovery[0];
        assert!((w.healed_at_s - 5.0).abs() < 1e-9, "{w:?}");
        assert_eq!(w.recovery_ms["N3"], Some(10.0), "{w:?}");
        // The cut-off N3 served nothing during the fault; N1 went on.
        let t = &s.window_throughput;
        assert_eq!(t.len(), 1, "{t:?}");
        let (n1, n3) = (&t[0].per_node["N1"], &t[0].per_node["N3"]);
        assert!(n1.baseline_ok_s > 0.0 && n1.during_ok_s > 0.0, "{n1:?}");
        assert!(n3.baseline_ok_s > 0.0 && n3.during_ok_s == 0.0, "{n3:?}");
        let text = s.render();
        assert!(
            text.contains("ok/s before -> during the fault at"),
            "{text}"
        );
        assert!(
            text.contains("slowest node after each heal (ms): 5s: 10"),
            "{text}"
        );
        assert_eq!(s.ops, calls.len());
        assert_eq!(s.ok + s.fail + s.info, s.ops);
        let text = s.render();
        assert!(
            text.contains("recovery after the final heal: N1 "),
            "{text}"
        );
        assert!(text.contains("N3 30 invoked, 0 served"), "{text}");
        assert!(text.lines().last().unwrap().starts_with("overall"));
        let json = serde_json::to_value(&s).unwrap();
        assert_eq!(json["valid"], Value::Bool(true));
        assert_eq!(json["minority_calls"]["N3"]["served_while_cut"], 0);
    }

    #[test]
    fn unknown_passes_only_when_allowed() {
        let mut s = empty();
        s.valid = Validity::Unknown;
        assert!(!s.passed(false));
        assert!(s.passed(true));
        s.valid = Validity::Invalid;
        assert!(!s.passed(true));
    }
}
