//! The `Counter` checker: every value read lies within what the adds allow.
//!
//! For a read over `[invoke, complete]`, the adds that certainly happened
//! before it are those acknowledged before `invoke` (set A); those that may
//! have are those invoked before `complete` that did not fail (set P ⊇ A).
//! The value must be `sum(A) + sum(S)` for some S ⊆ P \ A, so
//!
//! ```text
//! lower = Σ{d ∈ A, d > 0} + Σ{d ∈ P, d < 0}
//! upper = Σ{d ∈ A, d < 0} + Σ{d ∈ P, d > 0}
//! ```
//!
//! With non-negative deltas (the harness' workload) this is the classic
//! "acknowledged before the read ≤ value ≤ attempted before it completed";
//! negative deltas are handled by the same formula. Reads are ok `get`s and
//! ok `add`s that return the new total (their own delta counts as
//! acknowledged). `fail`ed adds are excluded entirely: they did not happen.
//! Sums are `i128`, so no delta can overflow them.

use super::{CheckResult, Validity};
use crate::harness::history::{Call, Outcome, F};
use serde_json::json;
use std::collections::BTreeMap;

/// Adds sorted by a time, with prefix sums of positive and negative deltas.
struct Prefix {
    times: Vec<u64>,
    pos: Vec<i128>,
    neg: Vec<i128>,
}

impl Prefix {
    fn new(mut adds: Vec<(u64, i128)>) -> Self {
        adds.sort_unstable();
        let (mut pos, mut neg) = (vec![0], vec![0]);
        for &(_, d) in &adds {
            pos.push(pos.last().copied().unwrap_or(0) + d.max(0));
            neg.push(neg.last().copied().unwrap_or(0) + d.min(0));
        }
        Prefix {
            times: adds.into_iter().map(|a| a.0).collect(),
            pos,
            neg,
        }
    }

    /// (positive, negative) sums over adds with time strictly before `t`.
    fn before(&self, t: u64) -> (i128, i128) {
        let i = self.times.partition_point(|&x| x < t);
        (self.pos[i], self.neg[i])
    }
}

struct Read<'a> {
    call: &'a Call,
    value: i128,
    own: Option<i128>,
}

/// Checks every counter key; see the module docs.
pub fn check(calls: &[Call]) -> CheckResult {
    let mut keys: BTreeMap<&str, Vec<&Call>> = BTreeMap::new();
    for c in calls {
        keys.entry(&c.key).or_default().push(c);
    }
    let mut valid = Validity::Valid;
    let mut details = Vec::new();
    let mut problems: Vec<String> = Vec::new();
    let mut checked = 0;
    for (key, key_calls) in keys {
        match check_key(key, &key_calls) {
            Ok((v, report, problem, n)) => {
                valid = valid.merge(v);
                checked += n;
                problems.extend(problem);
                details.push(report);
            }
            Err(e) => {
                valid = Validity::Invalid;
                problems.push(format!("key {key}: {e}"));
                details.push(json!({ "key": key, "error": e }));
            }
        }
    }
    let summary = match problems.first() {
        Some(p) => format!("{} problem keys; {p}", problems.len()),
        None => format!("{checked} reads within bounds"),
    };
    CheckResult::new("counter", valid, summary, json!({ "keys": details }))
}

type KeyOutcome = (Validity, serde_json::Value, Option<String>, usize);

