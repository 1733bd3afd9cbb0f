//! Rejoining the metadata register after a lost disk, without I/O.
//!
//! An acceptor whose disk was replaced forgot every promise and acceptance.
//! Voting at once would be unsafe: a value chosen by {this node, X} is then
//! invisible to a proposer whose quorum is {this node, Y}, which can choose a
//! second value for the same version (`tests::voting_at_once_after_a_wipe_
//! chooses_a_second_value` shows it). So a rejoining acceptor refuses every
//! prepare and accept ([`AcceptorError::Rejoining`](super::messages::AcceptorError))
//! until [`RejoinCore`] says it may vote:
//!
//! 1. **List**: ask every other node which register keys its acceptor holds
//!    state for, until a majority of the cluster, counted among the *other*
//!    nodes, answered; take the union. Any proposer quorum that included this
//!    node before the wipe holds at least `⌊n/2⌋` other nodes, and every such
//!    set meets every `⌊n/2⌋ + 1` others: every key this node may have
//!    promised or accepted anything for is listed.
//! 2. **Read**: a linearizable read of each listed key through this node's
//!    proposer. This node's acceptor refuses, so every quorum of the read is
//!    made of other nodes; the read writes the current value back under a
//!    fresh ballot (or, for a key never written, has a majority of others
//!    promise it). Afterwards whatever was chosen is held by a majority that
//!    does not need this node, and that majority promised a ballot above any
//!    this node promised and forgot, so no proposer holding such a forgotten
//!    promise can still gather a majority of accepts.
//!    The read is not needed for a key whose chosen version passed the
//!    highest version any listing reported for it (the host feeds
//!    [`RejoinInput::Chosen`] from its metadata cache): that value was
//!    accepted after the listing, so by a majority of others only, and
//!    under a ballot above every promise this node forgot (each such
//!    promise went to a prepare whose quorum includes one of those others,
//!    which promised it before accepting the newer value). This is what
//!    the read's write-back achieves, done by another proposer; it keeps a
//!    rejoin from starving on a busy key, where a read that needs every
//!    other acceptor keeps losing ballots to proposers that need one less.
//! 3. **Vote**: the acceptor, still empty, votes again. Being empty is then
//!    no different from having missed those rounds.
//!
//! A key created after the listing never had state on this node. Every step
//! is retried after [`RETRY_PAUSE`] until it succeeds; the host persists the
//! "rejoining" mark so a crash during a rejoin resumes it, and shows
//! [`RejoinCore::status`].

use crate::actors::env::Env;
use crate::actors::quorum::majority;
use crate::types::NodeId;
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

/// How long after a failed list or read it is tried again.
pub const RETRY_PAUSE: Duration = Duration::from_millis(500);
/// How many key reads run at once.
pub const READS_IN_FLIGHT: usize = 8;

/// What the rejoin learns.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RejoinInput {
    /// Node `from` listed the keys its acceptor holds state for, each with
    /// the version it accepted last, or could not (why).
    Listed {
        from: NodeId,
        result: Result<Vec<(String, u64)>, String>,
    },
    /// `key` is known chosen at `version` (the host's metadata cache).
    Chosen { key: String, version: u64 },
    /// The read of `key` through this node's proposer ended.
    Read {
        key: String,
        result: Result<(), String>,
    },
    /// Time passed (see [`RejoinCore::next_wake`]).
    Tick,
}

/// What the rejoin asks its host to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RejoinEffect {
    /// Ask `to` for its acceptor's keys; answer with one `Listed`.
    List { to: NodeId },
    /// Read `key` linearizably through this node's proposer; answer with
    /// one `Read`.
    Read { key: String },
    /// Safe: let the acceptor vote (and clear the persisted mark).
    Vote,
}

/// Where a rejoin stands, for status.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RejoinStatus {
    /// Listing keys: answers so far of the needed.
    Listing { answered: usize, needed: usize },
    /// Reading keys: done of total.
    Reading { done: usize, total: usize },
    /// Voting again.
    Done,
}

/// One node's rejoin of the register.
#[derive(Clone, Debug)]
pub struct RejoinCore {
    /// Other nodes that listed their keys.
    answered: BTreeSet<NodeId>,
    /// Other nodes asked and not answered yet.
    asking: BTreeSet<NodeId>,
    /// Other nodes to ask again, and when.
    ask_again: BTreeMap<NodeId, Instant>,
    /// The union of the keys listed, each with the highest version listed.
    keys: BTreeMap<String, u64>,
    /// Keys not read yet (listing over), with when each may next be tried.
    to_read: BTreeMap<String, Option<Instant>>,
    /// Keys being read.
    reading: BTreeSet<String>,
    /// Keys read.
    read: usize,
    /// The listing is over (a majority of the others answered).
    listed: bool,
    /// `Vote` was emitted.
    done: bool,
}

