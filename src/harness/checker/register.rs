//! Linearizability of `Register` keys (read / write / cas, initially null).
//!
//! Each key is checked on its own (linearizability is compositional). Before
//! the search, the history is simplified without changing its answer:
//! - `fail` calls did not happen and are dropped; for `cas` that includes a
//!   412 (the value differed), which has no effect on the register;
//! - reads with unknown outcome observe nothing and are dropped;
//! - a write or cas with unknown outcome whose new value nobody observed
//!   (no ok read returned it, no ok or kept unknown cas expected it) is
//!   dropped: its only possible effect is a state that every later observer
//!   would reject, so a linearization exists with it iff one exists without
//!   it. Repeated until nothing more drops;
//! - a write or cas with unknown outcome whose value *was* observed by an ok
//!   call, and which is the only call ever writing that value, must have
//!   taken effect before the first such observer completed: it gets that as
//!   its deadline (and a cas passes the deadline on to the value it
//!   expected, since that value had to be written first).
//!
//! The last two keep "in flight forever" operations out of the search,
//! which is where Wing–Gong searches blow up. Values written once per run
//! (as the harness does) get the full benefit; repeated values are still
//! checked correctly, just with more search.

use super::linearizable::{self, Budget, Entry, Exhausted, Model, Verdict};
use super::{CheckResult, Validity};
use crate::harness::history::{Call, Outcome, F};
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap, HashSet};

/// The register's state: `None` until the first write.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Register(pub Option<i64>);

/// A register operation's input.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RegisterOp {
    Read,
    Write(i64),
    Cas { expect: Option<i64>, value: i64 },
}

impl Model for Register {
    type Input = RegisterOp;
    /// The value a read returned; ignored for writes and cas.
    type Output = Option<i64>;

    fn step(&self, input: &RegisterOp, output: Option<&Option<i64>>) -> Option<Self> {
        match *input {
            RegisterOp::Read => match output {
                Some(seen) if *seen != self.0 => None,
                _ => Some(*self),
            },
            RegisterOp::Write(v) => Some(Register(Some(v))),
            RegisterOp::Cas { expect, value } => {
                (self.0 == expect).then_some(Register(Some(value)))
            }
        }
    }

    fn is_read_only(input: &RegisterOp) -> bool {
        *input == RegisterOp::Read
    }
}

/// Parses a call's input and, if it completed ok, its read value.
pub fn parse(call: &Call) -> Result<(RegisterOp, Option<i64>), String> {
    let int = |v: &Value, what: &str| {
        v.as_i64()
            .ok_or_else(|| format!("op #{}: {what} must be an integer, got {v}", call.index))
    };
    let int_or_null = |v: &Value, what: &str| {
        if v.is_null() {
            Ok(None)
        } else {
            int(v, what).map(Some)
        }
    };
    match call.f {
        F::Read => {
            let seen = if call.outcome == Outcome::Ok {
                int_or_null(&call.result, "a read's result")?
            } else {
                None
            };
            Ok((RegisterOp::Read, seen))
        }
        F::Write => Ok((
            RegisterOp::Write(int(&call.value, "a write's value")?),
            None,
        )),
        F::Cas => {
            let obj = call.value.as_object().ok_or_else(|| {
                format!(
                    "op #{}: cas value must be {{\"expect\", \"value\"}}, got {}",
                    call.index, call.value
                )
            })?;
            let expect = int_or_null(obj.get("expect").unwrap_or(&Value::Null), "cas expect")?;
            let value = int(obj.get("value").unwrap_or(&Value::Null), "cas value")?;
            Ok((RegisterOp::Cas { expect, value }, None))
        }
        f => Err(format!(
            "op #{}: `{f}` is not a register function",
            call.index
        )),
    }
}

/// The search input for one key, with `origin[i]` = index into the key's
/// calls of entry `i`.
pub struct Prepared {
    pub entries: Vec<Entry<RegisterOp, Option<i64>>>,
    pub origin: Vec<usize>,
    pub dropped_unknown: usize,
    pub deadlined_unknown: usize,
}

