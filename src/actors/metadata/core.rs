//! The CASPaxos acceptor, without I/O: [`AcceptorCore`] and the register's
//! value types.
//!
//! CASPaxos (Denis Rystsov, "CASPaxos: Replicated State Machines without
//! logs", 2018, arXiv:1802.07000) replicates one register per key. A proposer
//! picks a ballot, gathers promises from a majority (phase 1), applies its
//! change function to the value with the highest accepted ballot, and has a
//! majority accept the result (phase 2). Every operation, reads included, runs
//! both phases, which makes reads linearizable without leases or clocks. The
//! proposer's rules are in `proposer.rs`.
//!
//! The acceptor's rules, all in this file:
//! - **promise**: a prepare is promised only above every ballot promised
//!   before (and then reports the value accepted under the highest ballot);
//!   anything else is refused with the ballot promised;
//! - **accept**: a value is accepted at or above the promise, which rises to
//!   its ballot; below it, refused;
//! - **what is persisted before a reply**: a promise or an acceptance is
//!   written to the [`AcceptorStore`] and answered only after the host synced
//!   [`Lane::State`] (`RespondAfterSync`); refusals change nothing and are
//!   answered at once. A repeated acceptance (same ballot) is synced again
//!   too: its first answer may still be waiting for the sync, and the repeat
//!   must not overtake it (a repeated prepare is a refusal: it promises
//!   nothing);
//! - **what is refused**: empty or over-long keys, ballots above
//!   [`Ballot::MAX_ROUND`], values over [`MAX_VALUE_LEN`] or not of their
//!   key's type (`schema`);
//! - **rejoining**: an acceptor that lost its disk refuses every prepare
//!   and accept ([`AcceptorError::Rejoining`]) until its host lets it vote
//!   ([`AcceptorCore::set_voting`], after `rejoin.rs` says it is safe);
//! - **storage**: state is read from the store on a key's first use; a read
//!   or write error is answered as [`AcceptorError::Storage`] (never taken as
//!   "no state"), and a failed write leaves the key's state as it was.

use super::messages::{
    Accept, AcceptorError, AcceptorRequest, AcceptorResponse, Prepare, MAX_KEY_LEN, MAX_VALUE_LEN,
};
use super::schema;
use crate::actors::env::Env;
use crate::sim::disk::Lane;
use crate::storage::StorageError;
use crate::types::NodeId;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::Instant;

/// A proposal number: rounds are compared first, node ids break ties, so two
/// proposers never share a ballot.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct Ballot {
    /// The proposer's attempt counter (raised past every round it saw refused).
    pub round: u64,
    /// The proposer's node id: breaks ties between equal rounds.
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
    /// Raised by one by every compare-and-set that applies.
    pub version: u64,
    /// The bytes the register holds (typed for `chain/` and `leader/` keys).
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
    /// The highest ballot promised (or accepted): nothing below it is taken.
    pub promised: Ballot,
    /// The ballot `value` was accepted under.
    pub accepted: Ballot,
    /// The last value accepted (`None`: never).
    pub value: Option<Versioned>,
}

/// An acceptor's answer to a [`Prepare`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum PrepareReply {
    /// Promised: here is what was accepted, and under which ballot.
    Promise {
        accepted: Ballot,
        value: Option<Versioned>,
    },
    /// A higher ballot was promised already.
    Reject { promised: Ballot },
}

/// An acceptor's answer to an [`Accept`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum AcceptReply {
    Accepted,
    /// A higher ballot was promised already.
    Reject {
        promised: Ballot,
    },
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

/// Where an acceptor keeps its per-key state: synchronous reads, buffered
/// writes that are durable once the host synced [`Lane::State`]. The node's
/// is [`MetaStore`](crate::storage::MetaStore) (sled, checksummed values);
/// the simulator's is `sim::store_meta::SimAcceptorStore`.
pub trait AcceptorStore {
    /// The state stored for `key`; `None` if there is none. A stored value
    /// that fails its checksum or does not decode is an error, never `None`.
    fn get(&self, key: &str) -> Result<Option<AcceptorState>, StorageError>;
    /// Writes `key`'s state: visible to `get` at once, durable after the next
    /// sync of [`Lane::State`].
    fn put(&mut self, key: &str, state: &AcceptorState) -> Result<(), StorageError>;
    /// Every key with state, in order (a rejoining peer asks for them).
    fn keys(&self) -> Result<Vec<String>, StorageError>;
}

