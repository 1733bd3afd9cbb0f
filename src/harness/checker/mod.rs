//! Checkers: each turns a paired history into a [`CheckResult`].
//!
//! A history mixes three kinds of object; [`classify`] tells them apart by
//! the functions used on each key (so a key must belong to one object):
//! `get` means counter, `write`/`cas` mean register, `add` with `read` means
//! set, and a key that is only read is a set if an ok read returned an
//! array, else a register. A key with only `add`s cannot be told apart and
//! nothing about it can be verified; the `history` result then says
//! "unknown".

pub mod availability;
pub mod bank;
pub mod counter;
pub mod heal;
pub mod linearizable;
pub mod register;
pub mod set;

use super::history::{pair, Call, Op, Outcome, F};
use super::nemesis::{FaultTimeline, NemesisEvent};
use serde::{Serialize, Serializer};
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

/// Jepsen's `:valid?`: `true`, `false` or `:unknown`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Validity {
    Valid,
    Invalid,
    /// The checker could not decide (a budget ran out, or data was missing).
    Unknown,
}

impl Validity {
    /// Invalid beats unknown beats valid.
    pub fn merge(self, other: Validity) -> Validity {
        use Validity::*;
        match (self, other) {
            (Invalid, _) | (_, Invalid) => Invalid,
            (Unknown, _) | (_, Unknown) => Unknown,
            _ => Valid,
        }
    }

    pub fn from_bool(valid: bool) -> Validity {
        if valid {
            Validity::Valid
        } else {
            Validity::Invalid
        }
    }
}

impl Serialize for Validity {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Validity::Valid => s.serialize_bool(true),
            Validity::Invalid => s.serialize_bool(false),
            Validity::Unknown => s.serialize_str("unknown"),
        }
    }
}

impl fmt::Display for Validity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Validity::Valid => "true",
            Validity::Invalid => "false",
            Validity::Unknown => "unknown",
        })
    }
}

/// One checker's verdict.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct CheckResult {
    pub name: String,
    pub valid: Validity,
    /// One or two lines a person reads first.
    pub summary: String,
    /// Everything else, for the results file.
    pub details: Value,
}

impl CheckResult {
    pub fn new(name: &str, valid: Validity, summary: impl Into<String>, details: Value) -> Self {
        CheckResult {
            name: name.to_string(),
            valid,
            summary: summary.into(),
            details,
        }
    }

    pub fn is_valid(&self) -> bool {
        self.valid == Validity::Valid
    }
}

/// The object a key belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Workload {
    Counter,
    Set,
    Register,
    Bank,
}

/// How keys were classified.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Classes {
    pub keys: BTreeMap<String, Workload>,
    /// Keys with only `add`s: counter or set, no way to tell.
    pub ambiguous: BTreeSet<String>,
    /// Keys used with functions of two objects, and why.
    pub conflicts: BTreeMap<String, String>,
}

