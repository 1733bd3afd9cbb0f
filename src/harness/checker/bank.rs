//! The bank checker (Jepsen's classic): transfers between accounts conserve
//! money, no balance is ever seen below zero, and the final balances are
//! what the transfers allow.
//!
//! The history: `deposit`s fund the accounts first (each must be
//! acknowledged before any transfer starts), then `transfer`s (key: the
//! account debited, value `{"to": account, "amount": n}`) and `balance`
//! reads (key: the account, result: the balance) interleave; after the load
//! stops and every outbox has drained, one final `balance` read per account
//! (value `"final"`). A transfer's debit and the message carrying its credit
//! are one atomic step of the sender, and the credit applies exactly once,
//! so once everything drained:
//! - the final balances sum to the deposits (a lost or doubled credit
//!   breaks this);
//! - each account's final balance is its deposits, minus the acknowledged
//!   transfers out, plus the acknowledged transfers in, give or take the
//!   transfers whose outcome is unknown (each counts fully or not at all:
//!   the bounds below; nothing that was never attempted can move money);
//! - no balance read, at any time, is negative (a withdrawal that raced a
//!   credit, or a credit undone).

use super::{CheckResult, Validity};
use crate::harness::history::{Call, Outcome, F};
use serde_json::json;
use std::collections::BTreeMap;

/// Checks the bank calls of a history; see the module docs.
pub fn check(calls: &[Call]) -> CheckResult {
    match run(calls) {
        Ok((problems, details)) => {
            let valid = Validity::from_bool(problems.is_empty());
            let summary = match problems.first() {
                Some(p) => format!("{} problems; {p}", problems.len()),
                None => format!(
                    "total {} conserved over {} accounts; {} transfers acknowledged",
                    details["total"].as_str().unwrap_or("?"),
                    details["accounts"],
                    details["transfers_ok"]
                ),
            };
            CheckResult::new("bank", valid, summary, details)
        }
        Err(e) => CheckResult::new("bank", Validity::Invalid, e.clone(), json!({ "error": e })),
    }
}

/// Per account: what the history says moved.
#[derive(Default)]
struct Ledger {
    /// Acknowledged deposits.
    deposits: i128,
    /// Deposits whose outcome is unknown.
    deposits_unknown: i128,
    /// Acknowledged transfers in and out.
    ok_in: i128,
    ok_out: i128,
    /// Transfers in (positive) and out (negative) whose outcome is unknown.
    unknown: Vec<i128>,
    /// The final read, if there was one.
    last: Option<i128>,
}

type Problems = Vec<String>;

fn run(calls: &[Call]) -> Result<(Problems, serde_json::Value), String> {
    let mut ledgers: BTreeMap<&str, Ledger> = BTreeMap::new();
    let mut problems = Vec::new();
    let (mut transfers_ok, mut reads) = (0usize, 0usize);
    let int = |v: &serde_json::Value, c: &Call, what: &str| -> Result<i128, String> {
        v.as_i64()
            .map(i128::from)
            .ok_or_else(|| format!("op #{}: {what} must be an integer, got {v}", c.index))
    };
    for c in calls {
        match c.f {
            F::Deposit => {
                let n = int(&c.value, c, "a deposit")?;
                let l = ledgers.entry(&c.key).or_default();
                match c.outcome {
                    Outcome::Ok => l.deposits += n,
                    Outcome::Fail => {}
                    _ => l.deposits_unknown += n,
                }
            }
            F::Transfer => {
                let to = c.value["to"]
                    .as_str()
                    .ok_or_else(|| format!("op #{}: a transfer needs a \"to\"", c.index))?;
                let n = int(&c.value["amount"], c, "a transfer's amount")?;
                match c.outcome {
                    Outcome::Ok => {
                        transfers_ok += 1;
                        ledgers.entry(&c.key).or_default().ok_out += n;
                        ledgers.entry(to).or_default().ok_in += n;
                    }
                    Outcome::Fail => {}
                    _ => {
                        ledgers.entry(&c.key).or_default().unknown.push(-n);
                        ledgers.entry(to).or_default().unknown.push(n);
                    }
                }
            }
            F::Balance if c.outcome == Outcome::Ok => {
                reads += 1;
                let b = int(&c.result, c, "a balance")?;
                if b < 0 {
                    problems.push(format!(
                        "op #{}: {} read at {b}, below zero",
                        c.index, c.key
                    ));
                }
                if c.value == json!("final") {
                    ledgers.entry(&c.key).or_default().last = Some(b);
                }
            }
            _ => {}
        }
    }
    let deposits: i128 = ledgers.values().map(|l| l.deposits).sum();
    let deposits_unknown: i128 = ledgers.values().map(|l| l.deposits_unknown).sum();
    if deposits_unknown != 0 {
        problems.push(format!(
            "deposits of {deposits_unknown} have an unknown outcome: the total is not known"
        ));
    }
    let mut finals = 0i128;
    let mut accounts = Vec::new();
    for (account, l) in &ledgers {
        let Some(last) = l.last else {
            problems.push(format!("{account} has no final read"));
            continue;
        };
        finals += last;
        let base = l.deposits + l.ok_in - l.ok_out;
        let low = base + l.unknown.iter().filter(|d| **d < 0).sum::<i128>();
        let high = base + l.unknown.iter().filter(|d| **d > 0).sum::<i128>();
        if !reachable(base, &l.unknown, last) {
            problems.push(format!(
                "{account} ends at {last}, which no subset of its {} unknown transfers explains (within [{low}, {high}]; deposits {}, in {}, out {})",
                l.unknown.len(), l.deposits, l.ok_in, l.ok_out
            ));
        }
        accounts.push(json!({
            "account": account, "final": last.to_string(), "low": low.to_string(), "high": high.to_string(),
        }));
    }
    if deposits_unknown == 0
        && finals != deposits
        && problems.iter().all(|p| !p.contains("final read"))
    {
        problems.insert(
            0,
            format!("the final balances sum to {finals}, not the {deposits} deposited"),
        );
    }
    let details = json!({
        "total": deposits.to_string(),
        "final_total": finals.to_string(),
        "accounts": ledgers.len(),
        "transfers_ok": transfers_ok,
        "reads": reads,
        "per_account": accounts,
    });
    Ok((problems, details))
}