impl Default for RejoinCore {
    fn default() -> Self {
        Self::new()
    }
}

impl RejoinCore {
    pub fn new() -> Self {
        RejoinCore {
            answered: BTreeSet::new(),
            asking: BTreeSet::new(),
            ask_again: BTreeMap::new(),
            keys: BTreeMap::new(),
            to_read: BTreeMap::new(),
            reading: BTreeSet::new(),
            read: 0,
            listed: false,
            done: false,
        }
    }

    /// Answers needed from other nodes: a majority of the whole cluster.
    fn needed(env: &Env) -> usize {
        majority(env.nodes.len())
    }

    /// The one entry point (the first input is a `Tick`).
    pub fn handle(&mut self, env: &Env, input: RejoinInput) -> Vec<RejoinEffect> {
        let mut out = Vec::new();
        if self.done {
            return out;
        }
        match input {
            RejoinInput::Listed { from, result } => {
                if self.asking.remove(&from) && !self.listed {
                    match result {
                        Ok(keys) => {
                            self.answered.insert(from);
                            for (key, version) in keys {
                                let v = self.keys.entry(key).or_default();
                                *v = (*v).max(version);
                            }
                        }
                        Err(why) => {
                            tracing::debug!(%from, "listing register keys failed: {why}");
                            self.ask_again.insert(from, env.now + RETRY_PAUSE);
                        }
                    }
                }
            }
            RejoinInput::Read { key, result } => {
                if self.reading.remove(&key) {
                    match result {
                        Ok(()) => self.read += 1,
                        Err(why) => {
                            tracing::debug!(%key, "rejoin read failed: {why}");
                            self.to_read.insert(key, Some(env.now + RETRY_PAUSE));
                        }
                    }
                }
            }
            RejoinInput::Chosen { key, version } => {
                let passed = self.keys.get(&key).is_some_and(|listed| version > *listed);
                if self.listed && passed {
                    let pending = self.to_read.remove(&key).is_some();
                    if pending || self.reading.remove(&key) {
                        tracing::debug!(%key, version, "chosen past the listing: no read needed");
                        self.read += 1;
                    }
                }
            }
            RejoinInput::Tick => {}
        }
        self.step(env, &mut out);
        out
    }

    fn step(&mut self, env: &Env, out: &mut Vec<RejoinEffect>) {
        if !self.listed {
            if self.answered.len() >= Self::needed(env) {
                self.listed = true;
                self.asking.clear();
                self.ask_again.clear();
                self.to_read = self.keys.keys().map(|k| (k.clone(), None)).collect();
                tracing::info!(
                    keys = self.to_read.len(),
                    "register keys listed by a majority"
                );
            } else {
                for to in env.nodes.iter().copied().filter(|n| *n != env.me) {
                    let due = self.ask_again.get(&to).is_none_or(|at| env.now >= *at);
                    if !self.answered.contains(&to) && !self.asking.contains(&to) && due {
                        self.ask_again.remove(&to);
                        self.asking.insert(to);
                        out.push(RejoinEffect::List { to });
                    }
                }
                return;
            }
        }
        let due: Vec<String> = self
            .to_read
            .iter()
            .filter(|(_, at)| at.is_none_or(|at| env.now >= at))
            .map(|(k, _)| k.clone())
            .take(READS_IN_FLIGHT.saturating_sub(self.reading.len()))
            .collect();
        for key in due {
            self.to_read.remove(&key);
            self.reading.insert(key.clone());
            out.push(RejoinEffect::Read { key });
        }
        if self.to_read.is_empty() && self.reading.is_empty() {
            self.done = true;
            tracing::info!(
                keys = self.read,
                "rejoin of the register complete: voting again"
            );
            out.push(RejoinEffect::Vote);
        }
    }

    /// The keys still to be read (being read or due): the host reports what
    /// its cache knows of them as [`RejoinInput::Chosen`].
    pub fn waiting_keys(&self) -> Vec<String> {
        self.to_read
            .keys()
            .chain(self.reading.iter())
            .cloned()
            .collect()
    }