/// Decides, per key, which object it is (see the module docs).
pub fn classify(calls: &[Call]) -> Classes {
    #[derive(Default)]
    struct Seen {
        fs: BTreeSet<F>,
        array_read: bool,
        scalar_read: bool,
    }
    let mut seen: BTreeMap<&str, Seen> = BTreeMap::new();
    for c in calls {
        let s = seen.entry(c.key.as_str()).or_default();
        s.fs.insert(c.f);
        if c.f == F::Read && c.outcome == Outcome::Ok {
            if c.result.is_array() {
                s.array_read = true;
            } else {
                s.scalar_read = true;
            }
        }
    }
    let mut classes = Classes::default();
    for (key, s) in seen {
        let has = |f| s.fs.contains(&f);
        let bank = has(F::Deposit) || has(F::Transfer) || has(F::Balance);
        let register = has(F::Write) || has(F::Cas);
        let counter = has(F::Get);
        let set = (has(F::Add) && has(F::Read)) || s.array_read;
        let kinds: Vec<&str> = [
            (counter, "counter"),
            (set, "set"),
            (register, "register"),
            (bank, "bank"),
        ]
        .iter()
        .filter(|k| k.0)
        .map(|k| k.1)
        .collect();
        let workload = match kinds.as_slice() {
            [_, _, ..] => {
                let fs: Vec<String> = s.fs.iter().map(|f| f.to_string()).collect();
                classes.conflicts.insert(
                    key.to_string(),
                    format!("used as {} ({})", kinds.join(" and "), fs.join(", ")),
                );
                continue;
            }
            ["counter"] => Workload::Counter,
            ["set"] => Workload::Set,
            ["register"] => Workload::Register,
            ["bank"] => Workload::Bank,
            _ if has(F::Read) => Workload::Register,
            _ => {
                classes.ambiguous.insert(key.to_string());
                continue;
            }
        };
        if workload == Workload::Set && s.scalar_read {
            classes.conflicts.insert(
                key.to_string(),
                "set reads returned both arrays and scalars".into(),
            );
            continue;
        }
        classes.keys.insert(key.to_string(), workload);
    }
    classes
}

/// Bounds and thresholds of every checker.
#[derive(Clone, Debug, Default)]
pub struct CheckConfig {
    pub linearizable: linearizable::Budget,
    pub heal: heal::HealConfig,
    pub availability: availability::AvailabilityConfig,
}

/// Runs every checker with default bounds. See [`check_all_with`].
pub fn check_all(history: &[Op], events: &[NemesisEvent], nodes: usize) -> Vec<CheckResult> {
    check_all_with(history, events, nodes, &CheckConfig::default())
}

/// Runs every checker: `history` (well-formed, every key classified), then
/// `set`, `register` and `counter` for the objects present, then `heal`
/// and `availability`. A history or nemesis log that cannot be read yields
/// a single invalid result saying why.
pub fn check_all_with(
    history: &[Op],
    events: &[NemesisEvent],
    nodes: usize,
    config: &CheckConfig,
) -> Vec<CheckResult> {
    let calls = match pair(history) {
        Ok(calls) => calls,
        Err(e) => {
            return vec![CheckResult::new(
                "history",
                Validity::Invalid,
                format!("malformed history: {e}"),
                json!({ "error": e.to_string() }),
            )]
        }
    };
    let faults = match FaultTimeline::new(events, nodes) {
        Ok(f) => f,
        Err(e) => {
            return vec![CheckResult::new(
                "nemesis",
                Validity::Invalid,
                format!("malformed nemesis log: {e}"),
                json!({ "error": e.to_string() }),
            )]
        }
    };
    let out_of_range: Vec<usize> = calls
        .iter()
        .filter(|c| c.node.0 == 0 || c.node.0 as usize > nodes)
        .map(|c| c.index)
        .take(10)
        .collect();
    let classes = classify(&calls);
    let mut results = vec![history_result(&calls, &classes, &out_of_range, nodes)];

    let of = |w: Workload| -> Vec<Call> {
        calls
            .iter()
            .filter(|c| classes.keys.get(&c.key) == Some(&w))
            .cloned()
            .collect()
    };
    let sets = of(Workload::Set);
    if !sets.is_empty() {
        results.push(set::check(&sets));
    }
    let registers = of(Workload::Register);
    if !registers.is_empty() {
        results.push(register::check(&registers, &config.linearizable));
    }
    let counters = of(Workload::Counter);
    if !counters.is_empty() {
        results.push(counter::check(&counters));
    }
    let accounts = of(Workload::Bank);
    if !accounts.is_empty() {
        results.push(bank::check(&accounts));
    }
    results.push(heal::check(&calls, &faults, &config.heal));
    results.push(availability::check(&calls, &faults, &config.availability));
    results
}