/// Applies the simplifications in the module docs.
pub fn prepare(calls: &[&Call]) -> Result<Prepared, String> {
    let parsed: Vec<(RegisterOp, Option<i64>)> =
        calls.iter().map(|c| parse(c)).collect::<Result<_, _>>()?;

    // Values seen by ok calls, with the earliest completion that saw each.
    let mut deadline: HashMap<i64, u64> = HashMap::new();
    let mut writers: HashMap<i64, usize> = HashMap::new();
    let mut unknown_writes: Vec<usize> = Vec::new();
    for (i, (c, (op, seen))) in calls.iter().zip(&parsed).enumerate() {
        let ok_observation = match (op, c.outcome) {
            (RegisterOp::Read, Outcome::Ok) => *seen,
            (RegisterOp::Cas { expect, .. }, Outcome::Ok) => *expect,
            _ => None,
        };
        if let (Some(v), Some(done)) = (ok_observation, c.complete_ns) {
            let t = deadline.entry(v).or_insert(done);
            *t = (*t).min(done);
        }
        if let RegisterOp::Write(v) | RegisterOp::Cas { value: v, .. } = op {
            *writers.entry(*v).or_default() += 1;
            if c.is_unknown() {
                unknown_writes.push(i);
            }
        }
    }
    let value_of = |i: usize| match parsed[i].0 {
        RegisterOp::Write(v) | RegisterOp::Cas { value: v, .. } => Some(v),
        RegisterOp::Read => None,
    };
    let expect_of = |i: usize| match parsed[i].0 {
        RegisterOp::Cas { expect, .. } => expect,
        _ => None,
    };

    // Drop unknown writes nobody could observe. Dropping an unknown cas
    // removes its expectation, which may orphan another: repeat until
    // stable (each pass drops one or stops).
    let mut kept: Vec<usize> = unknown_writes;
    for _ in 0..=kept.len() {
        let observed: HashSet<i64> = deadline
            .keys()
            .copied()
            .chain(kept.iter().filter_map(|&i| expect_of(i)))
            .collect();
        let before = kept.len();
        kept.retain(|&i| value_of(i).is_some_and(|v| observed.contains(&v)));
        if kept.len() == before {
            break;
        }
    }

    // An unknown call that is the only writer of an observed value must
    // land before the first ok observer returned; if it is a cas, the value
    // it expected must then have been written before that too.
    let unique = |v: i64| writers.get(&v) == Some(&1);
    for _ in 0..=kept.len() {
        let mut changed = false;
        for &i in &kept {
            let (Some(v), Some(e)) = (value_of(i), expect_of(i)) else {
                continue;
            };
            let Some(&d) = deadline.get(&v).filter(|_| unique(v)) else {
                continue;
            };
            let sooner = match deadline.get(&e) {
                Some(&known) => d < known,
                None => true,
            };
            if sooner {
                deadline.insert(e, d);
                changed = true;
            }
        }
        if !changed {
            break;
        }
    }

    let kept: HashSet<usize> = kept.into_iter().collect();
    let mut prepared = Prepared {
        entries: Vec::new(),
        origin: Vec::new(),
        dropped_unknown: 0,
        deadlined_unknown: 0,
    };
    for (i, (c, (op, seen))) in calls.iter().zip(&parsed).enumerate() {
        let completion = match (c.outcome, value_of(i)) {
            (Outcome::Fail, _) => continue,
            (Outcome::Ok, _) => Some((c.complete_ns.unwrap_or(c.invoke_ns), *seen)),
            // An unknown read observes nothing.
            (_, None) => continue,
            (_, Some(_)) if !kept.contains(&i) => {
                prepared.dropped_unknown += 1;
                continue;
            }
            (_, Some(v)) => match deadline.get(&v) {
                Some(&d) if unique(v) => {
                    prepared.deadlined_unknown += 1;
                    Some((d, None))
                }
                _ => None,
            },
        };
        prepared.entries.push(Entry {
            input: *op,
            invoke_ns: c.invoke_ns,
            completion,
        });
        prepared.origin.push(i);
    }
    Ok(prepared)
}