/// What an acceptor is told. `T` is the host's token for a request, handed
/// back with its answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AcceptorInput<T> {
    /// A proposer's request. `from` is the node it came from (the rules do
    /// not depend on it; it is there for tracing and for the simulator).
    Request {
        from: NodeId,
        token: T,
        req: AcceptorRequest,
    },
}

/// What an acceptor asks its host to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AcceptorEffect<T> {
    /// Send `resp` now: it depends on nothing unsynced.
    Respond { token: T, resp: AcceptorResponse },
    /// Sync `lane` (always [`Lane::State`] here), then send `resp`. If the
    /// sync fails, send `AcceptorError::Storage` instead: the answer must
    /// never reach a proposer before what it promises is durable.
    RespondAfterSync {
        lane: Lane,
        token: T,
        resp: AcceptorResponse,
    },
}

/// One node's CASPaxos acceptor over its store.
pub struct AcceptorCore<S: AcceptorStore> {
    /// Where the state is persisted.
    store: S,
    /// Each key's state, read from `store` on first use and written through.
    state: BTreeMap<String, AcceptorState>,
    /// False while rejoining after a lost disk: it forgot what it promised,
    /// so it must not vote (see `rejoin.rs`).
    voting: bool,
}

impl<S: AcceptorStore> AcceptorCore<S> {
    pub fn new(store: S) -> Self {
        AcceptorCore {
            store,
            state: BTreeMap::new(),
            voting: true,
        }
    }

    /// Lets the acceptor vote, or stops it (a rejoin starts not voting).
    pub fn set_voting(&mut self, voting: bool) {
        self.voting = voting;
    }

    /// Whether it votes.
    pub fn voting(&self) -> bool {
        self.voting
    }

    /// The one entry point: a request in, exactly one answer out.
    pub fn handle<T>(&mut self, _env: &Env, input: AcceptorInput<T>) -> Vec<AcceptorEffect<T>> {
        let AcceptorInput::Request { token, req, .. } = input;
        let (resp, changed) = match req {
            AcceptorRequest::Prepare(_) if !self.voting => (
                AcceptorResponse::Prepare(Err(AcceptorError::Rejoining)),
                false,
            ),
            AcceptorRequest::Accept(_) if !self.voting => (
                AcceptorResponse::Accept(Err(AcceptorError::Rejoining)),
                false,
            ),
            AcceptorRequest::Prepare(p) => {
                let (r, changed) = self.prepare(p);
                (AcceptorResponse::Prepare(r), changed)
            }
            AcceptorRequest::Accept(a) => {
                let (r, changed) = self.accept(a);
                (AcceptorResponse::Accept(r), changed)
            }
        };
        vec![if changed {
            AcceptorEffect::RespondAfterSync {
                lane: Lane::State,
                token,
                resp,
            }
        } else {
            AcceptorEffect::Respond { token, resp }
        }]
    }

    /// The keys this acceptor holds state for, each with the version of the
    /// value it accepted last (0: none), for a rejoining peer. Refused while
    /// this acceptor does not vote: it may have forgotten keys, and a rejoin
    /// must learn every key from acceptors that did not.
    pub fn list_keys(&self) -> Result<Vec<(String, u64)>, AcceptorError> {
        if !self.voting {
            return Err(AcceptorError::Rejoining);
        }
        let storage = |e: StorageError| AcceptorError::Storage(e.to_string());
        let mut out = Vec::new();
        for key in self.store.keys().map_err(storage)? {
            let state = self.store.get(&key).map_err(storage)?;
            let version = state.and_then(|s| s.value).map_or(0, |v| v.version);
            out.push((key, version));
        }
        Ok(out)
    }

    /// An acceptor never needs a timer.
    pub fn next_wake(&self) -> Option<Instant> {
        None
    }

