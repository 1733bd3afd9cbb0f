//! The `Set` checker: no acknowledged add is lost, nothing appears that was
//! never added.
//!
//! Per key, the *final read* is the ok read that completed last (the harness
//! reads every key after the final heal). An add acknowledged before the
//! final read was invoked must be in it, or it is **lost**. An element in
//! any ok read that no add ever tried is **unexpected**; one whose adds all
//! `fail`ed (so certainly did not happen) is **failed but present**; both
//! are invalid. Adds with unknown outcome that show up in the final read
//! are **recovered** (fine, reported). Adds acknowledged while the final
//! read was in flight may legitimately be missing from it: reported as
//! unconfirmed, not lost. An add acknowledged only after the final read
//! completed (no ok read came after it: the cluster never served a read
//! again) is **unverified**: nothing in the history can confirm it, so the
//! key is unknown, as with no ok read at all.

use super::{CheckResult, Validity};
use crate::harness::history::{Call, Outcome, F};
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};

const SHOW: usize = 20;

#[derive(Default)]
struct KeyReport {
    acknowledged: usize,
    lost: BTreeSet<i64>,
    unexpected: BTreeSet<i64>,
    failed_present: BTreeSet<i64>,
    recovered: BTreeSet<i64>,
    unconfirmed: BTreeSet<i64>,
    /// Acknowledged after the final read completed, and absent from it.
    unverified: BTreeSet<i64>,
    final_read: Option<usize>,
    final_size: usize,
}

/// Checks every set key; see the module docs.
pub fn check(calls: &[Call]) -> CheckResult {
    let mut keys: BTreeMap<&str, Vec<&Call>> = BTreeMap::new();
    for c in calls {
        keys.entry(&c.key).or_default().push(c);
    }
    let mut valid = Validity::Valid;
    let mut details = Vec::new();
    let mut problems = Vec::new();
    let (mut lost, mut unexpected, mut failed, mut recovered, mut acked) = (0, 0, 0, 0, 0);
    for (key, key_calls) in keys {
        let report = match check_key(&key_calls) {
            Ok(r) => r,
            Err(e) => {
                valid = Validity::Invalid;
                problems.push(format!("key {key}: {e}"));
                details.push(json!({ "key": key, "error": e }));
                continue;
            }
        };
        lost += report.lost.len();
        unexpected += report.unexpected.len();
        failed += report.failed_present.len();
        recovered += report.recovered.len();
        acked += report.acknowledged;
        let key_valid = if report.final_read.is_none() && report.acknowledged > 0 {
            problems.push(format!(
                "key {key}: no ok read, {} acknowledged adds unverified",
                report.acknowledged
            ));
            Validity::Unknown
        } else if !(report.lost.is_empty()
            && report.unexpected.is_empty()
            && report.failed_present.is_empty())
        {
            Validity::Invalid
        } else if !report.unverified.is_empty() {
            problems.push(format!(
                "key {key}: {} adds acknowledged after the last ok read completed, unverified: {}",
                report.unverified.len(),
                sample(&report.unverified)
            ));
            Validity::Unknown
        } else {
            Validity::Valid
        };
        if !report.lost.is_empty() {
            problems.push(format!(
                "key {key}: lost {} acknowledged adds: {}",
                report.lost.len(),
                sample(&report.lost)
            ));
        }
        if !report.unexpected.is_empty() {
            problems.push(format!(
                "key {key}: {} elements read that were never added: {}",
                report.unexpected.len(),
                sample(&report.unexpected)
            ));
        }
        if !report.failed_present.is_empty() {
            problems.push(format!(
                "key {key}: {} elements read whose adds all failed: {}",
                report.failed_present.len(),
                sample(&report.failed_present)
            ));
        }
        valid = valid.merge(key_valid);
        details.push(json!({
            "key": key,
            "valid": key_valid,
            "acknowledged": report.acknowledged,
            "final_read": report.final_read,
            "final_size": report.final_size,
            "lost": first(&report.lost),
            "lost_count": report.lost.len(),
            "unexpected": first(&report.unexpected),
            "unexpected_count": report.unexpected.len(),
            "failed_but_present": first(&report.failed_present),
            "recovered_count": report.recovered.len(),
            "unconfirmed_count": report.unconfirmed.len(),
            "unverified": first(&report.unverified),
            "unverified_count": report.unverified.len(),
        }));
    }
    let counts = format!(
        "{acked} acknowledged, {lost} lost, {unexpected} unexpected, {failed} failed-but-present, {recovered} recovered"
    );
    let summary = match problems.first() {
        Some(p) => format!("{counts}; {p}"),
        None => counts,
    };
    CheckResult::new(
        "set",
        valid,
        summary,
        json!({
            "acknowledged": acked,
            "lost": lost,
            "unexpected": unexpected,
            "failed_but_present": failed,
            "recovered": recovered,
            "problems": problems,
            "keys": details,
        }),
    )
}