/// Checks every key; valid iff every key is linearizable. The budget
/// applies to each key's search separately.
pub fn check(calls: &[Call], budget: &Budget) -> CheckResult {
    let mut keys: BTreeMap<&str, Vec<&Call>> = BTreeMap::new();
    for c in calls {
        keys.entry(&c.key).or_default().push(c);
    }
    let mut valid = Validity::Valid;
    let mut per_key = Vec::new();
    let mut failures = Vec::new();
    let mut unknown = Vec::new();
    for (key, key_calls) in &keys {
        let (validity, report, problem) = check_key(key, key_calls, budget);
        valid = valid.merge(validity);
        per_key.push(report);
        match validity {
            Validity::Invalid => failures.extend(problem),
            Validity::Unknown => unknown.extend(problem),
            Validity::Valid => {}
        }
    }
    let summary = if let Some(first) = failures.first() {
        format!(
            "{} of {} keys not linearizable; {first}",
            failures.len(),
            keys.len()
        )
    } else if let Some(first) = unknown.first() {
        format!(
            "{} of {} keys undecided: {first}",
            unknown.len(),
            keys.len()
        )
    } else {
        format!("{} keys linearizable ({} calls)", keys.len(), calls.len())
    };
    CheckResult::new("register", valid, summary, json!({ "keys": per_key }))
}

/// One key: validity, a JSON report, and a one-line problem statement.
fn check_key(key: &str, calls: &[&Call], budget: &Budget) -> (Validity, Value, Option<String>) {
    let prepared = match prepare(calls) {
        Ok(p) => p,
        Err(e) => {
            let msg = format!("key {key}: malformed call: {e}");
            return (
                Validity::Invalid,
                json!({ "key": key, "error": e }),
                Some(msg),
            );
        }
    };
    let search = linearizable::check(&Register(None), &prepared.entries, budget);
    let mut report = json!({
        "key": key,
        "calls": calls.len(),
        "searched": prepared.entries.len(),
        "unknown_dropped": prepared.dropped_unknown,
        "unknown_with_deadline": prepared.deadlined_unknown,
        "steps": search.steps,
        "memo_entries": search.memo_entries,
        "elapsed_ms": search.elapsed.as_secs_f64() * 1e3,
    });
    match search.verdict {
        Verdict::Linearizable => {
            report["linearizable"] = json!(true);
            (Validity::Valid, report, None)
        }
        Verdict::Unknown(why) => {
            let why = match why {
                Exhausted::Steps => "step budget",
                Exhausted::Time => "time budget",
                Exhausted::Memory => "memory budget",
            };
            report["linearizable"] = json!("unknown");
            report["exhausted"] = json!(why);
            let msg = format!("key {key}: search ran out of its {why}");
            (Validity::Unknown, report, Some(msg))
        }
        Verdict::NotLinearizable(stuck) => {
            let culprit = calls[prepared.origin[stuck.entry]];
            let states: Vec<Option<i64>> = stuck.states.iter().map(|r| r.0).collect();
            let window = window_around(calls, culprit.index, 8);
            report["linearizable"] = json!(false);
            report["stuck_at"] = json!(culprit.describe());
            report["possible_states"] = json!(states);
            report["max_linearized"] = json!(stuck.max_linearized);
            report["window"] = json!(window);
            let shown: Vec<String> = states
                .iter()
                .map(|s| s.map_or("null".to_string(), |v| v.to_string()))
                .collect();
            let msg = format!(
                "key {key}: cannot linearize {} by its completion; the register could hold [{}] there (see details.window)",
                culprit.describe(),
                shown.join(", ")
            );
            (Validity::Invalid, report, Some(msg))
        }
    }
}