    /// The store (the simulator and tests look into it).
    pub fn store(&self) -> &S {
        &self.store
    }

    fn prepare(&mut self, p: Prepare) -> (Result<PrepareReply, AcceptorError>, bool) {
        self.apply(&p.key, p.ballot, |state| state.prepare(p.ballot))
    }

    fn accept(&mut self, a: Accept) -> (Result<AcceptReply, AcceptorError>, bool) {
        if a.value.value.len() > MAX_VALUE_LEN {
            return (Err(AcceptorError::TooLarge(a.value.value.len())), false);
        }
        if let Err(why) = schema::check(&a.key, &a.value.value) {
            return (Err(AcceptorError::BadValue(why)), false);
        }
        let Accept { key, ballot, value } = a;
        self.apply(&key, ballot, |state| state.accept(ballot, value))
    }

    /// Runs one phase on `key`'s state; a changed state is written to the
    /// store (and restored if that fails). Returns the reply and whether it
    /// must wait for a sync.
    fn apply<R>(
        &mut self,
        key: &str,
        ballot: Ballot,
        phase: impl FnOnce(&mut AcceptorState) -> (R, bool),
    ) -> (Result<R, AcceptorError>, bool) {
        if let Err(e) = self.load(key, ballot) {
            return (Err(e), false);
        }
        let Some(state) = self.state.get_mut(key) else {
            let e = AcceptorError::Storage("acceptor state vanished".into());
            return (Err(e), false);
        };
        let before = state.clone();
        let (reply, changed) = phase(state);
        if changed {
            if let Err(e) = self.store.put(key, state) {
                *state = before;
                return (Err(AcceptorError::Storage(e.to_string())), false);
            }
        }
        (Ok(reply), changed)
    }

