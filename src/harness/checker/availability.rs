//! The availability checker: while faults are active, the majority side
//! keeps serving.
//!
//! Only nodes on the majority side ([`FaultTimeline::majority_side`]: up,
//! and reaching a majority directly) are expected to serve. Within each
//! fault window it reports the fraction of calls sent to majority-side
//! nodes that were served, and the longest stretch with no served call
//! completing on the majority side (counting only the time a majority side
//! exists: a window with the whole cluster down has no gap).
//!
//! Validity, with `detection` (default 2 s: ≈1 s failure detection plus a
//! randomized election timeout) and `max_gap` (default 3 s): every time the
//! fault state changes (a fault starts, moves or partly heals), the
//! majority side must serve a call within `detection + max_gap`; after that,
//! served calls must never be more than `max_gap` apart, up to the end of the
//! window (the heal, or the end of the history). While no node is on the
//! majority side nothing is expected. The harness must keep sending to
//! every node for this to mean anything. An optional `min_success`
//! threshold also applies to the fraction.

use super::{CheckResult, Validity};
use crate::harness::history::Call;
use crate::harness::nemesis::FaultTimeline;
use serde_json::json;
use std::time::Duration;

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AvailabilityConfig {
    pub max_gap: Duration,
    pub detection: Duration,
    /// Minimum served fraction of majority-side calls in fault windows.
    pub min_success: Option<f64>,
}

impl Default for AvailabilityConfig {
    fn default() -> Self {
        AvailabilityConfig {
            max_gap: Duration::from_secs(3),
            detection: Duration::from_secs(2),
            min_success: None,
        }
    }
}