/// Up to `radius` calls either side of op `index`, in invocation order,
/// with times in ms relative to the first one shown.
fn window_around(calls: &[&Call], index: usize, radius: usize) -> Vec<String> {
    let mut sorted: Vec<&Call> = calls.to_vec();
    sorted.sort_by_key(|c| (c.invoke_ns, c.index));
    let pos = sorted.iter().position(|c| c.index == index).unwrap_or(0);
    let lo = pos.saturating_sub(radius);
    let hi = (pos + radius + 1).min(sorted.len());
    let t0 = sorted[lo..hi]
        .iter()
        .map(|c| c.invoke_ns)
        .min()
        .unwrap_or(0);
    let ms = |t: u64| (t.saturating_sub(t0)) as f64 / 1e6;
    sorted[lo..hi]
        .iter()
        .map(|c| {
            let end = c
                .complete_ns
                .map_or("never".to_string(), |t| format!("{:.3}", ms(t)));
            let mark = if c.index == index { ">> " } else { "   " };
            format!(
                "{mark}[{:.3} .. {end} ms] {}",
                ms(c.invoke_ns),
                c.describe()
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::harness::history::{pair, Op, OpType};
    use crate::harness::testkit::{Hist, MS};
    use crate::types::NodeId;
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};
    use std::time::{Duration, Instant};

    fn cas(expect: Option<i64>, value: i64) -> Value {
        json!({ "expect": expect, "value": value })
    }

    fn run(h: &Hist) -> CheckResult {
        check(&h.calls(), &Budget::default())
    }

    #[test]
    fn cas_swaps_only_on_the_expected_value() {
        let mut h = Hist::new();
        h.ok(1, F::Cas, "r", cas(None, 1), Value::Null, 0, 1)
            .ok(1, F::Cas, "r", cas(Some(1), 2), Value::Null, 2, 3)
            // A 412: the value was not 1 any more; no effect.
            .fail(1, F::Cas, "r", cas(Some(1), 3), 4, 5)
            .ok(1, F::Read, "r", Value::Null, json!(2), 6, 7);
        let r = run(&h);
        assert_eq!(r.valid, Validity::Valid, "{}", r.summary);

        // A cas that claims to have swapped from a value the register did
        // not hold.
        let mut h = Hist::new();
        h.ok(1, F::Write, "r", json!(1), Value::Null, 0, 1).ok(
            1,
            F::Cas,
            "r",
            cas(Some(5), 2),
            Value::Null,
            2,
            3,
        );
        let r = run(&h);
        assert_eq!(r.valid, Validity::Invalid);
        assert!(r.summary.contains("key r"), "{}", r.summary);
        assert!(r.summary.contains("cas"), "{}", r.summary);

        // Swapping from null only works before the first write.
        let mut h = Hist::new();
        h.ok(1, F::Write, "r", json!(1), Value::Null, 0, 1).ok(
            1,
            F::Cas,
            "r",
            cas(None, 2),
            Value::Null,
            2,
            3,
        );
        assert_eq!(run(&h).valid, Validity::Invalid);

        // A failed cas did not happen: its value must not be read.
        let mut h = Hist::new();
        h.ok(1, F::Write, "r", json!(1), Value::Null, 0, 1)
            .fail(1, F::Cas, "r", cas(Some(1), 2), 2, 3)
            .ok(1, F::Read, "r", Value::Null, json!(2), 4, 5);
        assert_eq!(run(&h).valid, Validity::Invalid);
    }

    #[test]
    fn a_stale_read_fails_with_the_key_the_op_and_a_window() {
        let mut h = Hist::new();
        h.ok(1, F::Write, "a", json!(1), Value::Null, 0, 1)
            .ok(4, F::Write, "b", json!(1), Value::Null, 0, 1)
            .ok(2, F::Write, "b", json!(2), Value::Null, 2, 3)
            .ok(3, F::Read, "b", Value::Null, json!(1), 4, 5)
            .ok(3, F::Read, "a", Value::Null, json!(1), 6, 7);
        let r = run(&h);
        assert_eq!(r.valid, Validity::Invalid);
        assert!(
            r.summary.starts_with("1 of 2 keys not linearizable"),
            "{}",
            r.summary
        );
        assert!(r.summary.contains("key b"), "{}", r.summary);
        assert!(r.summary.contains("read b -> 1"), "{}", r.summary);
        assert!(r.summary.contains("could hold [2]"), "{}", r.summary);
        let b = r.details["keys"]
            .as_array()
            .unwrap()
            .iter()
            .find(|k| k["key"] == "b")
            .unwrap();
        assert_eq!(b["linearizable"], json!(false));
        let window: Vec<&str> = b["window"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l.as_str().unwrap())
            .collect();
        assert_eq!(window.len(), 3);
        assert!(window[2].starts_with(">> "), "{window:?}");
        assert!(window[2].contains("read b -> 1"));
    }

    #[test]
    fn a_concurrent_history_with_unknown_outcomes_passes() {
        // Four clients; p2's write times out but lands later, p3's write
        // times out and never lands, p4's cas times out and lands; reads
        // with unknown outcome are ignored.
        let mut h = Hist::new();
        h.ok(1, F::Write, "r", json!(1), Value::Null, 0, 10)
            .info(2, F::Write, "r", json!(2), 5, 30)
            .info(3, F::Write, "r", json!(3), 6, 31)
            .ok(4, F::Read, "r", Value::Null, json!(1), 8, 12)
            .ok(1, F::Read, "r", Value::Null, json!(1), 11, 20)
            .info(4, F::Read, "r", Value::Null, 13, 40)
            .ok(1, F::Read, "r", Value::Null, json!(2), 35, 36)
            .info(5, F::Cas, "r", cas(Some(2), 4), 37, 60)
            .ok(6, F::Read, "r", Value::Null, json!(2), 38, 39)
            .ok(7, F::Read, "r", Value::Null, json!(4), 70, 71)
            .fail(7, F::Write, "r", json!(9), 72, 73)
            .ok(7, F::Read, "r", Value::Null, json!(4), 74, 75);
        let r = run(&h);
        assert_eq!(r.valid, Validity::Valid, "{}", r.summary);
        let key = &r.details["keys"][0];
        // p3's write was never observed; p2's and p5's got deadlines.
        assert_eq!(key["unknown_dropped"], 1);
        assert_eq!(key["unknown_with_deadline"], 2);
        assert_eq!(key["linearizable"], json!(true));
    }

    #[test]
    fn an_unknown_write_cannot_be_seen_before_it_was_sent() {
        let mut h = Hist::new();
        h.ok(1, F::Read, "r", Value::Null, json!(7), 0, 5)
            .info(2, F::Write, "r", json!(7), 10, 20);
        let r = run(&h);
        assert_eq!(r.valid, Validity::Invalid, "{}", r.summary);
        assert!(r.summary.contains("read r -> 7"), "{}", r.summary);
    }

    #[test]
    fn malformed_values_are_reported_not_panicked_on() {
        let mut h = Hist::new();
        h.ok(1, F::Write, "r", json!("seven"), Value::Null, 0, 1);
        let r = run(&h);
        assert_eq!(r.valid, Validity::Invalid);
        assert!(r.summary.contains("must be an integer"), "{}", r.summary);
        let mut h = Hist::new();
        h.ok(1, F::Cas, "r", json!([1, 2]), Value::Null, 0, 1);
        assert!(run(&h).summary.contains("cas value must be"));
    }

    /// Simulates a real linearizable register: every call takes effect at a
    /// random instant inside its interval (unknown ones maybe later, maybe
    /// never), and results are whatever the register held then.
    fn simulate(seed: u64, clients: usize, calls: usize, info_rate: f64) -> Vec<Op> {
        struct Planned {
            process: u64,
            node: u32,
            f: F,
            value: Value,
            op: RegisterOp,
            invoke: u64,
            complete: u64,
            effect_at: Option<u64>,
            kind: OpType,
            result: Value,
        }
        let mut rng = StdRng::seed_from_u64(seed);
        let mut clock: Vec<u64> = (0..clients).map(|_| rng.gen_range(0..5 * MS)).collect();
        let mut process: Vec<u64> = (0..clients as u64).collect();
        let mut next_process = clients as u64;
        let mut next_value = 1i64;
        let mut written: Vec<i64> = Vec::new();
        let mut plan: Vec<Planned> = Vec::with_capacity(calls);
        for _ in 0..calls {
            let c = (0..clients).min_by_key(|&c| clock[c]).unwrap_or(0);
            let invoke = clock[c];
            let duration = rng.gen_range(MS / 2..20 * MS);
            let (f, op, value) = match rng.gen_range(0..10) {
                0..=4 => (F::Read, RegisterOp::Read, Value::Null),
                5..=7 => {
                    next_value += 1;
                    written.push(next_value);
                    (F::Write, RegisterOp::Write(next_value), json!(next_value))
                }
                _ => {
                    next_value += 1;
                    let expect = if written.is_empty() || rng.gen_bool(0.1) {
                        None
                    } else {
                        let back = rng.gen_range(1..=written.len().min(3));
                        Some(written[written.len() - back])
                    };
                    written.push(next_value);
                    let op = RegisterOp::Cas {
                        expect,
                        value: next_value,
                    };
                    (F::Cas, op, cas(expect, next_value))
                }
            };
            let roll: f64 = rng.gen();
            let (kind, effect_at) = if roll < info_rate {
                // Timed out; took effect later, during, or never.
                let at = invoke + rng.gen_range(0..3 * duration);
                (OpType::Info, rng.gen_bool(0.5).then_some(at))
            } else if roll < info_rate + 0.03 {
                (OpType::Fail, None)
            } else {
                (OpType::Ok, Some(invoke + rng.gen_range(0..=duration)))
            };
            plan.push(Planned {
                process: process[c],
                node: (c % 3) as u32 + 1,
                f,
                value,
                op,
                invoke,
                complete: invoke + duration,
                effect_at,
                kind,
                result: Value::Null,
            });
            if kind == OpType::Info {
                process[c] = next_process;
                next_process += 1;
            }
            clock[c] = invoke + duration + rng.gen_range(0..3 * MS);
        }
        // Apply effects in the order they happened.
        let mut order: Vec<usize> = (0..plan.len())
            .filter(|&i| plan[i].effect_at.is_some())
            .collect();
        order.sort_by_key(|&i| plan[i].effect_at);
        let mut state = Register(None);
        for i in order {
            let p = &mut plan[i];
            match p.op {
                RegisterOp::Read => p.result = json!(state.0),
                RegisterOp::Write(v) => state = Register(Some(v)),
                RegisterOp::Cas { expect, value } => {
                    if state.0 == expect {
                        state = Register(Some(value));
                    } else if p.kind == OpType::Ok {
                        p.kind = OpType::Fail;
                    }
                }
            }
        }
        let mut lines: Vec<(u64, usize, Op)> = Vec::new();
        for p in plan {
            let line = |kind, value: &Value, t| Op {
                process: p.process,
                kind,
                f: p.f,
                key: "r".into(),
                value: value.clone(),
                node: NodeId(p.node),
                time_ns: t,
                error: None,
            };
            let done_value = if p.kind == OpType::Ok && p.f == F::Read {
                &p.result
            } else {
                &p.value
            };
            lines.push((
                p.invoke,
                lines.len(),
                line(OpType::Invoke, &p.value, p.invoke),
            ));
            lines.push((
                p.complete,
                lines.len(),
                line(p.kind, done_value, p.complete),
            ));
        }
        lines.sort_by_key(|l| (l.0, l.1));
        lines.into_iter().map(|l| l.2).collect()
    }

    /// Makes a late ok read return a value that two later, sequential writes
    /// had certainly replaced. Returns the read's op index, if there is
    /// such a read.
    fn corrupt(calls: &mut [Call]) -> Option<usize> {
        let changed = |c: &Call| c.outcome == Outcome::Ok && matches!(c.f, F::Write | F::Cas);
        let target = calls
            .iter()
            .enumerate()
            .skip(calls.len() * 3 / 4)
            .filter(|(_, c)| c.f == F::Read && c.outcome == Outcome::Ok)
            .find_map(|(i, r)| {
                let w2 = calls
                    .iter()
                    .filter(|c| changed(c) && c.complete_ns < Some(r.invoke_ns))
                    .max_by_key(|c| c.complete_ns)?;
                let w1 = calls
                    .iter()
                    .filter(|c| changed(c) && c.complete_ns < Some(w2.invoke_ns))
                    .max_by_key(|c| c.complete_ns)?;
                let old = match w1.f {
                    F::Cas => w1.value["value"].clone(),
                    _ => w1.value.clone(),
                };
                Some((i, old))
            });
        let (i, old) = target?;
        calls[i].result = old;
        Some(calls[i].index)
    }

    #[test]
    fn finds_a_simulated_history_linearizable_in_seconds_and_a_corrupted_copy_not() {
        let ops = simulate(42, 10, 2000, 0.05);
        let calls = pair(&ops).unwrap();
        let infos = calls.iter().filter(|c| c.is_unknown()).count();
        assert!(infos > 50, "{infos} unknown calls");
        assert_eq!(calls.len(), 2000);
        // The simulation really was concurrent.
        let mut max_concurrency = 0;
        for c in &calls {
            let overlapping = calls
                .iter()
                .filter(|d| {
                    d.invoke_ns <= c.invoke_ns && d.complete_ns.is_some_and(|t| t >= c.invoke_ns)
                })
                .count();
            max_concurrency = max_concurrency.max(overlapping);
        }
        assert!(max_concurrency >= 8, "max concurrency {max_concurrency}");

        let started = Instant::now();
        let r = check(&calls, &Budget::default());
        let took = started.elapsed();
        assert_eq!(r.valid, Validity::Valid, "{}", r.summary);
        assert!(took < Duration::from_secs(5), "took {took:?}");
        eprintln!("valid: {took:?} {}", r.details["keys"][0]);

        let mut bad = calls.clone();
        let culprit = corrupt(&mut bad).expect("a read to corrupt");
        let started = Instant::now();
        let r = check(&bad, &Budget::default());
        let took = started.elapsed();
        assert_eq!(r.valid, Validity::Invalid, "{}", r.summary);
        assert!(took < Duration::from_secs(5), "took {took:?}");
        assert!(r.summary.contains(&format!("#{culprit} ")), "{}", r.summary);
        eprintln!("invalid: {took:?} {}", r.summary);
    }

    #[test]
    fn simplifying_unknown_calls_never_changes_the_verdict() {
        // Compare the simplified search with a plain one that keeps every
        // unknown call in flight forever, on small simulated histories and
        // on corrupted copies.
        let mut verdicts = [0usize; 2];
        for seed in 0..200 {
            let ops = simulate(seed, 4, 30, 0.25);
            let mut calls = pair(&ops).unwrap();
            let corrupted = seed % 2 == 1 && corrupt(&mut calls).is_some();
            let refs: Vec<&Call> = calls.iter().collect();
            let prepared = prepare(&refs).unwrap();
            let plain: Vec<Entry<RegisterOp, Option<i64>>> = calls
                .iter()
                .filter(|c| c.outcome != Outcome::Fail)
                .map(|c| {
                    let (op, seen) = parse(c).unwrap();
                    Entry {
                        input: op,
                        invoke_ns: c.invoke_ns,
                        completion: (c.outcome == Outcome::Ok)
                            .then(|| (c.complete_ns.unwrap(), seen)),
                    }
                })
                .collect();
            let budget = Budget::default();
            let fast = linearizable::check(&Register(None), &prepared.entries, &budget).verdict;
            let slow = linearizable::check(&Register(None), &plain, &budget).verdict;
            assert_eq!(
                fast == Verdict::Linearizable,
                slow == Verdict::Linearizable,
                "seed {seed}: {fast:?} vs {slow:?}"
            );
            assert!(!matches!(slow, Verdict::Unknown(_)), "seed {seed}");
            // The simulation is linearizable; a corrupted copy is not.
            assert_eq!(fast == Verdict::Linearizable, !corrupted, "seed {seed}");
            verdicts[usize::from(corrupted)] += 1;
        }
        assert!(verdicts[0] >= 100 && verdicts[1] >= 50, "{verdicts:?}");
    }
}
