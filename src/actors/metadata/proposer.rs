//! The CASPaxos proposer's decision rules, without I/O: the change a
//! proposer applies to the current value, and which value is current after
//! phase 1. The acceptor is in `core.rs`.

use super::core::Ballot;
use super::core::Versioned;

/// The change a proposer applies to the current value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    /// Identity: a linearizable read.
    Read,
    /// Write `value` as version `expected + 1` if the current version is
    /// `expected`. `op` identifies this operation across retries.
    Cas {
        expected: u64,
        value: Vec<u8>,
        op: u64,
    },
}

/// The outcome of applying a change to the current value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The (possibly new) current value; `None` if never written.
    Value(Option<Versioned>),
    /// The CAS did not apply: the register holds `current`.
    Conflict(Option<Versioned>),
}

impl Change {
    /// Returns the value to write back in phase 2 and the outcome to report if
    /// phase 2 succeeds. A failed CAS writes back the current value unchanged,
    /// so the outcome it reports is linearizable too.
    pub fn apply(&self, current: Option<Versioned>) -> (Option<Versioned>, Outcome) {
        match self {
            Change::Read => (current.clone(), Outcome::Value(current)),
            Change::Cas {
                expected,
                value,
                op,
            } => {
                let version = current.as_ref().map(|v| v.version).unwrap_or(0);
                // Versions come from acceptors (a peer may have accepted any
                // value): a register at `u64::MAX` has no next version, so a
                // CAS on it is a conflict, never an overflow.
                let next_version = version.checked_add(1);
                if version == *expected && next_version.is_some() {
                    let next = next_version.map(|version| Versioned {
                        version,
                        value: value.clone(),
                        writer: *op,
                    });
                    (next.clone(), Outcome::Value(next))
                } else if Some(version) == expected.checked_add(1)
                    && current.as_ref().is_some_and(|c| c.writer == *op)
                {
                    // An earlier attempt of this very operation was chosen.
                    (current.clone(), Outcome::Value(current))
                } else {
                    (current.clone(), Outcome::Conflict(current))
                }
            }
        }
    }
}

/// Phase 1 decision: the value accepted under the highest ballot among the
/// promises of a majority is the register's current value.
pub fn current_value<'a>(
    promises: impl IntoIterator<Item = (&'a Ballot, &'a Option<Versioned>)>,
) -> Option<Versioned> {
    promises
        .into_iter()
        .max_by_key(|(ballot, _)| **ballot)
        .and_then(|(_, v)| v.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(round: u64, node: u32) -> Ballot {
        Ballot { round, node }
    }

    #[test]
    fn cas_applies_only_on_matching_version() {
        let cur = Some(Versioned {
            version: 3,
            value: b"a".to_vec(),
            writer: 9,
        });
        let (next, out) = Change::Cas {
            expected: 3,
            value: b"b".to_vec(),
            op: 7,
        }
        .apply(cur.clone());
        assert_eq!(next.as_ref().unwrap().version, 4);
        assert_eq!(out, Outcome::Value(next));
        let (next, out) = Change::Cas {
            expected: 2,
            value: b"b".to_vec(),
            op: 7,
        }
        .apply(cur.clone());
        assert_eq!(next, cur);
        assert_eq!(out, Outcome::Conflict(cur));
        let (next, _) = Change::Cas {
            expected: 0,
            value: b"first".to_vec(),
            op: 7,
        }
        .apply(None);
        assert_eq!(next.unwrap().version, 1);
    }

    #[test]
    fn a_cas_at_the_last_version_is_a_conflict_not_an_overflow() {
        let cur = Some(Versioned {
            version: u64::MAX,
            value: b"a".to_vec(),
            writer: 9,
        });
        for expected in [u64::MAX, u64::MAX - 1, 0] {
            let (next, out) = Change::Cas {
                expected,
                value: b"b".to_vec(),
                op: 7,
            }
            .apply(cur.clone());
            assert_eq!(next, cur);
            assert_eq!(out, Outcome::Conflict(cur.clone()), "expected {expected}");
        }
    }

    #[test]
    fn a_retried_cas_that_finds_its_own_write_succeeds() {
        let mine = Change::Cas {
            expected: 3,
            value: b"b".to_vec(),
            op: 42,
        };
        let (written, _) = mine.apply(Some(Versioned {
            version: 3,
            value: b"a".to_vec(),
            writer: 1,
        }));
        // The first attempt's accept reached a minority, a retry's prepare
        // finds it as the highest accepted value.
        let (next, outcome) = mine.apply(written.clone());
        assert_eq!(next, written);
        assert_eq!(outcome, Outcome::Value(written.clone()));
        // Someone else's identical-looking write is still a conflict.
        let theirs = Some(Versioned {
            writer: 43,
            ..written.clone().unwrap()
        });
        assert_eq!(mine.apply(theirs.clone()).1, Outcome::Conflict(theirs));
    }

    #[test]
    fn current_value_is_the_one_with_the_highest_accepted_ballot() {
        let old = Some(Versioned {
            version: 1,
            value: b"old".to_vec(),
            writer: 1,
        });
        let new = Some(Versioned {
            version: 2,
            value: b"new".to_vec(),
            writer: 2,
        });
        let promises = [(b(2, 1), old), (b(3, 2), new.clone()), (Ballot::ZERO, None)];
        assert_eq!(current_value(promises.iter().map(|(b, v)| (b, v))), new);
    }
}