fn history_result(
    calls: &[Call],
    classes: &Classes,
    out_of_range: &[usize],
    nodes: usize,
) -> CheckResult {
    let mut per_workload: BTreeMap<Workload, usize> = BTreeMap::new();
    for w in classes.keys.values() {
        *per_workload.entry(*w).or_default() += 1;
    }
    let details = json!({
        "calls": calls.len(),
        "keys": per_workload,
        "conflicts": classes.conflicts,
        "ambiguous": classes.ambiguous,
        "nodes_out_of_range": out_of_range,
    });
    let (valid, summary) = if !out_of_range.is_empty() {
        (
            Validity::Invalid,
            format!(
                "calls to nodes outside 1..={nodes}, e.g. op #{}",
                out_of_range[0]
            ),
        )
    } else if let Some((key, why)) = classes.conflicts.iter().next() {
        (
            Validity::Invalid,
            format!("key {key} {why}; {} such keys", classes.conflicts.len()),
        )
    } else if let Some(key) = classes.ambiguous.iter().next() {
        (
            Validity::Unknown,
            format!(
                "{} keys (e.g. {key}) only saw adds and no reads: counter or set, unchecked",
                classes.ambiguous.len()
            ),
        )
    } else {
        (
            Validity::Valid,
            format!("{} calls on {} keys", calls.len(), classes.keys.len()),
        )
    };
    CheckResult::new("history", valid, summary, details)
}

/// Merges validities: the run is valid only if every check is.
pub fn overall(results: &[CheckResult]) -> Validity {
    results
        .iter()
        .fold(Validity::Valid, |acc, r| acc.merge(r.valid))
}