pub fn check(calls: &[Call], faults: &FaultTimeline, config: &AvailabilityConfig) -> CheckResult {
    let Some(history_end) = calls
        .iter()
        .map(|c| c.complete_ns.unwrap_or(c.invoke_ns))
        .max()
    else {
        return CheckResult::new(
            "availability",
            Validity::Unknown,
            "empty history",
            json!({}),
        );
    };
    let gap = config.max_gap.as_nanos() as u64;
    let grace = gap + config.detection.as_nanos() as u64;

    let mut windows = Vec::new();
    let mut violations = Vec::new();
    let (mut sent, mut served) = (0usize, 0usize);
    let mut longest = 0u64;
    for w in faults.windows() {
        if w.start_ns >= history_end {
            continue;
        }
        let end = w.end_ns.unwrap_or(history_end).min(history_end);
        // Served completions on the majority side, in time order.
        let mut oks: Vec<u64> = calls
            .iter()
            .filter(|c| c.served())
            .filter_map(|c| c.complete_ns.map(|t| (t, c.node)))
            .filter(|&(t, node)| {
                t >= w.start_ns && t <= end && faults.majority_side(t).contains(&node)
            })
            .map(|(t, _)| t)
            .collect();
        oks.sort_unstable();
        let (w_sent, w_served) = calls
            .iter()
            .filter(|c| c.invoke_ns >= w.start_ns && c.invoke_ns < end)
            .filter(|c| faults.majority_side(c.invoke_ns).contains(&c.node))
            .fold((0, 0), |(n, s), c| (n + 1, s + usize::from(c.served())));
        sent += w_sent;
        served += w_served;

        // Longest stretch without a served call, window edges included,
        // in time a majority side existed.
        let mut w_longest = 0;
        let mut last = w.start_ns;
        for &t in oks.iter().chain(std::iter::once(&end)) {
            w_longest = w_longest.max(majority_time(faults, last, t));
            last = t;
        }
        longest = longest.max(w_longest);

        // Sweep oks and state changes with a deadline for the next ok.
        let changes: Vec<(u64, bool)> = faults
            .segments()
            .iter()
            .filter(|s| s.from_ns >= w.start_ns && s.from_ns < end)
            .map(|s| (s.from_ns, !s.majority.is_empty()))
            .collect();
        let mut deadline: Option<u64> = None;
        let mut since = w.start_ns;
        let (mut ci, mut oi) = (0, 0);
        loop {
            let next_change = changes.get(ci).map(|c| c.0);
            let next_ok = oks.get(oi).copied();
            let (t, is_change) = match (next_change, next_ok) {
                (Some(c), Some(o)) if c <= o => (c, true),
                (_, Some(o)) => (o, false),
                (Some(c), None) => (c, true),
                (None, None) => (end, false),
            };
            if let Some(d) = deadline {
                if t > d {
                    violations.push(json!({
                        "window_start_ns": w.start_ns,
                        "from_ns": since,
                        "until_ns": t,
                        "gap_ms": (t - since) as f64 / 1e6,
                        "allowed_ms": (d - since) as f64 / 1e6,
                    }));
                }
            }
            if next_change.is_none() && next_ok.is_none() {
                break;
            }
            if is_change {
                let has_majority = changes[ci].1;
                ci += 1;
                deadline = has_majority.then_some(t + grace);
            } else {
                oi += 1;
                deadline = deadline.map(|_| t + gap);
            }
            since = t;
        }

        windows.push(json!({
            "start_ns": w.start_ns,
            "end_ns": end,
            "faults": w.faults,
            "nemeses": w.nemeses,
            "majority_calls": w_sent,
            "majority_served": w_served,
            "longest_gap_ms": w_longest as f64 / 1e6,
        }));
    }
    let fraction = if sent == 0 {
        None
    } else {
        Some(served as f64 / sent as f64)
    };
    let below = match (config.min_success, fraction) {
        (Some(min), Some(f)) => f < min,
        _ => false,
    };
    let valid = violations.is_empty() && !below;
    let summary = if windows.is_empty() {
        "no fault windows".to_string()
    } else {
        let fr = fraction.map_or("n/a".to_string(), |f| format!("{:.1}%", f * 100.0));
        let mut s = format!(
            "{} fault windows; majority side served {fr} of {sent} calls; longest gap {:.2} s",
            windows.len(),
            longest as f64 / 1e9
        );
        if let Some(v) = violations.first() {
            s.push_str(&format!(
                "; {} gaps over the limit, first {:.2} s (allowed {:.2} s)",
                violations.len(),
                v["gap_ms"].as_f64().unwrap_or(0.0) / 1e3,
                v["allowed_ms"].as_f64().unwrap_or(0.0) / 1e3
            ));
        }
        if below {
            s.push_str(&format!(
                "; below the required {:.1}%",
                config.min_success.unwrap_or(0.0) * 100.0
            ));
        }
        s
    };
    CheckResult::new(
        "availability",
        Validity::from_bool(valid),
        summary,
        json!({
            "windows": windows,
            "violations": violations,
            "majority_calls": sent,
            "majority_served": served,
            "served_fraction": fraction,
            "longest_gap_ms": longest as f64 / 1e6,
            "max_gap_ms": gap as f64 / 1e6,
            "detection_ms": config.detection.as_nanos() as f64 / 1e6,
        }),
    )
}

