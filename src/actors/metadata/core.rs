//! The CASPaxos acceptor, without I/O (the proposer's rules are in
//! `proposer.rs`).
//!
//! CASPaxos (Denis Rystsov, "CASPaxos: Replicated State Machines without
//! logs", 2018, arXiv:1802.07000) replicates one register per key. A proposer
//! picks a ballot, gathers promises from a majority (phase 1), applies its
//! change function to the value with the highest accepted ballot, and has a
//! majority accept the result (phase 2). Every operation, reads included, runs
//! both phases, which makes reads linearizable without leases or clocks.
//!
//! Acceptor state must be durable before any reply that depends on it; the
//! actor around this core enforces that with the node's group commit.

use crate::types::NodeId;
use serde::{Deserialize, Serialize};

/// A proposal number: rounds are compared first, node ids break ties, so two
/// proposers never share a ballot.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct Ballot {
    pub round: u64,
    pub node: u32,
}

impl Ballot {
    pub const ZERO: Ballot = Ballot { round: 0, node: 0 };
    /// The highest round an acceptor takes. Proposers add one per attempt,
    /// so an honest round never gets near it; a round beyond it (a flipped
    /// bit, a hostile peer) would lock every proposer out of the key for
    /// good, and `round + 1` would overflow.
    pub const MAX_ROUND: u64 = u64::MAX >> 2;
    pub fn new(round: u64, node: NodeId) -> Self {
        Ballot {
            round,
            node: node.0,
        }
    }
}

/// A register value with its version; version 0 means "never written".
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Versioned {
    pub version: u64,
    #[serde(with = "serde_bytes")]
    pub value: Vec<u8>,
    /// The compare-and-set operation that wrote this version. A proposer whose
    /// accept reached only a minority retries under a higher ballot; if the
    /// retry finds its own write (now chosen), it must report success, not a
    /// conflict, or a read-modify-CAS client would apply its change twice.
    #[serde(default)]
    pub writer: u64,
}

/// What an acceptor keeps per key.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AcceptorState {
    pub promised: Ballot,
    pub accepted: Ballot,
    pub value: Option<Versioned>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum PrepareReply {
    Promise {
        accepted: Ballot,
        value: Option<Versioned>,
    },
    /// A higher ballot was promised already.
    Reject { promised: Ballot },
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum AcceptReply {
    Accepted,
    Reject { promised: Ballot },
}

impl AcceptorState {
    /// Phase 1. Returns the reply and whether the state changed (and must be
    /// persisted before the reply is sent).
    pub fn prepare(&mut self, ballot: Ballot) -> (PrepareReply, bool) {
        if ballot > self.promised {
            self.promised = ballot;
            (
                PrepareReply::Promise {
                    accepted: self.accepted,
                    value: self.value.clone(),
                },
                true,
            )
        } else {
            (
                PrepareReply::Reject {
                    promised: self.promised,
                },
                false,
            )
        }
    }

    /// Phase 2.
    pub fn accept(&mut self, ballot: Ballot, value: Versioned) -> (AcceptReply, bool) {
        if ballot >= self.promised {
            self.promised = ballot;
            self.accepted = ballot;
            self.value = Some(value);
            (AcceptReply::Accepted, true)
        } else {
            (
                AcceptReply::Reject {
                    promised: self.promised,
                },
                false,
            )
        }
    }
}

pub use crate::actors::quorum::majority;

#[cfg(test)]
mod tests {
    use super::*;

    fn b(round: u64, node: u32) -> Ballot {
        Ballot { round, node }
    }

    #[test]
    fn acceptor_promises_only_higher_ballots() {
        let mut a = AcceptorState::default();
        assert!(matches!(a.prepare(b(1, 1)).0, PrepareReply::Promise { .. }));
        assert_eq!(
            a.prepare(b(1, 1)).0,
            PrepareReply::Reject { promised: b(1, 1) }
        );
        assert_eq!(
            a.prepare(b(0, 3)).0,
            PrepareReply::Reject { promised: b(1, 1) }
        );
        assert!(matches!(a.prepare(b(1, 2)).0, PrepareReply::Promise { .. }));
    }

    #[test]
    fn acceptor_refuses_accept_below_promise_and_reports_accepted_value() {
        let mut a = AcceptorState::default();
        a.prepare(b(5, 1));
        let v = Versioned {
            version: 1,
            value: b"x".to_vec(),
            writer: 1,
        };
        assert_eq!(
            a.accept(b(4, 9), v.clone()).0,
            AcceptReply::Reject { promised: b(5, 1) }
        );
        assert_eq!(a.accept(b(5, 1), v.clone()).0, AcceptReply::Accepted);
        match a.prepare(b(6, 2)).0 {
            PrepareReply::Promise { accepted, value } => {
                assert_eq!(accepted, b(5, 1));
                assert_eq!(value, Some(v));
            }
            other => panic!("unexpected {other:?}"),
        }
    }
}