fn check_key(key: &str, calls: &[&Call]) -> Result<KeyOutcome, String> {
    let mut acked = Vec::new();
    let mut attempted = Vec::new();
    let mut reads = Vec::new();
    for c in calls {
        let int = |v: &serde_json::Value, what: &str| {
            v.as_i64()
                .map(i128::from)
                .ok_or_else(|| format!("op #{}: {what} must be an integer, got {v}", c.index))
        };
        match c.f {
            F::Add => {
                let d = int(&c.value, "an add's delta")?;
                if c.outcome == Outcome::Fail {
                    continue;
                }
                attempted.push((c.invoke_ns, d));
                if c.outcome == Outcome::Ok {
                    acked.push((c.complete_ns.unwrap_or(c.invoke_ns), d));
                    if !c.result.is_null() {
                        let value = int(&c.result, "an add's returned total")?;
                        reads.push(Read {
                            call: c,
                            value,
                            own: Some(d),
                        });
                    }
                }
            }
            F::Get if c.outcome == Outcome::Ok => {
                let value = int(&c.result, "a get's value")?;
                reads.push(Read {
                    call: c,
                    value,
                    own: None,
                });
            }
            F::Get => {}
            f => return Err(format!("op #{}: `{f}` is not a counter function", c.index)),
        }
    }
    let acked = Prefix::new(acked);
    let attempted = Prefix::new(attempted);
    let mut violations = Vec::new();
    let mut final_read: Option<(&Call, i128, i128, i128)> = None;
    for r in &reads {
        let complete = r.call.complete_ns.unwrap_or(r.call.invoke_ns);
        let (mut a_pos, mut a_neg) = acked.before(r.call.invoke_ns);
        // `before` is strict: an add invoked at the instant the read
        // completed may still count, so look one past it.
        let (p_pos, p_neg) = attempted.before(complete.saturating_add(1));
        if let Some(d) = r.own {
            // An add's own delta is in the total it returns.
            if d > 0 {
                a_pos += d;
            } else {
                a_neg += d;
            }
        }
        let lower = a_pos + p_neg;
        let upper = a_neg + p_pos;
        if r.value < lower || r.value > upper {
            violations.push(json!({
                "op": r.call.describe(),
                "value": r.value.to_string(),
                "lower": lower.to_string(),
                "upper": upper.to_string(),
            }));
        }
        let order = (r.call.complete_ns, r.call.index);
        let later = match &final_read {
            Some((c, ..)) => (c.complete_ns, c.index) < order,
            None => true,
        };
        if r.own.is_none() && later {
            final_read = Some((r.call, r.value, lower, upper));
        }
    }
    let total_acked: i128 = acked.pos.last().unwrap_or(&0) + acked.neg.last().unwrap_or(&0);
    let mut report = json!({
        "key": key,
        "reads": reads.len(),
        "violations": violations.len(),
        "first_violations": violations.iter().take(10).collect::<Vec<_>>(),
        "acknowledged_sum": total_acked.to_string(),
    });
    if let Some((c, v, lo, hi)) = final_read {
        report["final"] = json!({
            "op": c.describe(),
            "value": v.to_string(),
            "lower": lo.to_string(),
            "upper": hi.to_string(),
        });
    }
    let problem;
    let validity = if let Some(v) = violations.first() {
        problem = Some(format!(
            "key {key}: {} reads out of bounds, first {} read {} outside [{}, {}]",
            violations.len(),
            v["op"].as_str().unwrap_or_default(),
            v["value"].as_str().unwrap_or_default(),
            v["lower"].as_str().unwrap_or_default(),
            v["upper"].as_str().unwrap_or_default(),
        ));
        Validity::Invalid
    } else if reads.is_empty() && !acked.times.is_empty() {
        problem = Some(format!(
            "key {key}: no ok get; acknowledged adds unverified"
        ));
        Validity::Unknown
    } else {
        problem = None;
        Validity::Valid
    };
    Ok((validity, report, problem, reads.len()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::harness::testkit::Hist;
    use serde_json::{json, Value};

    fn add(h: &mut Hist, p: u64, d: i64, start: u64, end: u64) {
        h.ok(p, F::Add, "c", json!(d), Value::Null, start, end);
    }

    fn get(h: &mut Hist, p: u64, v: i64, start: u64, end: u64) {
        h.ok(p, F::Get, "c", Value::Null, json!(v), start, end);
    }

    fn valid(h: &Hist) -> Validity {
        check(&h.calls()).valid
    }

    #[test]
    fn reads_between_acknowledged_and_attempted_pass() {
        for seen in [3, 8, 13] {
            let mut h = Hist::new();
            add(&mut h, 1, 1, 0, 1);
            add(&mut h, 1, 2, 2, 3);
            add(&mut h, 2, 5, 4, 10); // concurrent with the read
            h.info(3, F::Add, "c", json!(5), 4, 20); // may land any time
            get(&mut h, 4, seen, 5, 6);
            let r = check(&h.calls());
            assert_eq!(r.valid, Validity::Valid, "read {seen}: {}", r.summary);
        }
    }

    #[test]
    fn a_read_above_what_was_attempted_fails() {
        let mut h = Hist::new();
        add(&mut h, 1, 1, 0, 1);
        add(&mut h, 1, 2, 2, 3);
        get(&mut h, 2, 4, 5, 6);
        let r = check(&h.calls());
        assert_eq!(r.valid, Validity::Invalid);
        assert!(r.summary.contains("read 4 outside [3, 3]"), "{}", r.summary);
    }

    #[test]
    fn a_read_below_what_was_acknowledged_fails() {
        let mut h = Hist::new();
        add(&mut h, 1, 1, 0, 1);
        add(&mut h, 1, 2, 2, 3);
        get(&mut h, 2, 3, 5, 6);
        get(&mut h, 2, 1, 7, 8); // lost an acknowledged add
        let r = check(&h.calls());
        assert_eq!(r.valid, Validity::Invalid);
        assert!(r.summary.contains("read 1 outside [3, 3]"), "{}", r.summary);
        assert_eq!(r.details["keys"][0]["violations"], 1);
    }

    #[test]
    fn a_failed_add_must_not_count() {
        let mut h = Hist::new();
        add(&mut h, 1, 1, 0, 1);
        h.fail(2, F::Add, "c", json!(10), 0, 1);
        get(&mut h, 3, 1, 2, 3);
        assert_eq!(valid(&h), Validity::Valid);
        get(&mut h, 3, 11, 4, 5);
        assert_eq!(valid(&h), Validity::Invalid);
    }

    #[test]
    fn an_add_returning_its_total_is_checked_too() {
        let mut h = Hist::new();
        h.ok(1, F::Add, "c", json!(2), json!(2), 0, 1)
            .ok(1, F::Add, "c", json!(3), json!(5), 2, 3);
        assert_eq!(valid(&h), Validity::Valid);
        let mut h = Hist::new();
        h.ok(1, F::Add, "c", json!(2), json!(2), 0, 1)
            .ok(1, F::Add, "c", json!(3), json!(3), 2, 3);
        assert_eq!(valid(&h), Validity::Invalid);
    }

    #[test]
    fn negative_deltas_use_the_mirrored_bounds() {
        // +5 acknowledged, -2 in flight: 3 or 5 are possible, 4 is within
        // the bounds too (the checker bounds, it does not enumerate).
        for (seen, ok) in [(3, true), (5, true), (2, false), (6, false)] {
            let mut h = Hist::new();
            add(&mut h, 1, 5, 0, 1);
            h.info(2, F::Add, "c", json!(-2), 2, 20);
            get(&mut h, 3, seen, 3, 4);
            assert_eq!(valid(&h), Validity::from_bool(ok), "read {seen}");
        }
    }

    #[test]
    fn reports_the_final_value_and_unknown_without_reads() {
        let mut h = Hist::new();
        add(&mut h, 1, 4, 0, 1);
        let r = check(&h.calls());
        assert_eq!(r.valid, Validity::Unknown);
        get(&mut h, 1, 4, 2, 3);
        let r = check(&h.calls());
        assert_eq!(r.valid, Validity::Valid);
        assert_eq!(r.details["keys"][0]["final"]["value"], "4");
        assert_eq!(r.details["keys"][0]["acknowledged_sum"], "4");
    }

    #[test]
    fn malformed_values_are_invalid_not_panics() {
        let mut h = Hist::new();
        h.ok(1, F::Get, "c", Value::Null, json!("many"), 0, 1);
        let r = check(&h.calls());
        assert_eq!(r.valid, Validity::Invalid);
        assert!(r.summary.contains("must be an integer"), "{}", r.summary);
    }
}