/// A plain-text table of results, like the end of a Jepsen run.
pub fn render_results(results: &[CheckResult]) -> String {
    let width = results
        .iter()
        .map(|r| r.name.len())
        .max()
        .unwrap_or(0)
        .max(7);
    let mut out = format!("{:<width$}  {:<7}  summary\n", "checker", "valid?");
    for r in results {
        out.push_str(&format!(
            "{:<width$}  {:<7}  {}\n",
            r.name,
            r.valid.to_string(),
            r.summary
        ));
    }
    out.push_str(&format!(
        "{:<width$}  {:<7}\n",
        "overall",
        overall(results).to_string()
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::harness::history::OpType;
    use crate::harness::testkit::{isolate_n3_2s_to_5s, Hist};

    fn events() -> Vec<NemesisEvent> {
        isolate_n3_2s_to_5s()
    }

    /// A run with all three objects, node 3 isolated 2 s .. 5 s.
    fn good_run() -> Hist {
        let mut h = Hist::new();
        h.steady(3, 0, 16_000, 100, |node, t| {
            if node == 3 && (2000..5000).contains(&t) {
                OpType::Info
            } else {
                OpType::Ok
            }
        });
        h.on(1)
            .ok(1, F::Add, "s", json!(1), Value::Null, 0, 5)
            .ok(1, F::Add, "s", json!(2), Value::Null, 10, 15)
            .ok(1, F::Write, "r", json!(1), Value::Null, 20, 25)
            .ok(
                1,
                F::Cas,
                "r",
                json!({"expect": 1, "value": 2}),
                Value::Null,
                30,
                35,
            )
            .ok(1, F::Add, "c", json!(3), Value::Null, 40, 45)
            .ok(1, F::Get, "c", Value::Null, json!(3), 50, 55)
            .ok(1, F::Read, "s", Value::Null, json!([1, 2]), 15_000, 15_005)
            .ok(1, F::Read, "r", Value::Null, json!(2), 15_010, 15_015);
        h
    }

    #[test]
    fn a_good_run_passes_every_checker() {
        let results = check_all(&good_run().ops(), &events(), 3);
        let names: Vec<&str> = results.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "history",
                "set",
                "register",
                "counter",
                "heal",
                "availability"
            ]
        );
        for r in &results {
            assert_eq!(r.valid, Validity::Valid, "{}: {}", r.name, r.summary);
        }
        assert_eq!(overall(&results), Validity::Valid);
        let table = render_results(&results);
        assert!(table.contains("register"), "{table}");
        let last: Vec<&str> = table.lines().last().unwrap().split_whitespace().collect();
        assert_eq!(last, ["overall", "true"], "{table}");
        // Results serialize with Jepsen's validity values.
        let json = serde_json::to_value(&results).unwrap();
        assert_eq!(json[0]["valid"], json!(true));
    }

    #[test]
    fn one_bad_checker_makes_the_run_invalid() {
        let mut h = good_run();
        // A stale read of the register after the cas completed.
        h.on(2)
            .ok(9, F::Read, "r", Value::Null, json!(1), 15_020, 15_025);
        let results = check_all(&h.ops(), &events(), 3);
        let register = results.iter().find(|r| r.name == "register").unwrap();
        assert_eq!(register.valid, Validity::Invalid);
        assert_eq!(overall(&results), Validity::Invalid);
        let table = render_results(&results);
        let last: Vec<&str> = table.lines().last().unwrap().split_whitespace().collect();
        assert_eq!(last, ["overall", "false"], "{table}");
    }

    #[test]
    fn malformed_inputs_give_one_invalid_result() {
        let mut ops = good_run().ops();
        let dup = ops[0].clone();
        ops.insert(1, dup);
        let results = check_all(&ops, &events(), 3);
        assert_eq!(results.len(), 1);
        assert_eq!(results[0].name, "history");
        assert_eq!(results[0].valid, Validity::Invalid);
        assert!(
            results[0].summary.contains("op #2"),
            "{}",
            results[0].summary
        );

        let results = check_all(&good_run().ops(), &events(), 2);
        assert_eq!(results.len(), 1);
        assert_eq!(results[0].name, "nemesis");
        assert!(
            results[0].summary.contains("node 3"),
            "{}",
            results[0].summary
        );
    }

    #[test]
    fn keys_are_classified_by_the_functions_used_on_them() {
        let mut h = Hist::new();
        h.ok(1, F::Add, "set", json!(1), Value::Null, 0, 1)
            .ok(1, F::Read, "set", Value::Null, json!([1]), 2, 3)
            .ok(1, F::Add, "counter", json!(1), Value::Null, 4, 5)
            .ok(1, F::Get, "counter", Value::Null, json!(1), 6, 7)
            .ok(1, F::Read, "register", Value::Null, Value::Null, 8, 9)
            .ok(1, F::Read, "read-only-set", Value::Null, json!([]), 10, 11)
            .ok(1, F::Add, "only-adds", json!(1), Value::Null, 12, 13)
            .ok(1, F::Get, "both", Value::Null, json!(0), 14, 15)
            .ok(1, F::Write, "both", json!(1), Value::Null, 16, 17);
        let classes = classify(&h.calls());
        let kind = |k: &str| classes.keys.get(k).copied();
        assert_eq!(kind("set"), Some(Workload::Set));
        assert_eq!(kind("counter"), Some(Workload::Counter));
        assert_eq!(kind("register"), Some(Workload::Register));
        assert_eq!(kind("read-only-set"), Some(Workload::Set));
        assert!(classes.ambiguous.contains("only-adds"));
        assert!(classes.conflicts["both"].contains("counter and register"));

        let results = check_all(&h.ops(), &[], 3);
        assert_eq!(results[0].valid, Validity::Invalid);
        assert!(
            results[0].summary.contains("key both"),
            "{}",
            results[0].summary
        );
    }

    #[test]
    fn validities_merge_invalid_over_unknown_over_valid() {
        use Validity::*;
        assert_eq!(Valid.merge(Valid), Valid);
        assert_eq!(Valid.merge(Unknown), Unknown);
        assert_eq!(Unknown.merge(Invalid), Invalid);
        assert_eq!(Invalid.merge(Valid), Invalid);
        assert_eq!(serde_json::to_value(Unknown).unwrap(), json!("unknown"));
        assert_eq!(serde_json::to_value(Invalid).unwrap(), json!(false));
    }
}
