//! The heal checker: the headline promise. After the final heal every node
//! serves again within a bound, and stays error-free.
//!
//! *Heal* is when the last fault window closed (see
//! [`FaultTimeline::final_heal`]); with no faults at all it is the first
//! invocation. Per node:
//! - **recovery**: time from the heal to the first call on that node that
//!   completed served (ok, or a cas' 412) at or after the heal; it must be
//!   within `recovery_bound` (default 3 s);
//! - **quiet window**: the last `quiet_window` (default 10 s) of the
//!   history, but never earlier than the heal. Every call on the node that
//!   was invoked at or after the heal and completed in the window must be
//!   served; calls invoked in it that never completed count as errors (the
//!   harness must record an `info` for each call it gives up on). The error
//!   rate must be 0. A call invoked *before* the heal was sent into the
//!   fault: its node may take up to `recovery_bound` to serve again, so if
//!   its deadline passes within that time, that is the recovery the first
//!   rule bounds, not an error after the heal.
//!
//! If faults are still active at the end of the nemesis log, the check is
//! unknown.

use super::{CheckResult, Validity};
use crate::harness::history::Call;
use crate::harness::nemesis::FaultTimeline;
use serde_json::json;
use std::time::Duration;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HealConfig {
    pub recovery_bound: Duration,
    pub quiet_window: Duration,
}

impl Default for HealConfig {
    fn default() -> Self {
        HealConfig {
            recovery_bound: Duration::from_secs(3),
            quiet_window: Duration::from_secs(10),
        }
    }
}

pub fn check(calls: &[Call], faults: &FaultTimeline, config: &HealConfig) -> CheckResult {
    if faults.ends_faulted() {
        return CheckResult::new(
            "heal",
            Validity::Unknown,
            "faults were still active at the end of the nemesis log",
            json!({}),
        );
    }
    let Some(first) = calls.iter().map(|c| c.invoke_ns).min() else {
        return CheckResult::new("heal", Validity::Unknown, "empty history", json!({}));
    };
    let end = calls
        .iter()
        .map(|c| c.complete_ns.unwrap_or(c.invoke_ns))
        .max()
        .unwrap_or(first);
    let (heal, heal_source) = match faults.final_heal() {
        Some(t) => (t, "final heal"),
        None => (first, "start of history (no faults)"),
    };
    if heal > end {
        return CheckResult::new(
            "heal",
            Validity::Unknown,
            "the history ends before the final heal",
            json!({ "heal_ns": heal, "end_ns": end }),
        );
    }
    let bound = config.recovery_bound.as_nanos() as u64;
    let quiet_from = end
        .saturating_sub(config.quiet_window.as_nanos() as u64)
        .max(heal);

    let mut valid = true;
    let mut problems = Vec::new();
    let mut nodes = Vec::new();
    for node in faults.all_nodes() {
        let on_node = calls.iter().filter(|c| c.node == node);
        let first_ok = on_node
            .clone()
            .filter(|c| c.served())
            .filter_map(|c| c.complete_ns)
            .filter(|&t| t >= heal)
            .min();
        let after_heal = on_node
            .clone()
            .filter(|c| c.complete_ns.unwrap_or(c.invoke_ns) >= heal)
            .count();
        let recovery = first_ok.map(|t| t - heal);
        match recovery {
            Some(r) if r <= bound => {}
            Some(r) => {
                valid = false;
                problems.push(format!(
                    "{node} first served {:.2} s after the {heal_source} (bound {:.2} s)",
                    secs(r),
                    secs(bound)
                ));
            }
            None => {
                valid = false;
                problems.push(if after_heal == 0 {
                    format!("{node} got no calls after the {heal_source}")
                } else {
                    format!("{node} never served after the {heal_source} ({after_heal} calls)")
                });
            }
        }
        let (mut completed, mut errors) = (0usize, 0usize);
        for c in on_node.filter(|c| c.invoke_ns >= heal) {
            match c.complete_ns {
                Some(t) if t >= quiet_from => {
                    completed += 1;
                    errors += usize::from(!c.served());
                }
                None if c.invoke_ns >= quiet_from => {
                    completed += 1;
                    errors += 1;
                }
                _ => {}
            }
        }
        if errors > 0 {
            valid = false;
            problems.push(format!(
                "{node}: {errors} of {completed} calls failed in the last {:.1} s",
                secs(end.saturating_sub(quiet_from))
            ));
        }
        nodes.push(json!({
            "node": node,
            "recovery_ms": recovery.map(|r| r as f64 / 1e6),
            "calls_after_heal": after_heal,
            "quiet_calls": completed,
            "quiet_errors": errors,
            "quiet_error_rate": if completed == 0 { 0.0 } else { errors as f64 / completed as f64 },
        }));
    }
    let summary = if valid {
        let worst = nodes
            .iter()
            .filter_map(|n| n["recovery_ms"].as_f64())
            .fold(0.0, f64::max);
        format!(
            "every node served within {:.0} ms of the {heal_source}; no errors in the last {:.1} s",
            worst,
            secs(end.saturating_sub(quiet_from))
        )
    } else {
        problems.join("; ")
    };
    CheckResult::new(
        "heal",
        Validity::from_bool(valid),
        summary,
        json!({
            "heal_ns": heal,
            "heal_source": heal_source,
            "quiet_from_ns": quiet_from,
            "end_ns": end,
            "recovery_bound_ms": bound as f64 / 1e6,
            "nodes": nodes,
            "problems": problems,
        }),
    )
}