fn check_key(calls: &[&Call]) -> Result<KeyReport, String> {
    let mut report = KeyReport::default();
    // element -> outcomes and completion times of its adds
    let mut attempts: BTreeMap<i64, Vec<&Call>> = BTreeMap::new();
    let mut reads: Vec<(&Call, BTreeSet<i64>)> = Vec::new();
    for c in calls {
        match c.f {
            F::Add => {
                let e = c.value.as_i64().ok_or_else(|| {
                    format!(
                        "op #{}: a set add's value must be an integer, got {}",
                        c.index, c.value
                    )
                })?;
                attempts.entry(e).or_default().push(c);
            }
            F::Read if c.outcome == Outcome::Ok => reads.push((c, elements(c)?)),
            F::Read => {}
            f => return Err(format!("op #{}: `{f}` is not a set function", c.index)),
        }
    }
    report.acknowledged = attempts
        .values()
        .flatten()
        .filter(|c| c.outcome == Outcome::Ok)
        .count();
    for (_, seen) in &reads {
        for e in seen {
            match attempts.get(e) {
                None => {
                    report.unexpected.insert(*e);
                }
                Some(adds) if adds.iter().all(|a| a.outcome == Outcome::Fail) => {
                    report.failed_present.insert(*e);
                }
                Some(_) => {}
            }
        }
    }
    let Some((last, final_set)) = reads.iter().max_by_key(|(c, _)| (c.complete_ns, c.index)) else {
        return Ok(report);
    };
    report.final_read = Some(last.index);
    report.final_size = final_set.len();
    for (e, adds) in &attempts {
        let present = final_set.contains(e);
        for a in adds {
            match a.outcome {
                Outcome::Ok if !present => match a.complete_ns {
                    Some(t) if t < last.invoke_ns => {
                        report.lost.insert(*e);
                    }
                    Some(t) if last.complete_ns.is_some_and(|r| t > r) => {
                        report.unverified.insert(*e);
                    }
                    _ => {
                        report.unconfirmed.insert(*e);
                    }
                },
                Outcome::Info | Outcome::Pending if present => {
                    report.recovered.insert(*e);
                }
                _ => {}
            }
        }
    }
    Ok(report)
}

fn elements(c: &Call) -> Result<BTreeSet<i64>, String> {
    let bad = || {
        format!(
            "op #{}: a set read must return an array of integers, got {}",
            c.index, c.result
        )
    };
    let Value::Array(items) = &c.result else {
        return Err(bad());
    };
    items.iter().map(|v| v.as_i64().ok_or_else(bad)).collect()
}

fn first(s: &BTreeSet<i64>) -> Vec<i64> {
    s.iter().take(SHOW).copied().collect()
}