/// How much of `[from, to)` some node was on the majority side.
fn majority_time(faults: &FaultTimeline, from: u64, to: u64) -> u64 {
    let segments = faults.segments();
    let mut total = 0;
    for (i, seg) in segments.iter().enumerate() {
        let seg_end = segments.get(i + 1).map_or(u64::MAX, |n| n.from_ns);
        let (a, b) = (seg.from_ns.max(from), seg_end.min(to));
        if a < b && !seg.majority.is_empty() {
            total += b - a;
        }
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::harness::history::OpType;
    use crate::harness::nemesis::{Fault, NemesisEvent};
    use crate::harness::testkit::{Hist, MS};
    use crate::types::NodeId;

    fn isolate(node: u32, at_ms: u64) -> NemesisEvent {
        let others: Vec<NodeId> = (1..=3).filter(|&n| n != node).map(NodeId).collect();
        NemesisEvent {
            fault: Fault::Partition {
                groups: vec![others, vec![NodeId(node)]],
                cut: vec![],
            },
            nemesis: Some("partition-random-node".into()),
            time_ns: at_ms * MS,
        }
    }

    fn heal(at_ms: u64) -> NemesisEvent {
        NemesisEvent {
            fault: Fault::Heal,
            nemesis: None,
            time_ns: at_ms * MS,
        }
    }

    /// Node 3 isolated 5 s .. 15 s.
    fn faults() -> FaultTimeline {
        FaultTimeline::new(&[isolate(3, 5000), heal(15_000)], 3).unwrap()
    }

    fn run(h: &Hist, faults: &FaultTimeline) -> CheckResult {
        check(&h.calls(), faults, &AvailabilityConfig::default())
    }

    #[test]
    fn the_majority_side_serving_through_a_partition_passes() {
        let mut h = Hist::new();
        // The minority node times out; the majority stalls 1 s at the start
        // (re-election), then serves.
        h.steady(3, 0, 20_000, 100, |node, t| {
            if (5000..15_000).contains(&t) && (node == 3 || t < 6000) {
                OpType::Info
            } else {
                OpType::Ok
            }
        });
        let r = run(&h, &faults());
        assert_eq!(r.valid, Validity::Valid, "{}", r.summary);
        // 200 calls to N1 and N2 in the window, 20 of them in the stall.
        assert_eq!(r.details["majority_calls"], 200);
        assert_eq!(r.details["majority_served"], 180);
        assert!(
            r.summary.contains("served 90.0% of 200 calls"),
            "{}",
            r.summary
        );
        // From 5.0 s to the first ok at 6.01 s.
        assert_eq!(r.details["longest_gap_ms"], 1010.0);
    }

    #[test]
    fn a_long_gap_on_the_majority_side_fails() {
        let mut h = Hist::new();
        h.steady(3, 0, 20_000, 100, |node, t| {
            if node == 3 && (5000..15_000).contains(&t) || (8000..14_000).contains(&t) {
                OpType::Info
            } else {
                OpType::Ok
            }
        });
        let r = run(&h, &faults());
        assert_eq!(r.valid, Validity::Invalid);
        // Last ok completes at 7.91 s, the next calls at 14.0 s are ok at 14.01 s.
        assert_eq!(r.details["longest_gap_ms"], 6100.0);
        assert_eq!(r.details["violations"][0]["allowed_ms"], 3000.0);
        assert!(
            r.summary
                .contains("1 gaps over the limit, first 6.10 s (allowed 3.00 s)"),
            "{}",
            r.summary
        );
    }

    #[test]
    fn the_first_ok_may_take_detection_plus_the_gap_after_each_change() {
        for (stall_ms, ok) in [(4500, true), (5500, false)] {
            let mut h = Hist::new();
            h.steady(3, 0, 20_000, 100, |node, t| {
                if node == 3 && (5000..15_000).contains(&t) || (5000..5000 + stall_ms).contains(&t)
                {
                    OpType::Info
                } else {
                    OpType::Ok
                }
            });
            let r = run(&h, &faults());
            assert_eq!(
                r.valid,
                Validity::from_bool(ok),
                "stall {stall_ms}: {}",
                r.summary
            );
        }
    }

    #[test]
    fn a_moving_partition_restarts_the_allowance() {
        // N3 isolated at 5 s, then N1 isolated instead at 9 s: the new
        // majority {2, 3} needs 4 s to serve again, within 2 s + 3 s.
        let faults =
            FaultTimeline::new(&[isolate(3, 5000), isolate(1, 9000), heal(15_000)], 3).unwrap();
        let mut h = Hist::new();
        h.steady(3, 0, 20_000, 100, |node, t| {
            let cut_off = (node == 3 && (5000..9000).contains(&t))
                || (node == 1 && (9000..15_000).contains(&t));
            if cut_off || (9000..13_000).contains(&t) {
                OpType::Info
            } else {
                OpType::Ok
            }
        });
        let r = run(&h, &faults);
        assert_eq!(r.valid, Validity::Valid, "{}", r.summary);
        assert_eq!(r.details["longest_gap_ms"], 4100.0);
    }

    #[test]
    fn nothing_is_expected_while_no_majority_exists() {
        let kill = |n: u32, t: u64| NemesisEvent {
            fault: Fault::Kill { node: NodeId(n) },
            nemesis: None,
            time_ns: t * MS,
        };
        let faults = FaultTimeline::new(&[kill(1, 5000), kill(2, 5000), heal(15_000)], 3).unwrap();
        let mut h = Hist::new();
        h.steady(3, 0, 20_000, 100, |_, t| {
            if (5000..15_000).contains(&t) {
                OpType::Info
            } else {
                OpType::Ok
            }
        });
        let r = run(&h, &faults);
        assert_eq!(r.valid, Validity::Valid, "{}", r.summary);
        assert_eq!(r.details["majority_calls"], 0);
        // No majority side, so no gap on it.
        assert_eq!(r.details["longest_gap_ms"], 0.0);
    }

    #[test]
    fn a_gap_counts_only_the_time_a_majority_side_exists() {
        // N1 down 5-15 s; the whole cluster down 8-12 s (power loss); no
        // success on the majority side from 5 s to 13.5 s: 3 s before the
        // whole cluster went down plus 1.5 s after it came back.
        let at = |fault, t: u64| NemesisEvent {
            fault,
            nemesis: None,
            time_ns: t * MS,
        };
        let all: Vec<NodeId> = (1..=3).map(NodeId).collect();
        let faults = FaultTimeline::new(
            &[
                at(Fault::Kill { node: NodeId(1) }, 5000),
                at(
                    Fault::PowerLoss {
                        nodes: all,
                        tear: false,
                        waited_ms: None,
                        dropped: vec![],
                    },
                    8000,
                ),
                at(Fault::Restart { node: NodeId(2) }, 12_000),
                at(Fault::Restart { node: NodeId(3) }, 12_000),
                heal(15_000),
            ],
            3,
        )
        .unwrap();
        let mut h = Hist::new();
        h.steady(3, 0, 20_000, 100, |node, t| {
            if (5000..13_500).contains(&t) || (node == 1 && t < 15_000) {
                OpType::Info
            } else {
                OpType::Ok
            }
        });
        let r = run(&h, &faults);
        // 3 s from 5 s, then 1.51 s from 12 s to the first ok at 13.51 s.
        assert_eq!(r.details["longest_gap_ms"], 4510.0, "{}", r.summary);
        // Each stretch with a majority side got its first success in time.
        assert_eq!(r.valid, Validity::Valid, "{}", r.summary);
    }

    #[test]
    fn no_faults_no_windows() {
        let mut h = Hist::new();
        h.steady(3, 0, 1000, 100, |_, _| OpType::Ok);
        let r = run(&h, &FaultTimeline::new(&[], 3).unwrap());
        assert_eq!(r.valid, Validity::Valid);
        assert_eq!(r.summary, "no fault windows");
    }

    #[test]
    fn a_success_threshold_applies_when_set() {
        let mut h = Hist::new();
        h.steady(3, 0, 20_000, 100, |node, t| {
            if (5000..15_000).contains(&t) && (node == 3 || t % 300 == 0) {
                OpType::Info
            } else {
                OpType::Ok
            }
        });
        let config = AvailabilityConfig {
            min_success: Some(0.9),
            ..AvailabilityConfig::default()
        };
        let r = check(&h.calls(), &faults(), &config);
        assert_eq!(r.valid, Validity::Invalid, "{}", r.summary);
        assert!(
            r.summary.contains("below the required 90.0%"),
            "{}",
            r.summary
        );
    }
}