/// Whether `base` plus some subset of `unknown` is `target` (each unknown
/// transfer happened fully or not at all). Exact while the reachable sums
/// stay few (amounts are small); past that, only the bounds are checked.
fn reachable(base: i128, unknown: &[i128], target: i128) -> bool {
    const MAX_SUMS: usize = 100_000;
    let mut sums = std::collections::BTreeSet::from([base]);
    for d in unknown {
        let shifted: Vec<i128> = sums.iter().map(|s| s + d).collect();
        sums.extend(shifted);
        if sums.len() > MAX_SUMS {
            let low = base + unknown.iter().filter(|d| **d < 0).sum::<i128>();
            let high = base + unknown.iter().filter(|d| **d > 0).sum::<i128>();
            return (low..=high).contains(&target);
        }
    }
    sums.contains(&target)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::NodeId;
    use serde_json::Value;

    fn call(i: usize, f: F, key: &str, value: Value, outcome: Outcome, result: Value) -> Call {
        Call {
            process: 0,
            f,
            key: key.into(),
            node: NodeId(1),
            value,
            result,
            outcome,
            invoke_ns: i as u64 * 10,
            complete_ns: Some(i as u64 * 10 + 5),
            index: i,
            error: None,
        }
    }

    fn transfer(i: usize, from: &str, to: &str, n: i64, outcome: Outcome) -> Call {
        call(
            i,
            F::Transfer,
            from,
            json!({"to": to, "amount": n}),
            outcome,
            Value::Null,
        )
    }

    fn final_read(i: usize, key: &str, b: i64) -> Call {
        call(i, F::Balance, key, json!("final"), Outcome::Ok, json!(b))
    }

    fn funded() -> Vec<Call> {
        vec![
            call(1, F::Deposit, "a", json!(50), Outcome::Ok, json!(50)),
            call(2, F::Deposit, "b", json!(50), Outcome::Ok, json!(50)),
            transfer(3, "a", "b", 10, Outcome::Ok),
            transfer(4, "b", "a", 5, Outcome::Fail),
            transfer(5, "b", "a", 7, Outcome::Info),
            call(6, F::Balance, "a", Value::Null, Outcome::Ok, json!(40)),
        ]
    }

    #[test]
    fn conserved_balances_within_the_transfers_bounds_pass() {
        for (a, b) in [(40, 60), (47, 53)] {
            let mut h = funded();
            h.push(final_read(7, "a", a));
            h.push(final_read(8, "b", b));
            let r = check(&h);
            assert!(r.is_valid(), "{a}/{b}: {}", r.summary);
        }
    }

    #[test]
    fn a_lost_or_doubled_credit_or_a_negative_read_is_found() {
        // The credit of transfer 3 lost: b is 10 short and the total too.
        let mut lost = funded();
        lost.extend([final_read(7, "a", 40), final_read(8, "b", 50)]);
        let r = check(&lost);
        assert!(!r.is_valid());
        assert!(
            r.summary.contains("sum to 90, not the 100"),
            "{}",
            r.summary
        );
        // Applied twice: b is 10 over.
        let mut twice = funded();
        twice.extend([final_read(7, "a", 40), final_read(8, "b", 70)]);
        let r = check(&twice);
        assert!(
            r.summary
                .contains("2 problems; the final balances sum to 110"),
            "{}",
            r.summary
        );
        let per_account = r.details["per_account"].to_string();
        assert!(per_account.contains(r#""high":"60""#), "{per_account}");
        // The refused transfer 4 applied anyway: conserved, but out of bounds.
        let mut refused = funded();
        refused.extend([final_read(7, "a", 45), final_read(8, "b", 55)]);
        let r = check(&refused);
        assert!(!r.is_valid(), "{}", r.summary);
        // A balance below zero.
        let mut negative = funded();
        negative.push(call(
            7,
            F::Balance,
            "b",
            Value::Null,
            Outcome::Ok,
            json!(-1),
        ));
        negative.extend([final_read(8, "a", 40), final_read(9, "b", 60)]);
        assert!(check(&negative).summary.contains("below zero"));
        // No final read of an account.
        let mut unread = funded();
        unread.push(final_read(7, "a", 40));
        assert!(check(&unread).summary.contains("b has no final read"));
    }
}