fn sample(s: &BTreeSet<i64>) -> String {
    let shown: Vec<String> = s.iter().take(8).map(|e| e.to_string()).collect();
    let more = if s.len() > 8 { ", ..." } else { "" };
    format!("{}{more}", shown.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::harness::testkit::Hist;
    use serde_json::json;

    fn add(h: &mut Hist, p: u64, e: i64, start: u64, end: u64) {
        h.ok(p, F::Add, "s", json!(e), Value::Null, start, end);
    }

    fn read(h: &mut Hist, p: u64, elements: &[i64], start: u64, end: u64) {
        h.ok(p, F::Read, "s", Value::Null, json!(elements), start, end);
    }

    #[test]
    fn a_good_history_passes_and_counts_recovered_unknown_adds() {
        let mut h = Hist::new();
        add(&mut h, 1, 1, 0, 1);
        add(&mut h, 2, 2, 0, 2);
        h.info(3, F::Add, "s", json!(3), 1, 10) // landed
            .info(4, F::Add, "s", json!(4), 1, 10) // did not
            .fail(5, F::Add, "s", json!(5), 1, 2);
        read(&mut h, 1, &[1], 1, 3); // concurrent with add 2: fine either way
        read(&mut h, 6, &[1, 2, 3], 20, 21);
        let r = check(&h.calls());
        assert_eq!(r.valid, Validity::Valid, "{}", r.summary);
        assert_eq!(r.details["acknowledged"], 2);
        assert_eq!(r.details["recovered"], 1);
        assert_eq!(r.details["lost"], 0);
        assert!(r.summary.contains("1 recovered"), "{}", r.summary);
    }

    #[test]
    fn a_lost_acknowledged_add_fails_and_is_named() {
        let mut h = Hist::new();
        add(&mut h, 1, 1, 0, 1);
        add(&mut h, 1, 2, 2, 3);
        add(&mut h, 1, 3, 4, 5);
        read(&mut h, 2, &[1, 2, 3], 6, 7);
        // The final read, after the heal, lost element 2.
        read(&mut h, 2, &[1, 3], 30, 31);
        let r = check(&h.calls());
        assert_eq!(r.valid, Validity::Invalid);
        assert_eq!(r.details["lost"], 1);
        assert_eq!(r.details["keys"][0]["lost"], json!([2]));
        assert!(
            r.summary.contains("key s: lost 1 acknowledged adds: 2"),
            "{}",
            r.summary
        );
    }

    #[test]
    fn an_element_never_added_fails() {
        let mut h = Hist::new();
        add(&mut h, 1, 1, 0, 1);
        read(&mut h, 2, &[1, 99], 2, 3);
        read(&mut h, 2, &[1], 4, 5);
        let r = check(&h.calls());
        assert_eq!(r.valid, Validity::Invalid);
        assert_eq!(r.details["unexpected"], 1);
        assert!(r.summary.contains("never added: 99"), "{}", r.summary);
    }

    #[test]
    fn an_element_whose_add_failed_must_not_appear() {
        let mut h = Hist::new();
        h.fail(1, F::Add, "s", json!(7), 0, 1);
        read(&mut h, 2, &[7], 2, 3);
        let r = check(&h.calls());
        assert_eq!(r.valid, Validity::Invalid);
        assert!(r.summary.contains("adds all failed: 7"), "{}", r.summary);
    }

    #[test]
    fn an_add_acknowledged_during_the_final_read_may_be_missing() {
        let mut h = Hist::new();
        add(&mut h, 1, 1, 0, 1);
        add(&mut h, 1, 2, 5, 12); // acknowledged while the read ran
        read(&mut h, 2, &[1], 10, 15);
        let r = check(&h.calls());
        assert_eq!(r.valid, Validity::Valid, "{}", r.summary);
        assert_eq!(r.details["keys"][0]["unconfirmed_count"], 1);
    }

    #[test]
    fn adds_acknowledged_after_the_last_ok_read_are_unverified_not_valid() {
        // The cluster served a read at 10 s, acknowledged two more adds,
        // then never served a read again (the final reads all failed).
        let mut h = Hist::new();
        add(&mut h, 1, 1, 0, 1);
        read(&mut h, 2, &[1], 10, 11);
        add(&mut h, 1, 2, 12, 13);
        add(&mut h, 1, 3, 14, 15);
        h.info(2, F::Read, "s", Value::Null, 30, 40);
        let r = check(&h.calls());
        assert_eq!(r.valid, Validity::Unknown, "{}", r.summary);
        assert_eq!(r.details["keys"][0]["unverified"], json!([2, 3]));
        assert!(
            r.summary
                .contains("2 adds acknowledged after the last ok read completed, unverified: 2, 3"),
            "{}",
            r.summary
        );
        // A lost add still makes the key invalid, whatever else is unverified.
        let mut h = Hist::new();
        add(&mut h, 1, 1, 0, 1);
        read(&mut h, 2, &[], 10, 11);
        add(&mut h, 1, 2, 12, 13);
        assert_eq!(check(&h.calls()).valid, Validity::Invalid);
    }

    #[test]
    fn acknowledged_adds_without_any_read_are_unknown() {
        let mut h = Hist::new();
        add(&mut h, 1, 1, 0, 1);
        h.info(2, F::Read, "s", Value::Null, 2, 3);
        let r = check(&h.calls());
        assert_eq!(r.valid, Validity::Unknown);
        assert!(r.summary.contains("no ok read"), "{}", r.summary);
    }

    #[test]
    fn malformed_reads_are_invalid_not_panics() {
        let mut h = Hist::new();
        add(&mut h, 1, 1, 0, 1);
        h.ok(2, F::Read, "s", Value::Null, json!({"1": true}), 2, 3);
        let r = check(&h.calls());
        assert_eq!(r.valid, Validity::Invalid);
        assert!(r.summary.contains("array of integers"), "{}", r.summary);
    }
}