fn secs(ns: u64) -> f64 {
    ns as f64 / 1e9
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::harness::history::{OpType, F};
    use crate::harness::nemesis::{Fault, NemesisEvent};
    use crate::harness::testkit::{isolate_n3_2s_to_5s, Hist, MS};
    use crate::types::NodeId;
    use serde_json::{json, Value};

    /// Node 3 isolated from 2 s to 5 s (calls to it time out), then healed.
    fn partition_then_heal() -> FaultTimeline {
        let events = isolate_n3_2s_to_5s();
        FaultTimeline::new(&events, 3).unwrap()
    }

    fn isolated_3(node: u32, t: u64) -> OpType {
        if node == 3 && (2000..5000).contains(&t) {
            OpType::Info
        } else {
            OpType::Ok
        }
    }

    #[test]
    fn every_node_serving_soon_after_the_heal_passes() {
        let mut h = Hist::new();
        h.steady(3, 0, 20_000, 100, isolated_3);
        let r = check(&h.calls(), &partition_then_heal(), &HealConfig::default());
        assert_eq!(r.valid, Validity::Valid, "{}", r.summary);
        assert_eq!(r.details["heal_ns"], 5000 * MS);
        // The first call invoked at the heal completes 10 ms later.
        assert_eq!(r.details["nodes"][2]["recovery_ms"], 10.0);
        assert_eq!(r.details["nodes"][2]["quiet_errors"], 0);
    }

    #[test]
    fn a_call_sent_into_the_fault_may_time_out_after_the_heal_but_a_later_one_may_not() {
        let calls = |late_fails: bool| {
            let mut h = Hist::new();
            h.steady(3, 0, 15_000, 100, isolated_3);
            // Invoked during the fault on N3, given up 1 s after the heal:
            // the recovery bound covers it.
            h.on(3).info(9, F::Read, "load", Value::Null, 4_000, 6_000);
            if late_fails {
                // Invoked after the heal and failed: an error.
                h.on(3).info(10, F::Read, "load", Value::Null, 6_000, 9_000);
            }
            h.calls()
        };
        let r = check(
            &calls(false),
            &partition_then_heal(),
            &HealConfig::default(),
        );
        assert_eq!(r.valid, Validity::Valid, "{}", r.summary);
        let r = check(&calls(true), &partition_then_heal(), &HealConfig::default());
        assert_eq!(r.valid, Validity::Invalid, "{}", r.summary);
        assert!(r.summary.contains("N3: 1 of"), "{}", r.summary);
    }

    #[test]
    fn a_node_that_never_recovers_fails() {
        let mut h = Hist::new();
        h.steady(3, 0, 20_000, 100, |node, t| {
            if node == 3 && t >= 2000 {
                OpType::Info
            } else {
                OpType::Ok
            }
        });
        let r = check(&h.calls(), &partition_then_heal(), &HealConfig::default());
        assert_eq!(r.valid, Validity::Invalid);
        assert!(
            r.summary
                .contains("N3 never served after the final heal (150 calls)"),
            "{}",
            r.summary
        );
        assert!(
            r.summary
                .contains("N3: 101 of 101 calls failed in the last 10.0 s"),
            "{}",
            r.summary
        );
        assert_eq!(r.details["nodes"][2]["quiet_error_rate"], 1.0);
    }

    #[test]
    fn a_node_recovering_after_the_bound_fails() {
        let mut h = Hist::new();
        h.steady(3, 0, 20_000, 100, |node, t| {
            if node == 3 && (2000..9000).contains(&t) {
                OpType::Info
            } else {
                OpType::Ok
            }
        });
        let r = check(&h.calls(), &partition_then_heal(), &HealConfig::default());
        assert_eq!(r.valid, Validity::Invalid);
        assert!(
            r.summary
                .contains("N3 first served 4.01 s after the final heal (bound 3.00 s)"),
            "{}",
            r.summary
        );
    }

    #[test]
    fn errors_in_the_last_ten_seconds_fail_but_a_cas_412_does_not() {
        let mut h = Hist::new();
        h.steady(3, 0, 20_000, 100, isolated_3);
        h.on(2).fail(
            7,
            F::Cas,
            "r",
            json!({"expect": 1, "value": 2}),
            15_000,
            15_005,
        );
        let r = check(&h.calls(), &partition_then_heal(), &HealConfig::default());
        assert_eq!(r.valid, Validity::Valid, "{}", r.summary);

        h.on(2).fail(8, F::Write, "r", json!(3), 16_000, 16_005);
        h.on(1).info(9, F::Write, "r", json!(4), 17_000, 19_000);
        let r = check(&h.calls(), &partition_then_heal(), &HealConfig::default());
        assert_eq!(r.valid, Validity::Invalid);
        assert!(
            r.summary.contains("N1: 1 of 102 calls failed"),
            "{}",
            r.summary
        );
        assert!(
            r.summary.contains("N2: 1 of 103 calls failed"),
            "{}",
            r.summary
        );
        assert!(!r.summary.contains("N3"), "{}", r.summary);
    }

    #[test]
    fn errors_before_the_heal_do_not_count_even_late_in_the_run() {
        // The heal is 5 s before the end: the quiet window starts there.
        let mut h = Hist::new();
        h.steady(3, 0, 10_000, 100, isolated_3);
        let r = check(&h.calls(), &partition_then_heal(), &HealConfig::default());
        assert_eq!(r.valid, Validity::Valid, "{}", r.summary);
        assert_eq!(r.details["quiet_from_ns"], 5000 * MS);
    }

    #[test]
    fn without_faults_it_measures_from_the_start_and_with_faults_left_it_is_unknown() {
        let mut h = Hist::new();
        h.steady(3, 0, 2000, 100, |_, _| OpType::Ok);
        let none = FaultTimeline::new(&[], 3).unwrap();
        let r = check(&h.calls(), &none, &HealConfig::default());
        assert_eq!(r.valid, Validity::Valid, "{}", r.summary);
        assert!(r.summary.contains("start of history"), "{}", r.summary);

        let kill = [NemesisEvent {
            fault: Fault::Kill { node: NodeId(2) },
            nemesis: None,
            time_ns: 0,
        }];
        let unhealed = FaultTimeline::new(&kill, 3).unwrap();
        let r = check(&h.calls(), &unhealed, &HealConfig::default());
        assert_eq!(r.valid, Validity::Unknown);
        let r = check(&[], &none, &HealConfig::default());
        assert_eq!(r.valid, Validity::Unknown);
        // The run stopped before the heal it logged.
        let r = check(&h.calls(), &partition_then_heal(), &HealConfig::default());
        assert_eq!(r.valid, Validity::Unknown);
        assert!(
            r.summary.contains("ends before the final heal"),
            "{}",
            r.summary
        );
        let _ = Value::Null;
    }

    #[test]
    fn a_node_that_got_no_calls_after_the_heal_fails() {
        let mut h = Hist::new();
        h.steady(2, 0, 20_000, 100, |_, _| OpType::Ok);
        let r = check(&h.calls(), &partition_then_heal(), &HealConfig::default());
        assert_eq!(r.valid, Validity::Invalid);
        assert!(
            r.summary.contains("N3 got no calls after the final heal"),
            "{}",
            r.summary
        );
    }
}