    /// When the core wants a `Tick`: the earliest retry.
    pub fn next_wake(&self) -> Option<Instant> {
        if self.done {
            return None;
        }
        let asks = self.ask_again.values().copied();
        let reads = self.to_read.values().filter_map(|at| *at);
        asks.chain(reads).min()
    }

    /// For status.
    pub fn status(&self, env: &Env) -> RejoinStatus {
        if self.done {
            RejoinStatus::Done
        } else if self.listed {
            RejoinStatus::Reading {
                done: self.read,
                total: self.keys.len(),
            }
        } else {
            RejoinStatus::Listing {
                answered: self.answered.len(),
                needed: Self::needed(env),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::actors::bugs::BugSet;
    use crate::actors::metadata::core::{AcceptorState, Versioned};
    use crate::actors::metadata::messages::{AcceptorError, AcceptorRequest, AcceptorResponse};
    use crate::actors::metadata::proposer::{Change, Outcome};
    use crate::actors::metadata::proposer_core::{
        ProposerConfig, ProposerCore, ProposerEffect, ProposerInput,
    };
    use crate::actors::metadata::MetaError;
    use crate::node::CallError;

    fn n(i: u32) -> NodeId {
        NodeId(i)
    }

    fn env(me: u32, now: Instant) -> Env {
        Env {
            now,
            me: n(me),
            nodes: vec![n(1), n(2), n(3)],
            suspected: BTreeSet::new(),
        }
    }

    /// Three acceptors' states, and which of them refuse (rejoining).
    #[derive(Default)]
    struct Cluster {
        acceptors: BTreeMap<NodeId, AcceptorState>,
        rejoining: BTreeSet<NodeId>,
    }

    impl Cluster {
        /// Runs `change` on `key` with a proposer on `at` that reaches only
        /// `reach`; the outcome.
        fn run(
            &mut self,
            at: u32,
            reach: &[u32],
            change: Change,
            seed: u64,
        ) -> Result<Outcome, MetaError> {
            let t0 = Instant::now();
            let mut p = ProposerCore::new(ProposerConfig { bugs: BugSet::NONE }, seed);
            let mut now = t0;
            let mut effects = p.handle(
                &env(at, now),
                ProposerInput::Run {
                    op: 1,
                    key: "k".into(),
                    change,
                    timeout: Duration::from_secs(3),
                },
            );
            loop {
                while !effects.is_empty() {
                    match effects.remove(0) {
                        ProposerEffect::Call { to, call, req, .. } => {
                            let result = self.serve(to, req, reach);
                            let input = ProposerInput::Reply {
                                call,
                                from: to,
                                result,
                            };
                            effects.extend(p.handle(&env(at, now), input));
                        }
                        ProposerEffect::Done { result, .. } => return result,
                        ProposerEffect::Chosen { .. } => {}
                    }
                }
                // Backing off: let time pass.
                now = p.next_wake().unwrap_or(now + Duration::from_millis(100));
                effects = p.handle(&env(at, now), ProposerInput::Tick);
            }
        }

        fn serve(
            &mut self,
            to: NodeId,
            req: AcceptorRequest,
            reach: &[u32],
        ) -> Result<AcceptorResponse, CallError> {
            if !reach.contains(&to.0) {
                return Err(CallError::Timeout(to, Duration::from_secs(1)));
            }
            let refuse = self.rejoining.contains(&to);
            let a = self.acceptors.entry(to).or_default();
            Ok(match req {
                AcceptorRequest::Prepare(_) if refuse => {
                    AcceptorResponse::Prepare(Err(AcceptorError::Rejoining))
                }
                AcceptorRequest::Accept(_) if refuse => {
                    AcceptorResponse::Accept(Err(AcceptorError::Rejoining))
                }
                AcceptorRequest::Prepare(m) => AcceptorResponse::Prepare(Ok(a.prepare(m.ballot).0)),
                AcceptorRequest::Accept(m) => {
                    AcceptorResponse::Accept(Ok(a.accept(m.ballot, m.value).0))
                }
            })
        }

        /// The values held for version 1 by a majority of acceptors.
        fn chosen_at_version_1(&self) -> BTreeSet<Vec<u8>> {
            let mut count: BTreeMap<Vec<u8>, usize> = BTreeMap::new();
            for a in self.acceptors.values() {
                if let Some(v) = a.value.as_ref().filter(|v| v.version == 1) {
                    *count.entry(v.value.clone()).or_default() += 1;
                }
            }
            count
                .into_iter()
                .filter(|(_, c)| *c >= 2)
                .map(|(v, _)| v)
                .collect()
        }

        /// A value chosen by N1 and N3 only, then N3's disk lost.
        fn chosen_then_wiped() -> Cluster {
            let mut c = Cluster::default();
            let cas = Change::Cas {
                expected: 0,
                value: b"v".to_vec(),
                op: 11,
            };
            let r = c.run(1, &[1, 3], cas, 1);
            assert!(
                matches!(r, Ok(Outcome::Value(Some(Versioned { version: 1, .. })))),
                "{r:?}"
            );
            c.acceptors.insert(n(3), AcceptorState::default());
            c
        }
    }

    fn second_write(c: &mut Cluster) -> Result<Outcome, MetaError> {
        let cas = Change::Cas {
            expected: 0,
            value: b"w".to_vec(),
            op: 22,
        };
        c.run(2, &[2, 3], cas, 2)
    }

    #[test]
    fn voting_at_once_after_a_wipe_chooses_a_second_value() {
        // Why the rejoin exists: this must stay impossible.
        // Version 1 was acknowledged as "v"; with N3 wiped, a proposer
        // reaching {N2, N3} has version 1 acknowledged as "w" too.
        let mut c = Cluster::chosen_then_wiped();
        match second_write(&mut c) {
            Ok(Outcome::Value(Some(second))) => {
                assert_eq!((second.version, second.value.as_slice()), (1, &b"w"[..]))
            }
            other => panic!("{other:?}"),
        }
    }

    /// Drives a rejoin of N3 against the cluster; returns its effects' trace.
    fn rejoin(c: &mut Cluster, keys_of: &dyn Fn(NodeId) -> Result<Vec<(String, u64)>, String>) {
        let t0 = Instant::now();
        let mut now = t0;
        let mut core = RejoinCore::new();
        let mut effects = core.handle(&env(3, now), RejoinInput::Tick);
        for _ in 0..100 {
            let mut next = Vec::new();
            for e in effects {
                match e {
                    RejoinEffect::List { to } => next.extend(core.handle(
                        &env(3, now),
                        RejoinInput::Listed {
                            from: to,
                            result: keys_of(to),
                        },
                    )),
                    RejoinEffect::Read { key } => {
                        assert_eq!(
                            core.status(&env(3, now)),
                            RejoinStatus::Reading { done: 0, total: 1 }
                        );
                        let result = c
                            .run(3, &[1, 2, 3], Change::Read, 3)
                            .map(|_| ())
                            .map_err(|e| e.to_string());
                        next.extend(core.handle(&env(3, now), RejoinInput::Read { key, result }));
                    }
                    RejoinEffect::Vote => {
                        c.rejoining.remove(&n(3));
                        assert_eq!(core.status(&env(3, now)), RejoinStatus::Done);
                        return;
                    }
                }
            }
            if next.is_empty() {
                now = core.next_wake().expect("a retry is due");
                next = core.handle(&env(3, now), RejoinInput::Tick);
            }
            effects = next;
        }
        panic!("the rejoin did not finish");
    }

    fn listing(c: &Cluster, to: NodeId) -> Vec<(String, u64)> {
        c.acceptors
            .get(&to)
            .map(|a| vec![("k".to_string(), a.value.as_ref().map_or(0, |v| v.version))])
            .unwrap_or_default()
    }

    #[test]
    fn after_a_rejoin_a_proposer_reaching_the_wiped_node_cannot_choose_a_second_value() {
        let mut c = Cluster::chosen_then_wiped();
        c.rejoining.insert(n(3));
        let snapshot = Cluster {
            acceptors: c.acceptors.clone(),
            rejoining: BTreeSet::new(),
        };
        // N2 fails to answer the first time: asked again after the pause.
        let failed_once = std::cell::Cell::new(false);
        rejoin(&mut c, &|to| {
            if to == n(2) && !failed_once.replace(true) {
                return Err("unreachable".into());
            }
            Ok(listing(&snapshot, to))
        });
        assert!(failed_once.get());
        // The proposer of the first scenario, reaching {N2, N3}, now sees v.
        match second_write(&mut c) {
            Ok(Outcome::Conflict(Some(current))) => assert_eq!(current.value, b"v"),
            other => panic!("expected a conflict with v, got {other:?}"),
        }
        assert_eq!(
            c.chosen_at_version_1(),
            BTreeSet::from([b"v".to_vec()]),
            "one value for version 1"
        );
    }

    #[test]
    fn a_rejoining_acceptor_keeps_the_register_unavailable_without_both_others_and_waits() {
        let mut c = Cluster::chosen_then_wiped();
        c.rejoining.insert(n(3));
        // A proposer reaching only {N2, N3} gets no quorum while N3 rejoins.
        let r = second_write(&mut c);
        assert!(r.is_err(), "{r:?}");
        assert!(c.chosen_at_version_1().len() <= 1);
        // The listing needs two answers from the other two nodes.
        let t0 = Instant::now();
        let mut core = RejoinCore::new();
        let out = core.handle(&env(3, t0), RejoinInput::Tick);
        assert_eq!(
            out,
            vec![
                RejoinEffect::List { to: n(1) },
                RejoinEffect::List { to: n(2) }
            ]
        );
        let out = core.handle(
            &env(3, t0),
            RejoinInput::Listed {
                from: n(1),
                result: Ok(vec![("k".into(), 1)]),
            },
        );
        assert_eq!(out, vec![]);
        assert_eq!(
            core.status(&env(3, t0)),
            RejoinStatus::Listing {
                answered: 1,
                needed: 2
            }
        );
        // A duplicate or unasked answer counts for nothing.
        let out = core.handle(
            &env(3, t0),
            RejoinInput::Listed {
                from: n(1),
                result: Ok(vec![("x".into(), 0)]),
            },
        );
        assert_eq!(out, vec![]);
        let out = core.handle(
            &env(3, t0),
            RejoinInput::Listed {
                from: n(2),
                result: Ok(vec![]),
            },
        );
        assert_eq!(out, vec![RejoinEffect::Read { key: "k".into() }]);
        // A failed read is tried again after the pause, not at once.
        let out = core.handle(
            &env(3, t0),
            RejoinInput::Read {
                key: "k".into(),
                result: Err("timeout".into()),
            },
        );
        assert_eq!(out, vec![]);
        assert_eq!(core.next_wake(), Some(t0 + RETRY_PAUSE));
        let later = t0 + RETRY_PAUSE;
        assert_eq!(
            core.handle(&env(3, later), RejoinInput::Tick),
            vec![RejoinEffect::Read { key: "k".into() }]
        );
        assert_eq!(
            core.handle(
                &env(3, later),
                RejoinInput::Read {
                    key: "k".into(),
                    result: Ok(())
                }
            ),
            vec![RejoinEffect::Vote]
        );
        assert_eq!(core.handle(&env(3, later), RejoinInput::Tick), vec![]);
    }

    #[test]
    fn a_key_chosen_past_the_listing_needs_no_read_and_one_at_or_below_it_does() {
        let t0 = Instant::now();
        let e = env(3, t0);
        let mut core = RejoinCore::new();
        core.handle(&e, RejoinInput::Tick);
        // Before the listing is over nothing counts: the bound is not known.
        let early = RejoinInput::Chosen {
            key: "busy".into(),
            version: 9,
        };
        assert_eq!(core.handle(&e, early), vec![]);
        for (from, versions) in [(1, [5, 2]), (2, [7, 0])] {
            let keys = vec![("busy".into(), versions[0]), ("calm".into(), versions[1])];
            core.handle(
                &e,
                RejoinInput::Listed {
                    from: n(from),
                    result: Ok(keys),
                },
            );
        }
        assert_eq!(
            core.waiting_keys(),
            vec!["busy".to_string(), "calm".to_string()]
        );
        // Version 7 was listed: a value chosen at 7 may predate the listing.
        let at_listed = RejoinInput::Chosen {
            key: "busy".into(),
            version: 7,
        };
        assert_eq!(core.handle(&e, at_listed), vec![]);
        assert_eq!(core.status(&e), RejoinStatus::Reading { done: 0, total: 2 });
        // Version 8 was accepted by a majority of others after it.
        let past = RejoinInput::Chosen {
            key: "busy".into(),
            version: 8,
        };
        assert_eq!(core.handle(&e, past), vec![]);
        assert_eq!(core.waiting_keys(), vec!["calm".to_string()]);
        // The read of "busy" answering late counts nothing twice.
        let late = RejoinInput::Read {
            key: "busy".into(),
            result: Ok(()),
        };
        assert_eq!(core.handle(&e, late), vec![]);
        assert_eq!(core.status(&e), RejoinStatus::Reading { done: 1, total: 2 });
        let calm = RejoinInput::Read {
            key: "calm".into(),
            result: Ok(()),
        };
        assert_eq!(core.handle(&e, calm), vec![RejoinEffect::Vote]);
    }
}
