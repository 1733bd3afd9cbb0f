//! What the soak's clients did to each counter, and the cheap correctness
//! check at the end: a counter's final value lies between the adds that
//! were acknowledged and the adds that were attempted (every add is `+1`;
//! an idempotent retry is one add, however often it was sent).

use std::sync::atomic::{AtomicU32, Ordering};

/// Per-key counts of adds, shared by the client threads.
pub struct CounterLedger {
    /// Adds whose answer was 200, by key index.
    acked: Vec<AtomicU32>,
    /// Adds sent at all (acknowledged, refused or unknown), by key index.
    attempted: Vec<AtomicU32>,
}

impl CounterLedger {
    /// A ledger of `keys` counters, all zero.
    pub fn new(keys: usize) -> Self {
        CounterLedger {
            acked: (0..keys).map(|_| AtomicU32::new(0)).collect(),
            attempted: (0..keys).map(|_| AtomicU32::new(0)).collect(),
        }
    }

    /// An add to key `i` is about to be sent (once per idempotency key).
    pub fn attempt(&self, i: usize) {
        self.attempted[i].fetch_add(1, Ordering::Relaxed);
    }

    /// An add to key `i` was acknowledged (once per idempotency key).
    pub fn ack(&self, i: usize) {
        self.acked[i].fetch_add(1, Ordering::Relaxed);
    }

    /// `(acked, attempted)` of key `i`.
    pub fn bounds(&self, i: usize) -> (u32, u32) {
        (
            self.acked[i].load(Ordering::Relaxed),
            self.attempted[i].load(Ordering::Relaxed),
        )
    }

    /// Keys that were added to at least once.
    pub fn touched(&self) -> Vec<usize> {
        (0..self.attempted.len())
            .filter(|&i| self.attempted[i].load(Ordering::Relaxed) > 0)
            .collect()
    }
}

/// Whether a counter read back as `value` after `acked` acknowledged and
/// `attempted` attempted adds of 1 is possible: `Err` says why not.
pub fn check_counter(value: i64, acked: u32, attempted: u32) -> Result<(), String> {
    if value < i64::from(acked) {
        Err(format!(
            "{value} is below the {acked} acknowledged adds: an acknowledged add was lost"
        ))
    } else if value > i64::from(attempted) {
        Err(format!(
            "{value} is above the {attempted} attempted adds: an add applied twice"
        ))
    } else {
        Ok(())
    }
}

/// The outcome of the final counter reads.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CounterCheck {
    /// Counters read back and found within their bounds.
    pub ok: usize,
    /// Counters outside their bounds: `(key, why)`, the first few.
    pub violations: Vec<(String, String)>,
    /// How many counters were outside their bounds in all.
    pub violation_count: usize,
    /// Counters whose final read never got an answer.
    pub unread: usize,
}

/// Violations kept verbatim in a [`CounterCheck`].
const VIOLATIONS_KEPT: usize = 10;

impl CounterCheck {
    /// Adds one key's verdict.
    pub fn record(&mut self, key: &str, verdict: Option<Result<(), String>>) {
        match verdict {
            Some(Ok(())) => self.ok += 1,
            Some(Err(why)) => {
                self.violation_count += 1;
                if self.violations.len() < VIOLATIONS_KEPT {
                    self.violations.push((key.to_string(), why));
                }
            }
            None => self.unread += 1,
        }
    }

    /// Joins another thread's check into this one.
    pub fn merge(&mut self, other: CounterCheck) {
        self.ok += other.ok;
        self.violation_count += other.violation_count;
        self.unread += other.unread;
        for v in other.violations {
            if self.violations.len() < VIOLATIONS_KEPT {
                self.violations.push(v);
            }
        }
    }

    /// Every touched counter was read back and within its bounds.
    pub fn passed(&self) -> bool {
        self.violation_count == 0 && self.unread == 0
    }

    /// One line for the summary.
    pub fn render(&self) -> String {
        let mut s = format!(
            "counter check: {} {} counters within [acknowledged, attempted] adds, {} outside, {} unread",
            if self.passed() { "PASS" } else { "FAIL" },
            self.ok,
            self.violation_count,
            self.unread
        );
        for (key, why) in &self.violations {
            s.push_str(&format!("\n  {key}: {why}"));
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_counter_lies_between_acknowledged_and_attempted_adds() {
        assert!(check_counter(3, 3, 5).is_ok());
        assert!(check_counter(5, 3, 5).is_ok());
        assert!(check_counter(0, 0, 0).is_ok());
        assert!(check_counter(2, 3, 5).unwrap_err().contains("lost"));
        assert!(check_counter(6, 3, 5).unwrap_err().contains("twice"));
    }

    #[test]
    fn the_ledger_counts_per_key_and_the_check_adds_up() {
        let ledger = CounterLedger::new(4);
        ledger.attempt(1);
        ledger.ack(1);
        ledger.attempt(1);
        ledger.attempt(3);
        assert_eq!(ledger.bounds(1), (1, 2));
        assert_eq!(ledger.touched(), [1, 3]);

        let mut a = CounterCheck::default();
        a.record("k1", Some(check_counter(2, 1, 2)));
        a.record("k3", None);
        assert!(!a.passed(), "an unread counter is not a pass");
        let mut b = CounterCheck::default();
        b.record("k9", Some(check_counter(9, 1, 2)));
        a.merge(b);
        assert_eq!((a.ok, a.violation_count, a.unread), (1, 1, 1));
        assert!(a.render().contains("k9: 9 is above"), "{}", a.render());
        let mut clean = CounterCheck::default();
        clean.record("k1", Some(Ok(())));
        assert!(clean.passed());
        assert!(clean.render().starts_with("counter check: PASS 1"));
    }
}