    /// Checks `key` and `ballot`, and reads `key`'s state on first use.
    fn load(&mut self, key: &str, ballot: Ballot) -> Result<(), AcceptorError> {
        if key.is_empty() || key.len() > MAX_KEY_LEN {
            return Err(AcceptorError::BadKey);
        }
        if ballot.round > Ballot::MAX_ROUND {
            return Err(AcceptorError::BadBallot(ballot.round));
        }
        if !self.state.contains_key(key) {
            let loaded = self
                .store
                .get(key)
                .map_err(|e| AcceptorError::Storage(e.to_string()))?
                .unwrap_or_default();
            self.state.insert(key.to_string(), loaded);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(round: u64, node: u32) -> Ballot {
        Ballot { round, node }
    }

    fn v(version: u64, value: &[u8]) -> Versioned {
        Versioned {
            version,
            value: value.to_vec(),
            writer: 1,
        }
    }

    /// An in-memory store that can be told to fail.
    #[derive(Default)]
    struct Mem {
        map: BTreeMap<String, AcceptorState>,
        fail_get: bool,
        fail_put: bool,
    }

    impl AcceptorStore for Mem {
        fn get(&self, key: &str) -> Result<Option<AcceptorState>, StorageError> {
            if self.fail_get {
                return Err(StorageError::Io("disk gone".into()));
            }
            Ok(self.map.get(key).cloned())
        }
        fn put(&mut self, key: &str, state: &AcceptorState) -> Result<(), StorageError> {
            if self.fail_put {
                return Err(StorageError::Io("disk full".into()));
            }
            self.map.insert(key.to_string(), state.clone());
            Ok(())
        }
        fn keys(&self) -> Result<Vec<String>, StorageError> {
            Ok(self.map.keys().cloned().collect())
        }
    }

    fn env() -> Env {
        Env {
            now: Instant::now(),
            me: NodeId(1),
            nodes: vec![NodeId(1), NodeId(2), NodeId(3)],
            suspected: Default::default(),
        }
    }

    fn prepare(key: &str, ballot: Ballot) -> AcceptorInput<u32> {
        AcceptorInput::Request {
            from: NodeId(2),
            token: 7,
            req: AcceptorRequest::Prepare(Prepare {
                key: key.into(),
                ballot,
            }),
        }
    }

    fn accept(key: &str, ballot: Ballot, value: Versioned) -> AcceptorInput<u32> {
        AcceptorInput::Request {
            from: NodeId(2),
            token: 8,
            req: AcceptorRequest::Accept(Accept {
                key: key.into(),
                ballot,
                value,
            }),
        }
    }

    fn respond(token: u32, resp: AcceptorResponse) -> Vec<AcceptorEffect<u32>> {
        vec![AcceptorEffect::Respond { token, resp }]
    }

    #[test]
    fn a_rejoining_acceptor_refuses_both_phases_and_changes_nothing() {
        let mut a = AcceptorCore::new(Mem::default());
        a.set_voting(false);
        assert!(!a.voting());
        assert_eq!(
            a.handle(&env(), prepare("k", b(1, 2))),
            respond(7, AcceptorResponse::Prepare(Err(AcceptorError::Rejoining)))
        );
        assert_eq!(
            a.handle(&env(), accept("k", b(1, 2), v(1, b"x"))),
            respond(8, AcceptorResponse::Accept(Err(AcceptorError::Rejoining)))
        );
        assert!(a.store().map.is_empty(), "nothing stored");
        a.set_voting(true);
        assert!(matches!(
            &a.handle(&env(), prepare("k", b(1, 2)))[..],
            [AcceptorEffect::RespondAfterSync { .. }]
        ));
    }

    fn after_sync(token: u32, resp: AcceptorResponse) -> Vec<AcceptorEffect<u32>> {
        vec![AcceptorEffect::RespondAfterSync {
            lane: Lane::State,
            token,
            resp,
        }]
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
        let v = v(1, b"x");
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

    #[test]
    fn a_promise_is_persisted_and_answered_after_a_sync() {
        let mut core = AcceptorCore::new(Mem::default());
        let effects = core.handle(&env(), prepare("k", b(3, 2)));
        assert_eq!(
            effects,
            after_sync(
                7,
                AcceptorResponse::Prepare(Ok(PrepareReply::Promise {
                    accepted: Ballot::ZERO,
                    value: None
                }))
            )
        );
        assert_eq!(core.store().map["k"].promised, b(3, 2), "written first");
    }

    #[test]
    fn a_refusal_is_answered_at_once_and_changes_nothing() {
        let mut core = AcceptorCore::new(Mem::default());
        core.handle(&env(), prepare("k", b(3, 2)));
        let stored = core.store().map.clone();
        let reject = PrepareReply::Reject { promised: b(3, 2) };
        assert_eq!(
            core.handle(&env(), prepare("k", b(3, 1))),
            respond(7, AcceptorResponse::Prepare(Ok(reject)))
        );
        assert_eq!(
            core.handle(&env(), accept("k", b(2, 9), v(1, b"x"))),
            respond(
                8,
                AcceptorResponse::Accept(Ok(AcceptReply::Reject { promised: b(3, 2) }))
            )
        );
        assert_eq!(core.store().map, stored);
    }

    #[test]
    fn an_acceptance_is_persisted_and_answered_after_a_sync() {
        let mut core = AcceptorCore::new(Mem::default());
        core.handle(&env(), prepare("k", b(3, 2)));
        assert_eq!(
            core.handle(&env(), accept("k", b(3, 2), v(1, b"x"))),
            after_sync(8, AcceptorResponse::Accept(Ok(AcceptReply::Accepted)))
        );
        let stored = &core.store().map["k"];
        assert_eq!(
            (stored.accepted, stored.value.clone()),
            (b(3, 2), Some(v(1, b"x")))
        );
        // An accept above the promise raises it.
        core.handle(&env(), accept("k", b(5, 1), v(2, b"y")));
        assert_eq!(core.store().map["k"].promised, b(5, 1));
        let reject = PrepareReply::Reject { promised: b(5, 1) };
        assert_eq!(
            core.handle(&env(), prepare("k", b(4, 3))),
            respond(7, AcceptorResponse::Prepare(Ok(reject)))
        );
    }

    #[test]
    fn a_repeated_acceptance_waits_for_a_sync_again() {
        // The first answer may still be waiting for its sync: the repeat
        // (a duplicated message) must not be answered before it.
        let mut core = AcceptorCore::new(Mem::default());
        let first = core.handle(&env(), accept("k", b(1, 2), v(1, b"x")));
        let again = core.handle(&env(), accept("k", b(1, 2), v(1, b"x")));
        assert_eq!(first, again);
        assert!(matches!(
            again[..],
            [AcceptorEffect::RespondAfterSync { .. }]
        ));
    }

    #[test]
    fn state_is_read_from_the_store_on_first_use() {
        let mut mem = Mem::default();
        mem.map.insert(
            "k".into(),
            AcceptorState {
                promised: b(9, 3),
                accepted: b(8, 3),
                value: Some(v(4, b"kept")),
            },
        );
        let mut core = AcceptorCore::new(mem);
        let reject = PrepareReply::Reject { promised: b(9, 3) };
        assert_eq!(
            core.handle(&env(), prepare("k", b(9, 2))),
            respond(7, AcceptorResponse::Prepare(Ok(reject)))
        );
        assert_eq!(
            core.handle(&env(), prepare("k", b(10, 1))),
            after_sync(
                7,
                AcceptorResponse::Prepare(Ok(PrepareReply::Promise {
                    accepted: b(8, 3),
                    value: Some(v(4, b"kept")),
                }))
            )
        );
    }

    #[test]
    fn bad_keys_ballots_and_values_are_refused_and_hold_nothing() {
        let mut core = AcceptorCore::new(Mem::default());
        let long = "k".repeat(MAX_KEY_LEN + 1);
        for key in ["", long.as_str()] {
            assert_eq!(
                core.handle(&env(), prepare(key, b(1, 1))),
                respond(7, AcceptorResponse::Prepare(Err(AcceptorError::BadKey)))
            );
        }
        let high = Ballot::MAX_ROUND + 1;
        assert_eq!(
            core.handle(&env(), prepare("k", b(high, 1))),
            respond(
                7,
                AcceptorResponse::Prepare(Err(AcceptorError::BadBallot(high)))
            )
        );
        let huge = Versioned {
            version: 1,
            value: vec![0; MAX_VALUE_LEN + 1],
            writer: 1,
        };
        assert_eq!(
            core.handle(&env(), accept("k", b(1, 1), huge)),
            respond(
                8,
                AcceptorResponse::Accept(Err(AcceptorError::TooLarge(MAX_VALUE_LEN + 1)))
            )
        );
        let effects = core.handle(&env(), accept("chain/1", b(1, 1), v(1, b"\xc1")));
        assert!(matches!(
            &effects[..],
            [AcceptorEffect::Respond {
                resp: AcceptorResponse::Accept(Err(AcceptorError::BadValue(_))),
                ..
            }]
        ));
        assert!(core.store().map.is_empty());
        assert!(core.state.is_empty(), "refused keys are not even cached");
    }

    #[test]
    fn storage_errors_are_answered_never_taken_as_absence() {
        let mut core = AcceptorCore::new(Mem {
            fail_get: true,
            ..Mem::default()
        });
        assert!(matches!(
            &core.handle(&env(), prepare("k", b(1, 1)))[..],
            [AcceptorEffect::Respond {
                resp: AcceptorResponse::Prepare(Err(AcceptorError::Storage(_))),
                ..
            }]
        ));
        // A failed write is an error and leaves the state as it was.
        let mut core = AcceptorCore::new(Mem::default());
        core.handle(&env(), prepare("k", b(1, 1)));
        core.store.fail_put = true;
        assert!(matches!(
            &core.handle(&env(), prepare("k", b(2, 1)))[..],
            [AcceptorEffect::Respond {
                resp: AcceptorResponse::Prepare(Err(AcceptorError::Storage(_))),
                ..
            }]
        ));
        core.store.fail_put = false;
        let reject = PrepareReply::Reject { promised: b(1, 1) };
        assert_eq!(
            core.handle(&env(), prepare("k", b(1, 1))),
            respond(7, AcceptorResponse::Prepare(Ok(reject))),
            "the failed promise was not kept in memory"
        );
        assert!(matches!(
            &core.handle(&env(), prepare("k", b(2, 1)))[..],
            [AcceptorEffect::RespondAfterSync { .. }]
        ));
    }
}
